"""The self-contained HTML evaluation report and model card that a reviewer signs off on.

One file: CSS inline, every figure a base64 PNG drawn with matplotlib (Agg), no external URL. Every number in it
is read from an artifact (ingest summary and quarantine, validation.json, split_summary.json, the model dir,
the eval dir, the explain dir); numbers carry `data-metric="<metrics.json key>"` (or `data-summary`,
`data-split`, `data-subgroup` attributes) so that tests can check them against their source. No PHI: the report
names images by image_id only and never shows file paths or patient identifiers.

Layers: `load_artifacts` (I/O), pure builders that turn artifacts into table rows and figures, `render_html`
(the Jinja template `templates/report.html.j2`), and `run_report`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracture.config import Params
from fracture.errors import InputError

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
PROVENANCE_KEYS = ("candidates", "total", "fracture", "normal", "quarantined", "patients", "studies")
POINTS = ("frozen", "youden", "f1_max", "target_sensitivity", "fixed")
# (metrics.json suffix, label, has a CI) of the headline table, image and study level alike.
HEADLINE = (
    ("auroc", "AUROC", True),
    ("auprc", "AUPRC", True),
    ("frozen.sensitivity", "Sensitivity at the frozen threshold", True),
    ("frozen.specificity", "Specificity at the frozen threshold", True),
    ("frozen.ppv", "PPV", True),
    ("frozen.npv", "NPV", True),
    ("frozen.f1", "F1", True),
    ("trivial_f1", "Trivial F1 (everything called a fracture)", False),
    ("prevalence", "Prevalence", False),
    ("brier", "Brier score", False),
    ("ece", "Expected calibration error", False),
    ("n", "Images", False),
    ("n_pos", "Positive images", False),
    ("n_patients", "Patients", False),
)
STUDY_HEADLINE = (
    ("study.auroc", "AUROC", True),
    ("study.auprc", "AUPRC", True),
    ("study.frozen.sensitivity", "Sensitivity at the frozen threshold", True),
    ("study.frozen.specificity", "Specificity at the frozen threshold", True),
    ("study.frozen.f1", "F1", True),
    ("study.trivial_f1", "Trivial F1", False),
    ("study.prevalence", "Prevalence", False),
    ("study.n", "Studies", False),
    ("study.n_patients", "Patients", False),
)
LIMITATIONS = (
    "MURA labels are per study and mean 'abnormal' (fracture, hardware, degenerative change...), not only "
    "fracture; they are image labels here only by inheritance from the study.",
    "GRAZPEDWRI-DX is paediatric and confounded: casts are on about 41 % of positives vs 3.5 % of negatives, and "
    "follow-up exams dominate the positives. The clinically relevant subset (initial exam, no cast, no metal) is "
    "reported as its own subgroup; read it before the overall figures.",
    "The hospital set is cropped by part and holds offline-augmented copies; copies are grouped with their "
    "original so they never straddle a split.",
    "Grad-CAM maps are coarse (one cell per 32 px of input at the last Swin stage) and show where the model "
    "looks, not why; they are not evidence of a fracture.",
    "Performance is reported for the listed sources, age groups and body parts only; other populations, devices, "
    "projections or modalities are untested.",
)
INTENDED_USE = (
    "Decision support for trained readers of wrist radiographs: a second look that flags images likely to show a "
    "fracture. It is not a diagnosis, must not be used without a clinician reading the image, and is not a "
    "cleared medical device."
)


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
    data_docs_href: str | None = None
    split_summary: dict | None = None
    history: pd.DataFrame | None = None
    thresholds: dict | None = None
    gate: dict | None = None
    subgroups: pd.DataFrame | None = None
    plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    explain_index: list[dict] | None = None
    explain_meta: dict | None = None
    explain_dir: Path | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- formatting
def is_number(value: Any) -> bool:
    """A finite int or float (bools excluded)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and (math.isfinite(float(value)))
    )


def fmt(value: Any, digits: int = 3) -> str:
    """Display text of a value: integers as integers, floats to `digits` decimals, missing as 'n/a'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return str(value)


def png_base64(fig: Any) -> str:
    """Close a matplotlib figure and return it as a base64 PNG string (for a data: URI)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------- table builders
def metric_row(metrics: dict, split: str, suffix: str, label: str, with_ci: bool) -> dict:
    """One metric cell: key, value and (when present) its CI keys, for the template's `metric` macro."""
    key = f"{split}.{suffix}"
    row = {"label": label, "key": key, "value": metrics.get(key), "ci": None}
    if with_ci and f"{key}_ci_low" in metrics and f"{key}_ci_high" in metrics:
        row |= {"ci": (f"{key}_ci_low", f"{key}_ci_high")}
    return row


def headline_rows(metrics: dict, splits: tuple[str, ...] = ("test", "val"), spec: tuple = HEADLINE) -> list[dict]:
    """Rows of the headline table: one per metric, one cell per split (test first: it is the claim)."""
    return [
        {"label": label, "cells": [metric_row(metrics, s, suffix, label, ci) for s in splits]}
        for suffix, label, ci in spec
        if any(f"{s}.{suffix}" in metrics for s in splits)
    ]


def operating_point_rows(metrics: dict, split: str) -> list[dict]:
    """Per operating point (frozen first): threshold and the metrics at it, from metrics.json."""
    rows = []
    for point in POINTS:
        if f"{split}.{point}.threshold" not in metrics:
            continue
        cells = [
            metric_row(metrics, split, f"{point}.{m}", m, True)
            for m in ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "trivial_f1")
        ]
        rows.append({"point": point, "frozen": point == "frozen", "cells": cells})
    return rows


def confusion_cells(metrics: dict, prefix: str) -> dict | None:
    """The 2 x 2 confusion matrix keys at the frozen threshold (`prefix` e.g. "test" or "test.study")."""
    keys = {c: f"{prefix}.frozen.{c}" for c in ("tp", "fp", "tn", "fn")}
    return keys if all(k in metrics for k in keys.values()) else None


def other_metric_keys(metrics: dict) -> list[str]:
    """Every metrics.json key, sorted, for the complete table (CI bounds stay next to their metric)."""
    return sorted(metrics, key=lambda k: (k.split(".")[0] != "test", k))


def subgroup_rows(subgroups: pd.DataFrame, split: str, min_n: int) -> list[dict]:
    """Subgroup table rows of one split; `tiny` marks rows evaluate flagged or with n < min_n."""
    part = subgroups[subgroups["split"].astype(str) == split]
    rows = []
    for rec in part.to_dict("records"):
        reliable = rec.get("reliable")
        reliable = bool(reliable) if reliable is not None and not pd.isna(reliable) else rec["n"] >= min_n
        tiny = not reliable or int(rec["n"]) < min_n
        note = rec.get("note") if isinstance(rec.get("note"), str) else ""
        if int(rec["n"]) < min_n and "small" not in note:
            note = "; ".join(filter(None, [note, f"n < {min_n}"]))
        rows.append({**rec, "tiny": tiny, "note": note, "id": f"{split}/{rec['subgroup']}/{rec['level']}"})
    return rows


def training_rows(history: pd.DataFrame | None, metadata: dict) -> list[dict]:
    """Epochs run, the chosen epoch with its val AUROC and val loss, and the wall time (from history.csv)."""
    if history is None or history.empty:
        return []
    best = metadata.get("best_epoch")
    at_best = history[history["epoch"] == best] if best is not None else history.iloc[0:0]
    rows = [("epochs run", len(history)), ("chosen epoch (best val AUROC)", best)]
    for col in ("val_auroc", "val_loss", "train_loss"):
        if col in history and len(at_best):
            rows.append((f"{col.replace('_', ' ')} at the chosen epoch", float(at_best[col].iloc[0])))
    if "seconds" in history:
        rows.append(("training wall time, s", float(history["seconds"].sum())))
    return [{"label": label, "value": value} for label, value in rows]


def quarantine_counts(quarantine: pd.DataFrame | None) -> dict[str, int]:
    """Rows of quarantine.csv per source (counted only: its paths and messages may carry identifiers)."""
    if quarantine is None or quarantine.empty or "source" not in quarantine:
        return {}
    return {str(k): int(v) for k, v in quarantine["source"].value_counts().sort_index().items()}


def provenance_rows(summary: dict | None) -> list[dict]:
    """Per source (then "all"): ingest's counts, its other counters, and quarantine reason codes."""
    sources = summary.get("sources") if isinstance(summary, dict) else None
    if not isinstance(sources, dict):
        return []
    entries = [*sources.items(), *([("all", summary["totals"])] if isinstance(summary.get("totals"), dict) else [])]
    rows = []
    for name, entry in entries:
        extra = {k: v for k, v in entry.items() if k not in PROVENANCE_KEYS and is_number(v)}
        reasons = entry.get("quarantine_reasons") if isinstance(entry.get("quarantine_reasons"), dict) else {}
        rows.append(
            {"source": name, "counts": {k: entry.get(k) for k in PROVENANCE_KEYS}, "extra": extra, "reasons": reasons}
        )
    return rows


def summary_rows(summary: dict | None) -> list[dict]:
    """Scalar leaves of ingest's summary.json as (key, value) rows, nested keys joined with dots."""
    rows: list[dict] = []

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")
        elif is_number(obj) or isinstance(obj, str | bool) or obj is None:
            rows.append({"key": prefix, "value": obj})

    walk(summary or {}, "")
    return rows


def validation_rows(validation: dict | None) -> list[dict]:
    """One row per expectation: name, severity, passed, and the observed value when it is a number."""
    rows = []
    for r in (validation or {}).get("results", []):
        observed = r.get("observed")
        if isinstance(observed, dict):
            observed = ", ".join(f"{k} {fmt(v)}" for k, v in observed.items() if is_number(v)) or None
        else:  # free text or value lists stay in Data Docs
            observed = fmt(observed) if is_number(observed) else None
        rows.append(
            {
                "name": r.get("name"),
                "severity": r.get("severity"),
                "success": bool(r.get("success")),
                "observed": observed,
            }
        )
    return rows


def lineage_rows(metadata: dict, config: dict, fingerprints: dict[str, str]) -> list[dict]:
    """Lineage of the model and of this report's inputs."""
    keys = (
        "git_commit",
        "manifest_hash",
        "splits_hash",
        "params_hash",
        "split_strategy",
        "mlflow_run_id",
        "mlflow_tracking_uri",
        "mlflow_status",
        "best_epoch",
        "val_auroc",
        "epochs_run",
        "created",
    )
    rows = [{"key": k, "value": metadata.get(k)} for k in keys if k in metadata]
    rows += [{"key": k, "value": config.get(k)} for k in ("backbone", "img_size", "threshold", "threshold_method")]
    rows += [{"key": f"sha256({name})", "value": digest} for name, digest in fingerprints.items()]
    return rows


# ---------------------------------------------------------------------------------------------- figures
def plot_history(history: pd.DataFrame, best_epoch: int | None) -> str:
    """Training curves: train and val loss, val AUROC (right axis), the chosen epoch marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for col, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if col in history:
            ax.plot(history["epoch"], history[col], style, ms=3, label=col.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("loss (weighted BCE)")
    if "val_auroc" in history:
        ax2 = ax.twinx()
        ax2.plot(history["epoch"], history["val_auroc"], "-^", color="tab:green", ms=3, label="val AUROC")
        ax2.set_ylabel("val AUROC")
        ax2.set_ylim(0, 1)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", ls=":", label=f"chosen epoch {best_epoch}")
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return png_base64(fig)


def _by_split(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "split" not in table:
        return [("all", table)]
    order = sorted(table["split"].astype(str).unique(), key=lambda s: (s != "test", s))
    return [(s, table[table["split"].astype(str) == s]) for s in order]


def _finish_unit_axes(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, legend_loc: str) -> str:
    """Shared styling of the [0, 1] x [0, 1] curve plots; returns the figure as base64 PNG."""
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    return png_base64(fig)


def plot_roc(roc: pd.DataFrame, metrics: dict) -> str:
    """ROC per split (legend AUROC from metrics.json) with the frozen operating point marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, part in _by_split(roc):
        (line,) = ax.plot(part["fpr"], part["tpr"], label=f"{split} (AUROC {fmt(metrics.get(f'{split}.auroc'))})")
        sens, spec = metrics.get(f"{split}.frozen.sensitivity"), metrics.get(f"{split}.frozen.specificity")
        if is_number(sens) and is_number(spec):
            ax.plot(1 - spec, sens, "o", color=line.get_color(), ms=7, mfc="white", mew=2)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    return _finish_unit_axes(
        fig, ax, "1 - specificity (FPR)", "sensitivity (TPR)", "ROC (o = frozen threshold)", "lower right"
    )


def plot_pr(pr: pd.DataFrame, metrics: dict) -> str:
    """Precision-recall per split with the prevalence (a random classifier's precision) as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, part in _by_split(pr):
        (line,) = ax.plot(
            part["recall"], part["precision"], label=f"{split} (AUPRC {fmt(metrics.get(f'{split}.auprc'))})"
        )
        prevalence = metrics.get(f"{split}.prevalence")
        if is_number(prevalence):
            ax.axhline(prevalence, ls="--", lw=1, color=line.get_color(), alpha=0.6)
    return _finish_unit_axes(
        fig, ax, "recall (sensitivity)", "precision (PPV)", "Precision-recall (-- = prevalence)", "lower left"
    )


def plot_calibration(cal: pd.DataFrame, metrics: dict) -> str:
    """Reliability diagram per split (marker area ~ images in the bin); legend Brier score from metrics.json."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, part in _by_split(cal):
        sizes = 200 * part["count"] / max(float(cal["count"].max()), 1.0) + 10
        label = f"{split} (Brier {fmt(metrics.get(f'{split}.brier'))})"
        (line,) = ax.plot(part["mean_pred"], part["frac_pos"], "-", label=label)
        ax.scatter(part["mean_pred"], part["frac_pos"], s=sizes, color=line.get_color(), alpha=0.6)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    return _finish_unit_axes(
        fig, ax, "mean predicted probability", "observed fraction positive", "Calibration (reliability)", "upper left"
    )


def curve_figures(art: Artifacts) -> dict[str, str]:
    """The ROC / PR / calibration figures that have data."""
    out = {}
    for name, plot, needed in (
        ("roc", plot_roc, {"fpr", "tpr"}),
        ("pr", plot_pr, {"recall", "precision"}),
        ("calibration", plot_calibration, {"mean_pred", "frac_pos", "count"}),
    ):
        table = art.plots.get(name)
        if table is not None and not table.empty and needed <= set(table.columns):
            out[name] = plot(table, art.metrics)
    return out


# ---------------------------------------------------------------------------------------------- gallery, card
def gallery(index: list[dict] | None, explain_dir: Path | None) -> list[dict]:
    """Grad-CAM figures grouped by source, each with its PNG inlined (entries whose file is missing are skipped)."""
    groups: dict[str, list[dict]] = {}
    for entry in index or []:
        png = Path(explain_dir or ".") / str(entry["file"])
        if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts or not png.is_file():
            log.warning("explain index entry %s: no file %s", entry.get("image_id"), entry.get("file"))
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        groups.setdefault(str(entry["source"]), []).append({**entry, "png": data})
    return [{"source": source, "items": items} for source, items in sorted(groups.items())]


def model_card(art: Artifacts) -> dict:
    """Model card fields: intended use, data, preprocessing, training, limitations, lineage."""
    card = art.metadata.get("model_card") or {}
    data = card.get("Data") if isinstance(card.get("Data"), dict) else {}
    return {
        "intended_use": INTENDED_USE,
        "card_intended_use": card.get("Intended use"),
        "data_rows": data.get("rows") or [],
        "data_summary": data.get("summary"),
        "preprocessing": card.get("Preprocessing"),
        "training": card.get("Training"),
        "input": (art.metadata.get("input") or {}).get("description") or card.get("Input"),
        "output": (art.metadata.get("output") or {}).get("description") or card.get("Output"),
        "limitations": [*LIMITATIONS, *([card["Limitations"]] if card.get("Limitations") else [])],
        "lineage": lineage_rows(art.metadata, art.config, art.fingerprints),
    }


# ---------------------------------------------------------------------------------------------- loading
def _json_or_none(path: Path, art_missing: list[str]) -> Any:
    if not path.is_file():
        art_missing.append(str(path))
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read JSON ({err})") from None


def _csv_or_none(path: Path, art_missing: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        art_missing.append(str(path))
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: cannot read CSV ({err})") from None


def _required_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: missing; the report needs it (run the step that writes it first)")
    return _json_or_none(path, [])


def _fingerprints(paths: dict[str, Path]) -> dict[str, str]:
    from fracture.io import sha256_file

    return {name: sha256_file(p) for name, p in paths.items() if p.is_file()}


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
) -> Artifacts:
    """Read every artifact the report shows; metrics.json and config.json are required, the rest are optional.

    Raises:
        InputError: a required artifact is missing, or any artifact is unreadable.
    """
    missing: list[str] = []
    art = Artifacts(params, _required_json(eval_dir / "metrics.json"), _required_json(model_dir / "config.json"))
    art.metadata = _json_or_none(model_dir / "metadata.json", missing) or {}
    art.summary = _json_or_none(ingest_dir / "summary.json", missing)
    art.quarantine = _csv_or_none(ingest_dir / "quarantine.csv", missing)
    art.validation = _json_or_none(validation_dir / "validation.json", missing)
    docs = validation_dir / "data_docs" / "index.html"
    if docs.is_file():
        art.data_docs_href = Path(os.path.relpath(docs.resolve(), Path(out_path).resolve().parent)).as_posix()
    art.split_summary = _json_or_none(Path(splits_path).with_name("split_summary.json"), missing)
    art.history = _csv_or_none(model_dir / "history.csv", missing)
    art.thresholds = _json_or_none(eval_dir / "thresholds.json", missing)
    art.gate = _json_or_none(eval_dir / "gate.json", missing)
    art.subgroups = _csv_or_none(eval_dir / "subgroups.csv", missing)
    for name in ("roc", "pr", "calibration"):
        # test curve in plots/<name>.csv (what DVC draws), val curve in plots/val/<name>.csv
        parts = [_csv_or_none(eval_dir / "plots" / f"{name}.csv", missing)]
        if (eval_dir / "plots" / "val" / f"{name}.csv").is_file():
            parts.append(pd.read_csv(eval_dir / "plots" / "val" / f"{name}.csv"))
        parts = [t for t in parts if t is not None]
        art.plots[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    art.explain_index = _json_or_none(explain_dir / "index.json", missing)
    art.explain_meta = _json_or_none(explain_dir / "meta.json", missing)
    art.explain_dir = explain_dir
    art.fingerprints = _fingerprints(
        {
            "model.pt": model_dir / "model.pt",
            "metrics.json": eval_dir / "metrics.json",
            "predictions.parquet": eval_dir / "predictions.parquet",
            "splits.parquet": Path(splits_path),
        }
    )
    art.missing = missing
    return art


# ---------------------------------------------------------------------------------------------- rendering
def build_context(art: Artifacts) -> dict:
    """Everything the template shows, computed from the artifacts."""
    import yaml

    m, ep = art.metrics, art.params.evaluate
    best = art.metadata.get("best_epoch")
    subgroups = art.subgroups if art.subgroups is not None and not art.subgroups.empty else None
    return {
        "title": art.params.report.title,
        "backbone": art.config.get("backbone"),
        "metrics": m,
        "missing": art.missing,
        "gate": art.gate,
        "provenance": provenance_rows(art.summary),
        "provenance_keys": PROVENANCE_KEYS,
        "summary_rows": summary_rows(art.summary) if not provenance_rows(art.summary) else [],
        "quarantine": quarantine_counts(art.quarantine) if art.quarantine is not None else None,
        "validation": art.validation,
        "validation_rows": validation_rows(art.validation),
        "data_docs_href": art.data_docs_href,
        "split_summary": art.split_summary,
        "history_png": plot_history(art.history, best) if art.history is not None and len(art.history) else None,
        "training_rows": training_rows(art.history, art.metadata),
        "headline": headline_rows(m),
        "operating_points": operating_point_rows(m, "test"),
        "thresholds": art.thresholds,
        "ci_level": ep.ci_level,
        "n_bootstrap": ep.n_bootstrap,
        "figures": curve_figures(art),
        "confusions": [
            (label, confusion_cells(m, prefix))
            for label, prefix in (
                ("test, image level", "test"),
                ("test, study level", "test.study"),
                ("val, image level", "val"),
                ("val, study level", "val.study"),
            )
            if confusion_cells(m, prefix)
        ],
        "subgroup_tables": [(s, subgroup_rows(subgroups, s, ep.min_subgroup_n)) for s in ("test", "val")]
        if subgroups is not None
        else [],
        "min_subgroup_n": ep.min_subgroup_n,
        "study_headline": headline_rows(m, spec=STUDY_HEADLINE),
        "gallery": gallery(art.explain_index, art.explain_dir),
        "explain_meta": art.explain_meta or {},
        "card": model_card(art),
        "all_metric_keys": other_metric_keys(m),
        "params_yaml": yaml.safe_dump(art.params.to_dict(), sort_keys=False),
    }


def render_html(context: dict) -> str:
    """Render the Jinja template (autoescaped; the only raw HTML are base64 PNG data URIs)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.tests["number"] = is_number
    return env.get_template(TEMPLATE).render(**context)


def run_report(
    params: Params,
    out_path: Path,
    *,
    ingest_dir: Path,
    validation_dir: Path,
    splits_path: Path,
    model_dir: Path,
    eval_dir: Path,
    explain_dir: Path,
) -> Path:
    """Write the self-contained report.html (the resolved params are embedded in it, not written beside it).

    Returns:
        The report's path.
    """
    from fracture.io import atomic_write_text

    out_path = Path(out_path)
    art = load_artifacts(
        params,
        out_path,
        ingest_dir=Path(ingest_dir),
        validation_dir=Path(validation_dir),
        splits_path=Path(splits_path),
        model_dir=Path(model_dir),
        eval_dir=Path(eval_dir),
        explain_dir=Path(explain_dir),
    )
    if art.missing:
        log.warning("report: %d artifact(s) missing, their sections say so: %s", len(art.missing), art.missing)
    atomic_write_text(out_path, render_html(build_context(art)))
    log.info("report: %s (%.0f kB)", out_path, out_path.stat().st_size / 1024)
    return out_path
