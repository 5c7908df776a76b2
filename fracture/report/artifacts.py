"""Loading: every artifact the report reads, into one `Artifacts` record (the report's only file reads)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.base.errors import InputError
from fracture.config import Params
from fracture.contracts.artifacts import (
    BASELINE,
    CACHE_META,
    DECISION_CURVE,
    EXPLAIN_INDEX,
    FLOW,
    GATE,
    HISTORY,
    INGEST_SUMMARY,
    INTERVALS,
    METRICS,
    MODEL_CONFIG,
    MODEL_METADATA,
    PER_SOURCE,
    PREDICTIONS,
    PRIMARY,
    QUARANTINE,
    RELIABILITY,
    SPECTRUM,
    SPLIT_SUMMARY_JSON,
    SPLITS,
    SUBGROUPS,
    THRESHOLDS,
    VALIDATION_HTML,
    VALIDATION_JSON,
    WEIGHTS,
)
from fracture.contracts.verdict import Verdict, VerdictError, read_verdict


@dataclass
class Artifacts:
    """Everything the report reads; `missing` lists artifacts that were not found (shown as a warning)."""

    params: Params
    metrics: dict
    config: dict
    metadata: dict = field(default_factory=dict)
    summary: dict | None = None
    quarantine: pd.DataFrame | None = None
    validation: dict | None = None
    validation_href: str | None = None
    data_docs_href: str | None = None
    split_summary: dict | None = None
    history: pd.DataFrame | None = None
    thresholds: dict | None = None
    gate: Verdict | None = None
    subgroups: pd.DataFrame | None = None
    primary: dict | None = None
    eval_params: dict = field(default_factory=dict)
    intervals: pd.DataFrame | None = None
    per_source: pd.DataFrame | None = None
    spectrum: pd.DataFrame | None = None
    reliability: pd.DataFrame | None = None
    decision: pd.DataFrame | None = None
    flow: dict | None = None
    baseline: pd.DataFrame | None = None
    plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    explain_index: list[dict] | None = None
    explain_meta: dict | None = None
    explain_dir: Path | None = None
    localization: dict | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    plan: dict = field(default_factory=dict)  # fracture.contracts.plan.check_plan: the plan in force and its re-locks


def _json_or_none(path: Path, art_missing: list[str]) -> Any:
    if not path.is_file():
        art_missing.append(str(path))
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read JSON ({err})") from None


def _verdict_or_none(path: Path, art_missing: list[str]) -> Verdict | None:
    """gate.json as a Verdict (None when missing: the report says so)."""
    if not path.is_file():
        art_missing.append(str(path))
        return None
    try:
        return read_verdict(path)
    except VerdictError as err:
        raise InputError(f"{err} (re-run evaluate)") from None


def _csv_or_none(path: Path, art_missing: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        art_missing.append(str(path))
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()  # a table with no rows and no header (nothing to show), not a broken file
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: cannot read CSV ({err})") from None


def _required_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: missing; the report needs it (run the step that writes it first)")
    return _json_or_none(path, [])


def _fingerprints(paths: dict[str, Path]) -> dict[str, str]:
    from fracture.base.io import sha256_file

    return {name: sha256_file(p) for name, p in paths.items() if p.is_file()}


def _yaml_or_empty(path: Path) -> dict:
    """The eval dir's resolved params (what evaluate pre-specified), {} when absent or unreadable."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def relative_href(target: Path, out_path: Path) -> str | None:
    """Link from the report at `out_path` to `target`, relative (the pair moves together); None when absent."""
    if not Path(target).is_file():
        return None
    return Path(os.path.relpath(Path(target).resolve(), Path(out_path).resolve().parent)).as_posix()


def _load_endpoints(art: Artifacts, eval_dir: Path, split_dir: Path, missing: list[str]) -> None:
    """The primary endpoint, CI table, per-source, spectrum, reliability and decision tables, flow and baseline."""
    art.primary = _json_or_none(eval_dir / PRIMARY, missing)
    art.eval_params = _yaml_or_empty(eval_dir / "params.yaml")
    art.intervals = _csv_or_none(eval_dir / INTERVALS, missing)
    art.per_source = _csv_or_none(eval_dir / PER_SOURCE, missing)
    art.spectrum = _csv_or_none(eval_dir / SPECTRUM, missing)
    art.reliability = _csv_or_none(eval_dir / RELIABILITY, missing)
    art.decision = _csv_or_none(eval_dir / DECISION_CURVE, missing)
    art.flow = _json_or_none(split_dir / FLOW, missing)
    art.baseline = _csv_or_none(split_dir / BASELINE, missing)


def load_artifacts(
    params: Params,
    out_path: Path,
    *,
    ingest_dir: Path,
    validation_dir: Path,
    splits_path: Path,
    model_dir: Path,
    eval_dir: Path,
    explain_dir: Path,
    localization_path: Path | None = None,
) -> Artifacts:
    """Read every artifact the report shows; metrics.json and config.json are required, the rest are optional.

    Raises:
        InputError: a required artifact is missing, or any artifact is unreadable.
    """
    missing: list[str] = []
    art = Artifacts(params, _required_json(eval_dir / METRICS), _required_json(model_dir / MODEL_CONFIG))
    art.metadata = _json_or_none(model_dir / MODEL_METADATA, missing) or {}
    art.summary = _json_or_none(ingest_dir / INGEST_SUMMARY, missing)
    art.quarantine = _csv_or_none(ingest_dir / QUARANTINE, missing)
    art.validation = _json_or_none(validation_dir / VALIDATION_JSON, missing)
    art.validation_href = relative_href(validation_dir / VALIDATION_HTML, out_path)
    art.data_docs_href = relative_href(validation_dir / "data_docs" / "index.html", out_path)
    art.split_summary = _json_or_none(Path(splits_path).with_name(SPLIT_SUMMARY_JSON), missing)
    art.history = _csv_or_none(model_dir / HISTORY, missing)
    art.thresholds = _json_or_none(eval_dir / THRESHOLDS, missing)
    art.gate = _verdict_or_none(eval_dir / GATE, missing)
    art.subgroups = _csv_or_none(eval_dir / SUBGROUPS, missing)
    _load_endpoints(art, eval_dir, Path(splits_path).parent, missing)
    for name in ("roc", "pr", "calibration", "decision_curve"):
        # test curve in plots/<name>.csv (what DVC draws), val curve in plots/val/<name>.csv
        parts = [_csv_or_none(eval_dir / "plots" / f"{name}.csv", missing)]
        if (eval_dir / "plots" / "val" / f"{name}.csv").is_file():
            parts.append(pd.read_csv(eval_dir / "plots" / "val" / f"{name}.csv"))
        parts = [t for t in parts if t is not None]
        art.plots[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    art.explain_index = _json_or_none(explain_dir / EXPLAIN_INDEX, missing)
    art.explain_meta = _json_or_none(explain_dir / CACHE_META, missing)
    art.explain_dir = explain_dir
    if localization_path is not None:
        art.localization = _json_or_none(Path(localization_path), missing)
    art.fingerprints = _fingerprints(
        {
            WEIGHTS: model_dir / WEIGHTS,
            METRICS: eval_dir / METRICS,
            PREDICTIONS: eval_dir / PREDICTIONS,
            SPLITS: Path(splits_path),
        }
    )
    art.missing = missing
    return art
