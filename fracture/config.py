"""params.yaml -> typed, frozen configuration.

`params.yaml` is the only home of tunables. It is parsed once into frozen pydantic models that reject unknown
keys and bad values with the key's dotted path in the message. Paths are CLI arguments, secrets come from the
environment; neither lives here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fracture.errors import ConfigError

SOURCES = ("kaggle", "mura", "hospital")
Source = Literal["kaggle", "mura", "hospital"]


class _Section(BaseModel):
    """Base for every section: frozen, unknown keys are errors, and numbers must be written as numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: object) -> object:
        # pydantic's lax mode would read `epochs: true` as 1 and `lr: "3"` as 3.0; a typo like that is refused.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                value = data.get(key)
                if field.annotation in (int, float) and isinstance(value, bool | str):
                    raise ValueError(f"{key}: expected a number, got {value!r}")
        return data


class BaseParams(_Section):
    """Cross-stage values."""

    seed: int = 42
    image_size: int = Field(64, gt=0, le=2048, description="Square side of the preprocess cache and model input, px.")
    num_workers: int = Field(2, ge=0, le=256, description="Worker processes for parallel steps.")


class SynthParams(_Section):
    """Synthetic demo data."""

    n_per_source: int = Field(80, gt=0, le=100_000)
    min_side: int = Field(160, ge=32)
    max_side: int = Field(256, ge=32)
    positive_fraction: float = Field(0.45, gt=0, lt=1)

    @model_validator(mode="after")
    def _sides_ordered(self) -> SynthParams:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        return self


class IngestParams(_Section):
    """Ingest and label harmonisation."""

    kaggle_dir: str | None = None
    mura_dir: str | None = None
    hospital_dir: str | None = None
    mura_study_types: tuple[str, ...] = ("XR_WRIST",)
    max_pixels: int = Field(200_000_000, gt=0, description="Refuse images with more pixels (decompression bombs).")
    max_side: int = Field(40_000, gt=0, description="Refuse images with a side longer than this, px.")
    min_side: int = Field(8, gt=0, description="Refuse images with a side shorter than this, px.")
    hash_contents: bool = True


class ClassBalance(_Section):
    """Allowed per-source fraction of positives."""

    min_positive: float = Field(0.05, ge=0, le=1)
    max_positive: float = Field(0.95, ge=0, le=1)


class ValidateParams(_Section):
    """Great Expectations suite over the manifest."""

    image_sample: int = Field(32, ge=0, description="Images decoded for the blank/constant/decodable checks.")
    min_image_std: float = Field(
        0.01, ge=0, le=0.5, description="A sampled image whose windowed [0, 1] pixel std is below this is blank."
    )
    age_range: tuple[float, float] = (0.0, 110.0)
    max_side: int = Field(40_000, gt=0)
    class_balance: ClassBalance = ClassBalance()
    severity: dict[str, Literal["blocking", "warning"]] = Field(default_factory=dict)


class ExclusionPolicy(_Section):
    """Cohort policy: rows marked `excluded` with a reason, never dropped."""

    metal: bool = True
    diagnosis_uncertain: bool = True
    sex_other: bool = True
    projection_other: bool = True


class SplitParams(_Section):
    """Patient-grouped splits."""

    strategy: Literal["cross_domain", "kfold", "loso"] = "cross_domain"
    fold: int = Field(0, ge=0)
    n_folds: int = Field(5, ge=2)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    train_sources: tuple[Source, ...] = ("mura", "hospital")
    test_sources: tuple[Source, ...] = ("kaggle",)
    exclude: ExclusionPolicy = ExclusionPolicy()

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitParams:
        if self.fold >= self.n_folds:
            raise ValueError(f"fold {self.fold} must be < n_folds {self.n_folds}")
        return self


class PreprocessParams(_Section):
    """Decode -> window -> resize -> uint8 cache."""

    window_percentiles: tuple[float, float] = (0.5, 99.5)

    @field_validator("window_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError("need 0 <= low < high <= 100")
        return v


class ModelParams(_Section):
    """The seed's architecture: timm Swin backbone -> Linear -> ReLU -> Dropout -> Linear(1)."""

    backbone: str = "swin_large_patch4_window12_384"
    backbone_kwargs: dict[str, int | float | str | bool | list[int] | tuple[int, ...]] = Field(default_factory=dict)
    pretrained: bool = False
    weights_path: str | None = None
    head_hidden: int = Field(256, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    mean: float = 0.5
    std: float = Field(0.5, gt=0)


class AugmentParams(_Section):
    """Train-time augmentation for radiographs (none at eval)."""

    enabled: bool = True
    degrees: float = Field(10.0, ge=0, le=45)
    translate: float = Field(0.05, ge=0, le=0.5)
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    hflip: bool = False


class TrainParams(_Section):
    """Training loop."""

    epochs: int = Field(10, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="Max grad norm; 0 disables clipping.")
    accumulation_steps: int = Field(1, gt=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False
    early_stopping_patience: int = Field(5, gt=0)
    num_workers: int = Field(2, ge=0)
    experiment: str = "fracture-swin"
    augment: AugmentParams = AugmentParams()


class GateParams(_Section):
    """Absolute evaluation gate: register only when it passes."""

    min_auroc: float = Field(0.75, ge=0, le=1)
    min_sensitivity: float = Field(0.7, ge=0, le=1)


class EvaluateParams(_Section):
    """Clinical-study style evaluation."""

    threshold_method: Literal["youden", "f1_max", "target_sensitivity", "fixed"] = "youden"
    target_sensitivity: float = Field(0.9, gt=0, le=1)
    n_bootstrap: int = Field(1000, ge=0)
    ci_level: float = Field(0.95, gt=0, lt=1)
    calibration_bins: int = Field(10, ge=2)
    min_subgroup_n: int = Field(30, ge=1)
    age_bands: tuple[int, ...] = Field(
        (6, 12, 20, 40, 65), description="Age band edges in years: <6, 6-11, 12-19, 20-39, 40-64, 65+ (and unknown)."
    )
    batch_size: int = Field(64, gt=0)
    gate: GateParams = GateParams()

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or v[0] <= 0 or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("need strictly increasing positive edges")
        return v


class ExplainParams(_Section):
    """Grad-CAM gallery."""

    n_per_category: int = Field(2, ge=1)
    batch_size: int = Field(8, gt=0)
    alpha: float = Field(0.4, ge=0, le=1)


class ReportParams(_Section):
    """HTML evaluation report."""

    title: str = "Wrist fracture classifier: evaluation report"


class PromoteParams(_Section):
    """Gated promotion challenger -> champion."""

    max_auroc_drop: float = Field(0.01, ge=0, le=1)
    min_sensitivity: float = Field(0.7, ge=0, le=1)


class RegisterParams(_Section):
    """MLflow model registry."""

    model_name: str = "fracture-swin"
    promote: PromoteParams = PromoteParams()


class PredictParams(_Section):
    """Inference."""

    batch_size: int = Field(16, gt=0, description="Images decoded, scored and written per chunk in batch mode.")
    batch_overlays: bool = Field(False, description="Grad-CAM overlay PNGs in batch mode (about 10x slower on CPU).")


class PipelineParams(_Section):
    """Kubeflow Pipelines settings (no secrets here)."""

    image: str = "ghcr.io/fracture-mlops/fracture:latest"
    data_source: Literal["dvc", "volume"] = "volume"
    data_revision: str = "main"
    gpu_type: str = "nvidia.com/gpu"
    gpu_limit: int = Field(1, ge=0)
    cpu_limit: str = "8"
    memory_limit: str = "64G"
    task_cpu_limit: str = "2"
    task_memory_limit: str = "8G"
    shm_size: str = "16Gi"
    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})


def swin_geometry_error(image_size: int, mp: ModelParams) -> str | None:
    """Why `image_size` does not fit a Swin backbone's patch/merge/window arithmetic, or None when it does.

    Swin embeds patches of `patch` px, then halves the token grid at each of the `stages - 1` patch merges; a
    stage's grid must be a multiple of the window, or no larger than it (timm then shrinks the window to the grid).
    """
    name = mp.backbone.split(".")[0]
    kwargs = mp.backbone_kwargs
    if not name.startswith("swin"):
        return None
    if "img_size" in kwargs and kwargs["img_size"] != image_size:
        return (
            f"model.backbone_kwargs.img_size: {kwargs['img_size']} differs from base.image_size {image_size}; drop it"
        )
    patch_m, window_m = re.search(r"patch(\d+)", name), re.search(r"window(\d+)", name)
    patch = int(kwargs.get("patch_size", patch_m.group(1) if patch_m else 4))
    window = kwargs.get("window_size", int(window_m.group(1)) if window_m else 7)
    merges = len(kwargs.get("depths", (2, 2, 18, 2))) - 1
    step = patch * 2**merges
    if image_size % step:
        return f"base.image_size: {image_size} is not divisible by {step} (Swin patch {patch} x {merges} merges)"
    if not isinstance(window, int):
        return None  # per-stage windows: timm checks them
    for stage in range(merges + 1):
        grid = image_size // (patch * 2**stage)
        if grid > window and grid % window:
            return (
                f"base.image_size: {image_size} gives a {grid}x{grid} token grid at Swin stage {stage + 1}, "
                f"not a multiple of window_size {window}"
            )
    return None


class Params(_Section):
    """The whole of params.yaml."""

    base: BaseParams = BaseParams()
    synth: SynthParams = SynthParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    explain: ExplainParams = ExplainParams()
    report: ReportParams = ReportParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    predict: PredictParams = PredictParams()
    pipeline: PipelineParams = PipelineParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    def to_dict(self) -> dict:
        """Plain dict in params.yaml's shape (aliases applied), for logging and resolved copies."""
        return self.model_dump(mode="json", by_alias=True)


def _format_error(path: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        field = re.match(r"Value error, (\w+): (.*)", msg)
        if field:  # a section validator naming one of its own keys
            key, msg = ".".join(filter(None, (key, field[1]))), field[2]
        lines.append(f"{path}: {key or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "<params>") -> Params:
    """Validate a params mapping.

    Args:
        data: the parsed YAML mapping.
        source: name used in error messages (usually the file path).

    Raises:
        ConfigError: naming every offending key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    problem = swin_geometry_error(params.base.image_size, params.model)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds unknown keys or bad values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params file ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return parse_params(data, str(path))


def dump_params(params: Params, path: str | Path) -> None:
    """Write the resolved params beside an output (atomically)."""
    from fracture.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(params.to_dict(), sort_keys=False))
