"""Pure parts of a registration: its inputs, the fingerprint, the evaluation gate and the version tags.

The inputs are read from the model and eval dirs and cross-checked; the tags carry the lineage, the evidence,
the threshold, who/when and the override, if any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracture.errors import GateError, InputError
from fracture.registry.client import current_user, now_iso, tag_text
from fracture.registry.names import AUROC, FINGERPRINT_TAG, HEADLINE_METRICS, LINEAGE_KEYS, SENSITIVITY

log = logging.getLogger(__name__)

EVAL_FILES = ("metrics.json", "gate.json", "thresholds.json")
# Required and uploaded: its test rows are the paired-comparison evidence (registry.compare), and infra validation
# before promotion replays its offline probabilities.
PREDICTIONS_FILE = "predictions.parquet"
_AUROC_TOL = 1e-6


@dataclass(frozen=True)
class RegisterInputs:
    """What registration reads from the model dir and the eval dir."""

    config: dict
    metadata: dict
    metrics: dict
    gate: dict
    thresholds: dict
    report_path: Path | None = None
    eval_files: tuple[Path, ...] = field(default_factory=tuple)
    test_predictions: Any = field(default=None, compare=False)  # compare.extract_test_rows frame, or None


def check_name(name: str) -> str:
    """Registered model names go into registry search filters: no quotes, no surrounding blanks.

    Raises:
        InputError: an empty name, surrounding blanks, a quote, '/' or '@'.
    """
    if not name.strip() or name != name.strip() or any(c in name for c in "'\"`/@"):
        raise InputError(f"registered model name {name!r}: must be non-empty, without quotes, '/' or '@'")
    return name


def fingerprint_model_dir(model_dir: Path) -> str:
    """sha256 over model.pt then config.json: the identity of a trained model, whatever its dir is called."""
    import hashlib

    h = hashlib.sha256()
    for name in ("model.pt", "config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(f"{path}: missing (a model dir needs model.pt, config.json and metadata.json)")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def check_force(force: bool, reason: str | None) -> None:
    """`--force` must say why.

    Raises:
        InputError: force without a non-empty reason.
    """
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT: say why the gate may be overridden (it is recorded)")


def check_gate(gate: dict, gate_path: Path, force: bool, reason: str | None) -> bool:
    """Apply the evaluation gate; returns True when a failed gate is overridden by force.

    Raises:
        GateError: the gate failed and the override was not asked for.
    """
    if gate.get("passed") is True:
        return False
    reasons = "; ".join(map(str, gate.get("reasons") or [])) or "no reason recorded"
    if force:
        log.warning("evaluation gate failed (%s); registering anyway: --force, reason: %s", reasons, reason)
        return True
    raise GateError(f"{gate_path}: evaluation gate failed, not registering: {reasons} (override: --force --reason)")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The headline test metrics with their CI bounds, as present in metrics.json."""
    out = {}
    for key in HEADLINE_METRICS:
        for name in (key, f"{key}_ci_low", f"{key}_ci_high"):
            value = metrics.get(name)
            if isinstance(value, int | float) and value == value:  # skip NaN
                out[name] = float(value)
    return out


def version_tags(inputs: RegisterInputs, fingerprint: str, run_origin: str, reason: str | None) -> dict[str, str]:
    """Every tag a new version gets: lineage, evidence, gate, threshold, who/when, and the override if any."""
    meta, gate = inputs.metadata, inputs.gate
    tags = {key: str(meta.get(key) if meta.get(key) is not None else "unknown") for key in LINEAGE_KEYS}
    tags.update({name: repr(value) for name, value in headline_metrics(inputs.metrics).items()})
    tags.update(
        {
            FINGERPRINT_TAG: fingerprint,
            "threshold": repr(float(inputs.config["threshold"])),
            "threshold_method": str(inputs.thresholds.get("method") or inputs.config.get("threshold_method")),
            "gate.passed": "true" if gate.get("passed") is True else "false",
            "gate.reasons": tag_text(list(gate.get("reasons") or [])),
            "run_origin": run_origin,
            "train_run_id": str(meta.get("mlflow_run_id") or "none"),
            "registered_by": current_user(),
            "registered_at": now_iso(),
        }
    )
    if inputs.test_predictions is not None:
        from fracture.registry.compare import tags_of_test_set

        tags.update(tags_of_test_set(inputs.test_predictions))
    if reason is not None and gate.get("passed") is not True:
        tags.update({"forced": "true", "force_reason": tag_text(reason.strip())})
    return tags


def _read_json(path: Path) -> dict:
    from fracture.io import read_json

    if not path.is_file():
        raise InputError(f"{path}: missing")
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def read_test_predictions(eval_dir: Path, metrics: dict) -> Any:
    """The eval dir's test predictions (compare.extract_test_rows), checked against metrics.json's test AUROC.

    Raises:
        InputError: predictions.parquet is missing or unusable, or its test AUROC is not metrics.json's (the
            predictions and the metrics come from different evaluations).
    """
    from fracture.io import read_parquet
    from fracture.metrics import auroc
    from fracture.registry.compare import extract_test_rows

    path = Path(eval_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing (its test rows are the evidence for paired promotion comparisons)")
    test = extract_test_rows(read_parquet(path), str(path))
    value = auroc(test["label"].to_numpy(), test["prob"].to_numpy())
    if not abs(value - float(metrics[AUROC])) <= _AUROC_TOL:
        raise InputError(
            f"{path}: test AUROC {value:.6f} is not {AUROC} {float(metrics[AUROC]):.6f} in metrics.json; "
            "the predictions and the metrics come from different evaluations"
        )
    return test


def load_register_inputs(model_dir: Path, eval_dir: Path, report_path: Path | None = None) -> RegisterInputs:
    """Read and cross-check the model dir and the eval dir.

    Raises:
        InputError: a file is missing or unreadable, a headline metric is absent, the eval dir's frozen
            threshold is not the model's (the evaluation belongs to another model), or the test predictions do not
            reproduce the test AUROC.
    """
    model_dir, eval_dir = Path(model_dir), Path(eval_dir)
    config, metadata = _read_json(model_dir / "config.json"), _read_json(model_dir / "metadata.json")
    metrics, gate = _read_json(eval_dir / "metrics.json"), _read_json(eval_dir / "gate.json")
    thresholds = _read_json(eval_dir / "thresholds.json")
    for key in (AUROC, SENSITIVITY):
        if not isinstance(metrics.get(key), int | float):
            raise InputError(f"{eval_dir / 'metrics.json'}: no numeric {key!r} (needed for promotion gates)")
    if not isinstance(config.get("threshold"), int | float):
        raise InputError(f"{model_dir / 'config.json'}: no frozen 'threshold'")
    frozen = thresholds.get("frozen")
    if isinstance(frozen, int | float) and abs(float(frozen) - float(config["threshold"])) > 1e-6:
        raise InputError(
            f"{eval_dir / 'thresholds.json'}: frozen threshold {frozen} is not the model's {config['threshold']} "
            f"in {model_dir / 'config.json'}; this evaluation belongs to another model"
        )
    if report_path is None and (eval_dir.parent / "report.html").is_file():
        report_path = eval_dir.parent / "report.html"
    if report_path is not None and not Path(report_path).is_file():
        raise InputError(f"{report_path}: report not found")
    test = read_test_predictions(eval_dir, metrics)  # required: the paired-comparison evidence
    files = tuple(eval_dir / name for name in (*EVAL_FILES, PREDICTIONS_FILE))
    return RegisterInputs(config, metadata, metrics, gate, thresholds, report_path, files, test)
