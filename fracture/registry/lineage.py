"""Pure parts of a registration: its inputs, the fingerprint, the evaluation gate and the version tags.

The inputs are read from the model and eval dirs and cross-checked; the tags carry the lineage, the evidence,
the threshold, who/when and the override, if any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracture.base.errors import GateError, InputError
from fracture.contracts.artifacts import (
    GATE,
    METRICS,
    MODEL_CONFIG,
    MODEL_METADATA,
    PREDICTIONS,
    REPORT_HTML,
    THRESHOLDS,
    VALIDATION_HTML,
)
from fracture.contracts.verdict import Verdict, VerdictError, read_verdict
from fracture.registry.client import current_user, now_iso, tag_text
from fracture.registry.names import AUROC, FINGERPRINT_TAG, HEADLINE_METRICS, LINEAGE_KEYS, SENSITIVITY

log = logging.getLogger(__name__)

EVAL_FILES = (METRICS, GATE, THRESHOLDS)
# Required and uploaded: its test rows are the paired-comparison evidence (registry.compare), and infra validation
# before promotion replays its offline probabilities.
PREDICTIONS_FILE = PREDICTIONS
VALIDATION_PAGE, DATA_DOCS_DIR = VALIDATION_HTML, "data_docs"  # in validate's output dir
_AUROC_TOL = 1e-6


@dataclass(frozen=True)
class RegisterInputs:
    """What registration reads from the model dir and the eval dir."""

    config: dict
    metadata: dict
    metrics: dict
    gate: Verdict
    thresholds: dict
    report_path: Path | None = None
    eval_files: tuple[Path, ...] = field(default_factory=tuple)
    test_predictions: Any = field(default=None, compare=False)  # compare.extract_test_rows frame, or None
    validation_dir: Path | None = None  # validate's output dir (validation.html, data_docs/), shown beside the report


def check_name(name: str) -> str:
    """Registered model names go into registry search filters: no quotes, no surrounding blanks.

    Raises:
        InputError: an empty name, surrounding blanks, a quote, '/' or '@'.
    """
    if not name.strip() or name != name.strip() or any(c in name for c in "'\"`/@"):
        raise InputError(f"registered model name {name!r}: must be non-empty, without quotes, '/' or '@'")
    return name


def fingerprint_model_dir(model_dir: Path) -> str:
    """sha256 over model.pt then config.json (`fracture.tracking.model_digest`, the training run's digest tag).

    Raises:
        InputError: model.pt or config.json is missing.
    """
    from fracture.tracking import DIGEST_FILES, model_digest

    for name in DIGEST_FILES:
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(f"{path}: missing (a model dir needs model.pt, config.json and metadata.json)")
    return model_digest(model_dir)


def check_force(force: bool, reason: str | None) -> None:
    """`--force` must say why.

    Raises:
        InputError: force without a non-empty reason.
    """
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT: say why the gate may be overridden (it is recorded)")


def check_gate(gate: Verdict, gate_path: Path, force: bool, reason: str | None) -> bool:
    """Apply the evaluation verdict; returns True when a failed gate is overridden by force.

    `passed` registers; `undecidable` registers too (as `challenger`, tagged undecidable: promoting it needs
    --force --reason); `failed` refuses unless forced.

    Raises:
        GateError: the gate failed and the override was not asked for.
    """
    if gate.status == "passed":
        return False
    reasons = "; ".join(gate.reasons) or "no reason recorded"
    if gate.status == "undecidable":
        log.warning("evaluation gate undecidable (%s): registering as challenger tagged undecidable", reasons)
        return False
    if force:
        log.warning("evaluation gate failed (%s); registering anyway: --force, reason: %s", reasons, reason)
        return True
    raise GateError(f"{gate_path}: evaluation gate failed, not registering: {reasons} (override: --force --reason)")


def read_gate(path: Path) -> Verdict:
    """gate.json as a Verdict.

    Raises:
        InputError: missing, or not a verdict (naming the file and what is wrong).
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: missing")
    try:
        return read_verdict(path)
    except VerdictError as exc:
        raise InputError(f"{exc} (re-run evaluate)") from None


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The headline test metrics with their CI bounds, as present in metrics.json."""
    out = {}
    for key in HEADLINE_METRICS:
        for name in (key, f"{key}_ci_low", f"{key}_ci_high"):
            value = metrics.get(name)
            if isinstance(value, int | float) and value == value:  # skip NaN
                out[name] = float(value)
    return out


def run_metric_name(key: str) -> str:
    """A headline key of metrics.json as an MLflow metric: `test.frozen.sensitivity` -> `test/sensitivity`.

    Grouped by split; every test metric the run shows is at the frozen threshold.
    """
    split, _, name = key.partition(".")
    return f"{split}/{name.removeprefix('frozen.')}"


def headline_table(metrics: dict) -> dict[str, list]:
    """The headline test metrics with their 95% CI bounds, one row each (the run's table artifact)."""
    rows: dict[str, list] = {"metric": [], "value": [], "ci_low": [], "ci_high": []}
    found = headline_metrics(metrics)
    for key in HEADLINE_METRICS:
        if key in found:
            rows["metric"].append(run_metric_name(key))
            for column, name in (("value", key), ("ci_low", f"{key}_ci_low"), ("ci_high", f"{key}_ci_high")):
                rows[column].append(found.get(name))
    return rows


def version_tags(
    inputs: RegisterInputs,
    fingerprint: str,
    run_origin: str,
    reason: str | None,
    train_run_id: str | None = None,
    commit: str | None = None,
) -> dict[str, str]:
    """Every tag a new version gets: lineage, evidence, gate, threshold, who/when, and the override if any.

    Numbers are rounded to 4 significant digits for reading; the promotion gate reads the run's exact metrics
    (registry.gate.exact_gate_tags). `commit` is the training run's git commit (or the registering checkout's).
    """
    from fracture.tracking import GIT_COMMIT_TAG, sig4

    meta, gate = inputs.metadata, inputs.gate
    tags = {key: str(meta.get(key) if meta.get(key) is not None else "unknown") for key in LINEAGE_KEYS}
    tags.update({name: sig4(value) for name, value in headline_metrics(inputs.metrics).items()})
    tags.update(
        {
            FINGERPRINT_TAG: fingerprint,
            "threshold": sig4(inputs.config["threshold"]),
            "threshold_method": str(inputs.thresholds.get("method") or inputs.config.get("threshold_method")),
            "gate.passed": "true" if gate.passed else "false",
            "gate.status": gate.status,
            "gate.reasons": tag_text(list(gate.reasons)),
            GIT_COMMIT_TAG: commit or "unknown",
            "run_origin": run_origin,
            "train_run_id": str(train_run_id or "none"),
            "registered_by": current_user(),
            "registered_at": now_iso(),
        }
    )
    if inputs.test_predictions is not None:
        from fracture.registry.compare import tags_of_test_set

        tags.update(tags_of_test_set(inputs.test_predictions))
    if gate.status == "undecidable":
        tags["undecidable"] = "true"
    if reason is not None and gate.status == "failed":
        tags.update({"forced": "true", "force_reason": tag_text(reason.strip())})
    return tags


def _read_json(path: Path) -> dict:
    from fracture.base.io import read_json

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
    from fracture.base.io import read_parquet
    from fracture.registry.compare import extract_test_rows
    from fracture.stats.metrics import auroc

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


def load_register_inputs(
    model_dir: Path, eval_dir: Path, report_path: Path | None = None, validation_dir: Path | None = None
) -> RegisterInputs:
    """Read and cross-check the model dir and the eval dir (and find validate's pages when a dir is given).

    Raises:
        InputError: a file is missing or unreadable (validation.html too, when `validation_dir` is given), a
            headline metric is absent, the eval dir's frozen
            threshold is not the model's (the evaluation belongs to another model), or the test predictions do not
            reproduce the test AUROC.
    """
    model_dir, eval_dir = Path(model_dir), Path(eval_dir)
    config, metadata = _read_json(model_dir / MODEL_CONFIG), _read_json(model_dir / MODEL_METADATA)
    metrics, gate = _read_json(eval_dir / METRICS), read_gate(eval_dir / GATE)
    thresholds = _read_json(eval_dir / THRESHOLDS)
    for key in (AUROC, SENSITIVITY):
        if not isinstance(metrics.get(key), int | float):
            raise InputError(f"{eval_dir / METRICS}: no numeric {key!r} (needed for promotion gates)")
    if not isinstance(config.get("threshold"), int | float):
        raise InputError(f"{model_dir / MODEL_CONFIG}: no frozen 'threshold'")
    frozen = thresholds.get("frozen")
    if isinstance(frozen, int | float) and abs(float(frozen) - float(config["threshold"])) > 1e-6:
        raise InputError(
            f"{eval_dir / THRESHOLDS}: frozen threshold {frozen} is not the model's {config['threshold']} "
            f"in {model_dir / MODEL_CONFIG}; this evaluation belongs to another model"
        )
    if report_path is None and (eval_dir.parent / REPORT_HTML).is_file():
        report_path = eval_dir.parent / REPORT_HTML
    if report_path is not None and not Path(report_path).is_file():
        raise InputError(f"{report_path}: report not found")
    if validation_dir is not None and not (Path(validation_dir) / VALIDATION_PAGE).is_file():
        raise InputError(f"{Path(validation_dir) / VALIDATION_PAGE}: not found (run `fracture validate --out DIR`)")
    test = read_test_predictions(eval_dir, metrics)  # required: the paired-comparison evidence
    files = tuple(eval_dir / name for name in (*EVAL_FILES, PREDICTIONS_FILE))
    validation = Path(validation_dir) if validation_dir is not None else None
    return RegisterInputs(config, metadata, metrics, gate, thresholds, report_path, files, test, validation)
