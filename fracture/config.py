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
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from fracture.base.errors import ConfigError
from fracture.base.yamlkeys import DuplicateKeyError, UniqueKeySafeLoader
from fracture.contracts.cluster import (  # the cluster-side sections: Kubeflow, TrainJob, serving, review, deploy
    DeployParams,
    PipelineParams,
    ReviewParams,
    ServeParams,
    _Section,
)

SOURCES = ("kaggle", "mura", "hospital")
Source = Literal["kaggle", "mura", "hospital"]


class PathsParams(_Section):
    """Where the DAG's steps read and write: `dvc.yaml` fills its `${paths.*}` from here (DVC templating).

    They are locations handed to the steps as CLI arguments, not tunables; they live here so that one file
    switches the DAG between the demo and the real datasets.
    """

    synth: dict[str, str] = Field(description="Name -> root of a `synth@<name>` stage's output; {} for real data.")
    kaggle: str = Field(min_length=1, description="GRAZPEDWRI-DX root (holds dataset.csv).")
    kaggle_boxes: str = Field(
        min_length=1, description="GRAZPEDWRI-DX YOLO labels folder (yolov5/labels); missing or empty: no boxes."
    )
    mura: str = Field(min_length=1, description="The MURA-v1.1 folder (holds the four CSVs).")
    hospital: str = Field(min_length=1, description="Hospital root (<part>/{positive,negative}/...).")
    ingest: str = Field(min_length=1)
    validation: str = Field(min_length=1)
    split: str = Field(min_length=1)
    cache: str = Field(min_length=1)
    model: str = Field(min_length=1)
    eval: str = Field(min_length=1)
    explain: str = Field(min_length=1)
    localization: str = Field(min_length=1, description="localization.json: Grad-CAM against boxes (a DVC metric).")
    report: str = Field(min_length=1)
    registration: str = Field(min_length=1)
    cv: str = Field(min_length=1, description="Cross-validation study root (cv/dvc.yaml): folds, models, eval, pool")


class BaseParams(_Section):
    """Cross-stage values."""

    seed: int = Field(ge=0, lt=2**32, description="Seeds Python, NumPy (32-bit seeds) and torch.")
    image_size: int = Field(gt=0, le=2048, description="Square side of the preprocess cache and model input, px.")
    num_workers: int = Field(ge=0, le=256, description="Worker processes for parallel steps.")
    task: Literal["fracture", "physeal"] = Field(
        description="What split, train and evaluate learn: `fracture` (visible fracture, every source) or "
        "`physeal` (growth plate involved, among GRAZPEDWRI-DX fractures whose AO codes parse; "
        "fracture.contracts.tasks)."
    )


class SynthParams(_Section):
    """Synthetic demo data."""

    n_per_source: int = Field(gt=0, le=100_000)
    min_side: int = Field(ge=32)
    max_side: int = Field(ge=32)
    positive_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sides_ordered(self) -> SynthParams:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        return self


class IngestParams(_Section):
    """Ingest and label harmonisation."""

    mura_study_types: tuple[str, ...]
    max_pixels: int = Field(gt=0, description="Refuse images with more pixels (decompression bombs).")
    max_side: int = Field(gt=0, description="Refuse images with a side longer than this, px.")
    min_side: int = Field(gt=0, description="Refuse images with a side shorter than this, px.")
    hash_contents: bool
    augmented_copy_pattern: str | None = Field(
        description="Regex over a hospital file stem marking an offline-augmented copy; group `base` names the "
        "original (`nega_1000_3` -> `nega_1000`). null: only a stem `base_k` beside an existing `base` is a copy.",
    )

    @model_validator(mode="after")
    def _sides_ordered(self) -> IngestParams:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side: {self.min_side} is larger than max_side {self.max_side}; no image could pass")
        return self

    @field_validator("augmented_copy_pattern")
    @classmethod
    def _copy_pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            pattern = re.compile(v)
        except re.error as err:
            raise ValueError(f"not a valid regular expression ({err})") from None
        if "base" not in pattern.groupindex:
            raise ValueError("needs a named group (?P<base>...) holding the original's stem")
        return v


class ClassBalance(_Section):
    """Allowed per-source fraction of positives."""

    min_positive: float = Field(ge=0, le=1)
    max_positive: float = Field(ge=0, le=1)


class ValidateParams(_Section):
    """Great Expectations suite over the manifest."""

    image_sample: int = Field(ge=0, description="Images decoded for the blank/constant/decodable checks.")
    min_image_std: float = Field(
        ge=0, le=0.5, description="A sampled image whose windowed [0, 1] pixel std is below this is blank."
    )
    age_range: tuple[float, float]
    max_side: int = Field(gt=0)
    class_balance: ClassBalance
    severity: dict[str, Literal["blocking", "warning"]]


class ExclusionPolicy(_Section):
    """Cohort policy: rows marked `excluded` with a reason, never dropped."""

    metal: bool
    diagnosis_uncertain: bool
    sex_other: bool
    projection_other: bool


class SplitParams(_Section):
    """Patient-grouped splits."""

    strategy: Literal["cross_domain", "kfold", "loso"]
    fold: int = Field(ge=0)
    n_folds: int = Field(ge=2)
    val_fraction: float = Field(gt=0, lt=1)
    train_sources: tuple[Source, ...]
    test_sources: tuple[Source, ...]
    mura_valid: Literal["pool", "val", "test"] = Field(
        description="MURA's own valid set: `pool` splits it like any other rows; `val` / `test` puts it (with the "
        "rest of its patients) in that split, so results on MURA's official validation set can be reported.",
    )
    exclude: ExclusionPolicy

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitParams:
        if self.fold >= self.n_folds:
            raise ValueError(f"fold {self.fold} must be < n_folds {self.n_folds}")
        return self


class CvParams(_Section):
    """The cross-validation study (cv/dvc.yaml, `make cv`): one train + evaluate per fold, pooled out of fold."""

    strategy: Literal["kfold", "loso"]
    n_folds: int = Field(ge=2, description="kfold: folds over every source; loso: at least the sources present.")
    folds: tuple[int, ...] = Field(
        min_length=1,
        description="Folds to run (DVC foreach / KFP ParallelFor): kfold fold indices (all of them, for every "
        "development image to be scored once), loso indices into the sorted sources present.",
    )
    epochs: int | None = Field(gt=0, description="train.epochs of the fold models (null: train.epochs).")

    @model_validator(mode="after")
    def _folds_valid(self) -> CvParams:
        if len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
            raise ValueError(f"folds: {list(self.folds)} must be distinct indices >= 0")
        if max(self.folds) >= self.n_folds:  # loso too: each fold's params file must load (split.fold < n_folds)
            raise ValueError(f"folds: {list(self.folds)} must be < n_folds {self.n_folds}")
        return self


class PreprocessParams(_Section):
    """Decode -> window -> resize -> uint8 cache."""

    window_percentiles: tuple[float, float]

    @field_validator("window_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError("need 0 <= low < high <= 100")
        return v


class ModelParams(_Section):
    """The seed's architecture: timm Swin backbone -> Linear -> ReLU -> Dropout -> Linear(1)."""

    backbone: str
    backbone_kwargs: dict[str, int | float | str | bool | list[int] | tuple[int, ...]]
    pretrained: bool
    weights_path: str | None
    head_hidden: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    mean: float
    std: float = Field(gt=0)
    init_from: str | None = Field(
        description="A model dir whose backbone starts training (its head is dropped, a new one is built); null: "
        "from `pretrained` / `weights_path`."
    )


class AugmentParams(_Section):
    """Train-time augmentation for radiographs (none at eval)."""

    enabled: bool
    degrees: float = Field(ge=0, le=45)
    translate: float = Field(ge=0, le=0.5)
    scale: tuple[float, float]
    brightness: float = Field(ge=0, le=1)
    contrast: float = Field(ge=0, le=1)
    hflip: bool


class TrainParams(_Section):
    """Training loop."""

    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    grad_clip: float = Field(ge=0, description="Max grad norm; 0 disables clipping.")
    effective_batch_size: int = Field(
        gt=0,
        description="Images per optimizer step over all processes; gradient accumulation makes up the rest "
        "(effective_batch_size / (batch_size x processes) micro-batches per step).",
    )
    amp: Literal["auto", "bf16", "fp16", "off"]
    compile: bool
    early_stopping_patience: int = Field(gt=0)
    num_workers: int = Field(ge=0)
    freeze_backbone_epochs: int = Field(ge=0, description="First epochs that train the head alone (backbone frozen).")
    experiment: str
    devices: Literal["auto"] | int = Field(
        description="Training processes: `auto` = one per visible GPU (torchrun when more than one), or a count."
    )
    augment: AugmentParams

    @model_validator(mode="after")
    def _whole_accumulation(self) -> TrainParams:
        if self.effective_batch_size % self.batch_size:
            raise ValueError(
                f"train.effective_batch_size: {self.effective_batch_size} is not a multiple of "
                f"train.batch_size {self.batch_size} (images per step = batch_size x processes x accumulation)"
            )
        return self

    @field_validator("devices")
    @classmethod
    def _positive_devices(cls, v: str | int) -> str | int:
        if isinstance(v, int) and v < 1:
            raise ValueError("need `auto` or a count >= 1")
        return v


class GateParams(_Section):
    """Absolute evaluation gate: register only when it passes."""

    min_auroc: float = Field(ge=0, le=1, description="Minimum AUROC on the primary population.")
    min_sensitivity: float = Field(
        ge=0, le=1, description="Minimum co-primary sensitivity at the locked threshold on the primary population."
    )
    min_specificity: float = Field(
        ge=0, le=1, description="Minimum co-primary specificity at the locked threshold on the primary population."
    )
    precision: float = Field(
        gt=0,
        lt=0.5,
        description="CI half-width the gate needs on sensitivity and specificity: it sets the positive and negative "
        "patients a decision needs (fracture.evaluate.decision); fewer make the gate undecidable.",
    )
    min_primary: float | None = Field(
        ge=0, le=1, description="Minimum of the primary endpoint (evaluate.primary); null: not gated on it."
    )
    primary_bound: Literal["point", "ci_low"] = Field(
        description="What every gate check reads: the point estimate or the one-sided lower CI bound (ci_low)."
    )


class PrimaryParams(_Section):
    """The pre-specified primary endpoint, fixed before anything is run."""

    population: Literal["auto", "all", "clinically_relevant"] = Field(
        description="auto: GRAZPEDWRI-DX's clinically relevant subset (initial exam, no cast, no metal) when the "
        "test set is Kaggle only, else all test images.",
    )
    metric: Literal["auroc", "auprc", "sensitivity", "specificity"]


class EvaluateParams(_Section):
    """Clinical-study style evaluation."""

    threshold_method: Literal["youden", "f1_max", "target_sensitivity", "target_sensitivity_conservative", "fixed"]
    target_sensitivity: float = Field(gt=0, le=1)
    n_bootstrap: int = Field(ge=0)
    ci_level: float = Field(gt=0, lt=1)
    calibration_bins: int = Field(ge=2)
    min_subgroup_n: int = Field(ge=1)
    min_subgroup_patients: int = Field(
        ge=1, description="A subgroup is reliable only with this many positive AND negative patients (clusters)."
    )
    age_bands: tuple[int, ...] = Field(
        description="Age band edges in years: <6, 6-11, 12-19, 20-39, 40-64, 65+ (and unknown)."
    )
    reference_threshold: float = Field(
        gt=0, lt=1, description="The fixed operating point reported beside the val-tuned ones (`fixed`)."
    )
    batch_size: int = Field(gt=0)
    primary: PrimaryParams
    gate: GateParams

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or v[0] <= 0 or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("need strictly increasing positive edges")
        return v


class ExplainParams(_Section):
    """Grad-CAM gallery."""

    n_per_category: int = Field(ge=1)
    batch_size: int = Field(gt=0)
    alpha: float = Field(ge=0, le=1)
    localization_sample: int = Field(ge=1, description="Boxed test cases scored against their boxes (seeded).")
    pointing_tolerance_px: float = Field(ge=0, description="Pointing game tolerance around a fracture box, input px.")


class ReportParams(_Section):
    """HTML evaluation report."""

    title: str


class PromoteParams(_Section):
    """Gated promotion challenger -> champion."""

    max_auroc_drop: float = Field(ge=0, le=1)
    min_sensitivity: float = Field(ge=0, le=1)
    require_review: bool = Field(description="Refuse to promote a version that no clinical reviewer signed off.")
    max_sensitivity_drop: float = Field(
        ge=0, le=1, description="Non-inferiority margin: paired sensitivity difference's CI low >= -this."
    )
    max_specificity_drop: float = Field(
        ge=0, le=1, description="Non-inferiority margin: paired specificity difference's CI low >= -this."
    )
    max_test_reuse: int = Field(
        ge=1,
        description="Promotion decisions one test set (its fingerprint) may support; past it promotion refuses "
        "until a new sealed test set is registered (or --force --reason).",
    )


class InfraValidationParams(_Section):
    """Infra validation before promotion: the candidate served by `mlflow models serve`, checked against evaluation."""

    n_images: int = Field(gt=0, le=1000, description="Evaluation images in the request set (spread over formats).")
    tolerance: float = Field(gt=0, le=0.5, description="Max |served - offline| probability.")
    max_p95_latency_s: float = Field(gt=0, description="p95 latency limit of one single-image request, s.")
    latency_requests: int = Field(ge=5, le=10_000, description="Single-image requests timed for the p95.")
    startup_timeout_s: float = Field(gt=0, description="Wait this long for the server's /ping.")
    request_timeout_s: float = Field(gt=0, description="Per-request timeout, s.")


class RegisterParams(_Section):
    """MLflow model registry."""

    model_name: str
    promote: PromoteParams
    infra_validation: InfraValidationParams


class PredictParams(_Section):
    """Inference."""

    batch_size: int = Field(gt=0, description="Images decoded, scored and written per chunk in batch mode.")
    batch_overlays: bool = Field(description="Grad-CAM overlay PNGs in batch mode (about 10x slower on CPU).")


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

    paths: PathsParams
    base: BaseParams
    synth: SynthParams
    ingest: IngestParams
    validate_: ValidateParams = Field(alias="validate")
    split: SplitParams
    cv: CvParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    explain: ExplainParams
    report: ReportParams
    register_: RegisterParams = Field(alias="register")
    predict: PredictParams
    pipeline: PipelineParams
    serve: ServeParams
    deploy: DeployParams
    review: ReviewParams

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=(), allow_inf_nan=False
    )

    def to_dict(self) -> dict:
        """Plain dict in params.yaml's shape (aliases applied), for logging and resolved copies."""
        return self.model_dump(mode="json", by_alias=True)

    @property
    def registered_model_name(self) -> str:
        """The registry name of this task's model: `register.model_name`, suffixed by a task other than fracture."""
        name, task = self.register_.model_name, self.base.task
        return name if task == "fracture" else f"{name}-{task}"


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
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (byte 0x{err.object[err.start]:02x} at {err.start})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeySafeLoader) or {}  # a SafeLoader subclass
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return parse_params(data, str(path))


def dump_params(params: Params, path: str | Path) -> None:
    """Write the resolved params beside an output (atomically)."""
    from fracture.base.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(params.to_dict(), sort_keys=False))
