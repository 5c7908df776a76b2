"""The seed's classifier (timm Swin backbone -> Linear -> ReLU -> Dropout -> Linear(1)), and the model dir.

A model dir holds `model.pt` (a plain state_dict), `config.json` (everything needed to rebuild the module, plus
the frozen operating point) and `metadata.json` (the input/output contract and the model card). Models are built
only through `timm.create_model`; the input size comes from params (`base.image_size`), never from timm.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from fracture.base.errors import ConfigError, InputError
from fracture.base.io import atomic_write_text, read_json, save_torch, write_json
from fracture.config import ModelParams, Params, dump_params
from fracture.contracts.artifacts import HISTORY, MODEL_CONFIG, MODEL_METADATA, WEIGHTS
from fracture.contracts.tasks import CLASSES
from fracture.model.data import normalise

log = logging.getLogger(__name__)

IN_CHANS = 1
# timm families whose patch grid is fixed at construction: they take img_size.
FIXED_SIZE_PREFIXES = ("swin", "vit", "deit", "beit", "eva")
WEIGHTS_FILE, CONFIG_FILE, METADATA_FILE = WEIGHTS, MODEL_CONFIG, MODEL_METADATA


class SwinFractureClassifier(nn.Module):
    """Backbone pooled features -> Linear(num_features, hidden) -> ReLU -> Dropout -> Linear(hidden, 1)."""

    def __init__(self, backbone: nn.Module, head_hidden: int, dropout: float, image_size: int) -> None:
        """Wrap a timm backbone built with `num_classes=0` (so it returns pooled features)."""
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.head = nn.Sequential(
            nn.Linear(backbone.num_features, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map `[B, 1, S, S]` normalised images to `[B]` logits."""
        return self.head(self.backbone(x)).squeeze(-1)


def backbone_kwargs(mp: ModelParams, image_size: int) -> dict[str, Any]:
    """Keyword arguments for timm.create_model: params' backbone_kwargs, 1 channel, no classifier, img_size."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in mp.backbone_kwargs.items()}
    kwargs.update(in_chans=IN_CHANS, num_classes=0)
    if mp.backbone.split(".")[0].startswith(FIXED_SIZE_PREFIXES):
        kwargs["img_size"] = image_size
    return kwargs


def build_model(mp: ModelParams, image_size: int, pretrained: bool | None = None) -> nn.Module:
    """Build the classifier; load pretrained backbone weights from `mp.weights_path` or timm's hub.

    Args:
        mp: the model section of params.
        image_size: square input side, px (params.base.image_size).
        pretrained: overrides `mp.pretrained` when given.

    Raises:
        InputError: unknown backbone, unusable weights file, or pretrained weights that cannot be downloaded.
    """
    pretrained = mp.pretrained if pretrained is None else pretrained
    if not timm.is_model(mp.backbone):
        raise InputError(f"model.backbone: {mp.backbone!r} is not a timm model name")
    kwargs = backbone_kwargs(mp, image_size)
    if pretrained and mp.weights_path:
        backbone = _timm_create(mp.backbone, pretrained=False, **kwargs)
        load_backbone_weights(backbone, Path(mp.weights_path))
    else:
        backbone = _create_from_hub(mp.backbone, kwargs) if pretrained else _timm_create(mp.backbone, **kwargs)
    return SwinFractureClassifier(backbone, mp.head_hidden, mp.dropout, image_size)


def _timm_create(name: str, **kwargs: Any) -> nn.Module:
    """timm.create_model; a backbone_kwargs entry timm cannot use is a ConfigError naming the key, not a traceback.

    Raises:
        ConfigError: an unknown keyword or a bad value (wrong type, list of the wrong length) in model.backbone_kwargs.
    """
    try:
        return timm.create_model(name, **kwargs)
    except (TypeError, ValueError, IndexError, KeyError, AssertionError) as err:
        given = {k: v for k, v in kwargs.items() if k not in ("pretrained", "in_chans", "num_classes", "img_size")}
        raise ConfigError(
            f"model.backbone_kwargs: timm cannot build {name!r} with {given} ({type(err).__name__}: {err})"
        ) from None


def _create_from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Use timm's own pretrained path (downloads; adapts the 3-channel stem to 1 channel by summing)."""
    try:
        return _timm_create(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as err:  # no network, no cache, or no weights published for this name
        raise InputError(
            f"model.pretrained: cannot get pretrained weights for {name!r} from the hub ({err}). "
            "Set model.weights_path to a local weights file (.pth/.bin/.safetensors), give this machine network "
            "access, or set model.pretrained: false"
        ) from None


def read_state_dict(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a weights file (torch or safetensors) as a flat state_dict, unwrapping common containers.

    Raises:
        InputError: missing, unreadable, or not a mapping of parameter names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device=str(map_location))
        else:
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch/pickle/zip/safetensors raise many unrelated types for a corrupt file
        raise InputError(f"{path}: not a readable weights file ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return {_strip_wrappers(k): v for k, v in obj.items()}


def _strip_wrappers(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        key = key.removeprefix(prefix)
    return key


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a local backbone checkpoint: timm's filter, 3->1 channel stem (summed), classifier dropped.

    Accepts a headless timm/official checkpoint or a full model.pt of ours (its `backbone.` keys are used).

    Raises:
        InputError: the file is unusable or its keys/shapes do not match the backbone.
    """
    sd = read_state_dict(path)
    if any(k.startswith("backbone.") for k in sd):
        sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    filter_fn = getattr(sys.modules[type(backbone).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, backbone)
        except (KeyError, RuntimeError, ValueError, AttributeError) as err:
            raise InputError(f"{path}: does not fit {type(backbone).__name__} ({err})") from None
    stem = f"{cfg.get('first_conv')}.weight"
    if stem in sd and sd[stem].ndim == 4 and sd[stem].shape[1] != IN_CHANS:
        sd[stem] = adapt_input_conv(IN_CHANS, sd[stem])  # 3 -> 1 channel: sum over RGB
    classifier = cfg.get("classifier") or "head.fc"
    sd = {k: v for k, v in sd.items() if not k.startswith(f"{classifier}.")}
    _load_checked(backbone, sd, path, strict=False)
    log.info("loaded backbone weights from %s", path)


def _load_checked(module: nn.Module, sd: dict[str, torch.Tensor], path: Path, strict: bool) -> None:
    """load_state_dict with an InputError listing missing/unexpected keys and shape mismatches."""
    own = module.state_dict()
    shapes = [
        f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in sd.items() if k in own and v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if shapes or missing or (strict and unexpected):
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:4])}"
            for label, items in (("shape mismatch", shapes), ("missing keys", missing), ("unexpected keys", unexpected))
            if items
        ]
        raise InputError(f"{path}: keys/shapes do not match the configured model; " + "; ".join(parts))
    if unexpected:
        log.warning("%s: ignoring %d unexpected keys (%s)", path, len(unexpected), ", ".join(unexpected[:4]))
    module.load_state_dict(sd, strict=strict)


def model_config(
    mp: ModelParams, image_size: int, thresholds: dict[str, float], method: str, task: str = "fracture"
) -> dict[str, Any]:
    """config.json: what rebuilds the module, its normalisation, the operating point frozen on val, and its task.

    The task comes with its label space (one probability per class); a config without them is the `fracture` task's.
    """
    return {
        "task": task,
        "classes": list(CLASSES[task]),
        "backbone": mp.backbone,
        "backbone_kwargs": dict(mp.backbone_kwargs),
        "img_size": image_size,
        "in_chans": IN_CHANS,
        "head_hidden": mp.head_hidden,
        "dropout": mp.dropout,
        "mean": mp.mean,
        "std": mp.std,
        "threshold": float(thresholds[method]),
        "threshold_method": method,
        "thresholds": {k: float(v) for k, v in thresholds.items()},
    }


@dataclass(frozen=True)
class InputContract:
    """How an image becomes this model's input: recorded in config.json (`input`) at training time.

    Every reader (predict, the MLflow pyfunc, explain, evaluate) takes it from the model dir, never from the current
    params, so editing params.yaml cannot change a trained model's predictions.
    """

    image_size: int  # px, square; the letterboxed grayscale the network sees
    channels: int
    window_percentiles: tuple[float, float]  # raw values at these percentiles map to 0 and 1 (no VOI LUT)
    max_pixels: int  # decode limits, checked from the header before decoding
    max_side: int
    min_side: int
    mean: float  # the network sees (uint8 / 255 - mean) / std
    std: float
    batch_size: int  # images per forward pass when serving

    def decode(self, path: Path) -> np.ndarray:
        """One image file decoded exactly as this contract says: uint8 `[S, S]`.

        Raises:
            InputError: the file cannot be read or breaks a decode limit.
        """
        from fracture.images.decode import prepare_image

        return prepare_image(
            Path(path),
            self.image_size,
            self.window_percentiles,
            min_side=self.min_side,
            max_pixels=self.max_pixels,
            max_side=self.max_side,
        )

    def to_dict(self) -> dict[str, Any]:
        """config.json's `input` block."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "dtype": "uint8",
            "decoder": "fracture.images.decode.prepare_image: 8/16-bit PNG, JPEG, TIFF, DICOM (modality + VOI LUT, "
            "MONOCHROME1 inverted), RGB to luma, percentile window, letterbox resize",
            "window_percentiles": list(self.window_percentiles),
            "decode_limits": {"max_pixels": self.max_pixels, "max_side": self.max_side, "min_side": self.min_side},
            "normalisation": {"scale": 1 / 255, "mean": self.mean, "std": self.std},
            "batch_size": self.batch_size,
        }


def input_contract(params: Params, image_size: int) -> InputContract:
    """The contract of a model trained with `params` at `image_size` px."""
    ip, mp = params.ingest, params.model
    lo, hi = params.preprocess.window_percentiles
    return InputContract(
        image_size, IN_CHANS, (float(lo), float(hi)), ip.max_pixels, ip.max_side, ip.min_side, mp.mean, mp.std,
        params.predict.batch_size,
    )  # fmt: skip


_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 1}
# The input contract block of config.json (InputContract.to_dict): its one schema, checked by read_contract.
CONTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image_size", "channels", "window_percentiles", "decode_limits", "normalisation", "batch_size"],
    "properties": {
        "image_size": _COUNT,
        "channels": _COUNT,
        "dtype": {"const": "uint8"},
        "decoder": {"type": "string"},
        "window_percentiles": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
        "decode_limits": {
            "type": "object",
            "required": ["max_pixels", "max_side", "min_side"],
            "properties": {"max_pixels": _COUNT, "max_side": _COUNT, "min_side": _COUNT},
        },
        "normalisation": {
            "type": "object",
            "required": ["scale", "mean", "std"],
            "properties": {"scale": _NUMBER, "mean": _NUMBER, "std": {"type": "number", "exclusiveMinimum": 0}},
        },
        "batch_size": _COUNT,
    },
}


def read_contract(config: dict[str, Any], source: Path) -> InputContract:
    """The input contract recorded in a model's config.json, validated against CONTRACT_SCHEMA.

    Raises:
        InputError: naming the missing or malformed `input.*` key.
    """
    from jsonschema import Draft202012Validator

    block = config.get("input")
    if not isinstance(block, dict):
        raise InputError(f"{source}: no 'input' contract (a model dir from before it was recorded: re-run train)")
    errors = sorted(Draft202012Validator(CONTRACT_SCHEMA).iter_errors(block), key=lambda e: list(e.absolute_path))
    if errors:
        where = ".".join(["input", *map(str, errors[0].absolute_path)])
        raise InputError(f"{source}: input contract is malformed at {where}: {errors[0].message}")
    try:
        limits, norm = block["decode_limits"], block["normalisation"]
        lo, hi = block["window_percentiles"]
        return InputContract(
            int(block["image_size"]), int(block["channels"]), (float(lo), float(hi)), int(limits["max_pixels"]),
            int(limits["max_side"]), int(limits["min_side"]), float(norm["mean"]), float(norm["std"]),
            int(block["batch_size"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{source}: input contract is incomplete or malformed ({type(err).__name__}: {err})") from None


def check_cache_contract(
    contract: InputContract, cache_meta: dict[str, Any], cache_dir: Path, against: str = "the model's input contract"
) -> None:
    """A preprocess cache must have been made the way the model's inputs were (size and window).

    Args:
        contract: the input contract the pixels must follow.
        cache_meta: the cache's meta.json.
        cache_dir: for messages.
        against: what the contract is, for messages (train: the params it records in config.json).

    Raises:
        InputError: naming the cache and the setting that differs.
    """
    size, window = cache_meta.get("image_size"), cache_meta.get("window_percentiles")
    if size != contract.image_size:
        raise InputError(f"{cache_dir}: cache images are {size} px but {against} takes {contract.image_size} px")
    if window is None or tuple(float(w) for w in window) != contract.window_percentiles:
        raise InputError(
            f"{cache_dir}: cache window_percentiles {window} differ from {against} "
            f"{list(contract.window_percentiles)}; re-run preprocess with the same settings"
        )


def model_params_from_config(config: dict[str, Any], source: Path) -> ModelParams:
    """Rebuild ModelParams from config.json (pretrained off: the weights come from model.pt)."""
    keys = ("backbone", "backbone_kwargs", "head_hidden", "dropout", "mean", "std")
    missing = [k for k in (*keys, "img_size") if k not in config]
    if missing:
        raise InputError(f"{source}: missing keys {', '.join(missing)}")
    try:
        return ModelParams(**{k: config[k] for k in keys}, pretrained=False, weights_path=None, init_from=None)
    except ValueError as err:
        raise InputError(f"{source}: invalid model config ({err})") from None


def save_model_dir(
    model_dir: Path, model: nn.Module, config: dict, metadata: dict, history: pd.DataFrame, params: Params
) -> None:
    """Write model.pt, config.json, metadata.json, history.csv and params.yaml, each atomically.

    config.json gets the input contract of `params` (`input`) unless `config` already holds one.
    """
    model_dir = Path(model_dir)
    config = {**config, "input": config.get("input") or input_contract(params, int(config["img_size"])).to_dict()}
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(state, model_dir / WEIGHTS_FILE)  # same bytes on every run (a file object, not the temp path)
    write_json(model_dir / CONFIG_FILE, config)
    write_json(model_dir / METADATA_FILE, metadata)
    atomic_write_text(model_dir / HISTORY, history.to_csv(index=False))
    dump_params(params, model_dir / "params.yaml")


def load_model_dir(model_dir: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the classifier from a model dir, in eval mode.

    Returns:
        (model, config): config is config.json (normalisation, img_size, threshold...).

    Raises:
        InputError: a file is missing or corrupt, or model.pt does not match config.json.
    """
    model_dir = Path(model_dir)
    config = read_json(model_dir / CONFIG_FILE)
    mp = model_params_from_config(config, model_dir / CONFIG_FILE)
    model = build_model(mp, int(config["img_size"]), pretrained=False)
    sd = read_state_dict(model_dir / WEIGHTS_FILE, map_location="cpu")
    _load_checked(model, sd, model_dir / WEIGHTS_FILE, strict=True)
    return model.to(map_location).eval(), config


def _inference_autocast(device: torch.device) -> Any:
    """bf16 autocast on a CUDA device that supports it (as training runs there); full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    mean: float,
    std: float,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Fracture probabilities for uint8 images `[N, S, S]` (e.g. rows of the cache), in batches (bf16 on CUDA).

    Returns:
        `[N]` float64 probabilities (sigmoid of the logits).
    """
    expected = getattr(model, "image_size", None)
    if images.dtype != np.uint8 or images.ndim != 3 or (expected and images.shape[1:] != (expected, expected)):
        size = f"{expected}x{expected}" if expected else "SxS"
        raise InputError(f"images must be uint8 [N, {size}] (the preprocess output), got {images.dtype} {images.shape}")
    device = torch.device(device)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode(), _inference_autocast(device):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = normalise(batch.to(device).float()[:, None] / 255.0, mean, std)  # uint8 sent; [B, 1, S, S]
            out.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
