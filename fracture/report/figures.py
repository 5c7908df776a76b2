"""Figures as base64 PNGs: training curves, ROC / PR / calibration / decision curve per split, Grad-CAM gallery."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.report.artifacts import Artifacts
from fracture.report.tables import fmt, is_number

log = logging.getLogger(__name__)


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
    """The ROC / PR / calibration / decision-curve figures that have data."""
    out = {}
    for name, plot, needed in (
        ("roc", plot_roc, {"fpr", "tpr"}),
        ("pr", plot_pr, {"recall", "precision"}),
        ("calibration", plot_calibration, {"mean_pred", "frac_pos", "count"}),
        ("decision_curve", lambda t, _m: plot_decision_curve(t), {"threshold", "net_benefit", "treat_all"}),
    ):
        table = art.plots.get(name)
        if table is not None and not table.empty and needed <= set(table.columns):
            out[name] = plot(table, art.metrics)
    return out


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


def plot_decision_curve(curve: pd.DataFrame) -> str:
    """Decision curve: net benefit of the model against treat-all and treat-none, test solid, val thin.

    The y range stops a little below zero: treat-all falls steeply at high thresholds and would flatten the rest.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    lows, highs = [0.0], [0.0]
    for split, part in _by_split(curve):
        test = split == "test"
        (line,) = ax.plot(
            part["threshold"], part["net_benefit"], "-", lw=2.2 if test else 1.2, label=f"model ({split})"
        )
        ax.plot(part["threshold"], part["treat_all"], "--", lw=1.2 if test else 0.8, color=line.get_color(),
                alpha=1 if test else 0.6, label=f"treat all ({split})")  # fmt: skip
        lows.append(float(part["net_benefit"].min()))
        highs += [float(part["net_benefit"].max()), float(part["treat_all"].max())]
    ax.axhline(0.0, color="black", lw=1, ls=":", label="treat none")
    span = max(highs) - min(lows)
    ax.set_ylim(min(lows) - 0.1 * span - 0.01, max(highs) + 0.1 * span + 0.01)
    ax.set_xlim(float(curve["threshold"].min()), float(curve["threshold"].max()))
    ax.set(xlabel="threshold probability (work-up when p >= threshold)", ylabel="net benefit",
           title="Decision curve")  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return png_base64(fig)


_LOCALIZATION_FIGURES = (
    ("pointing_game", "Pointing game (Grad-CAM peak inside a fracture box, with tolerance)"),
    ("energy_inside", "Energy inside the fracture boxes (share of positive Grad-CAM mass)"),
)


def _localization_rows(title: str, splits: dict) -> list[dict]:
    return [
        {"figure": title, "group": group, **{k: entry.get(k) for k in ("n", "n_patients", "value", "ci", "chance")},
         "above_chance": entry.get("above_chance")}
        for group, entry in splits.items()
    ]  # fmt: skip


def localization_context(localization: dict | None, explain_dir: Path | None) -> dict:
    """The report's localization section: one row per figure and group, and the box overlays inlined."""
    if not localization:
        return {}
    rows = []
    for key, title in _LOCALIZATION_FIGURES:
        rows += _localization_rows(title, localization.get(key) or {})
    for name, by_label in sorted((localization.get("shortcut") or {}).items()):
        for label, splits in by_label.items():
            rows += _localization_rows(f"Shortcut attention: share inside {name} boxes, {label}", splits)
    examples = [{**e, "source": "boxes"} for e in localization.get("examples") or []]
    figures = gallery(examples, explain_dir)
    settings = {k: localization.get(k) for k in ("n_cases", "n_patients", "pointing_tolerance_px", "grid", "cell_px")}
    return {
        "rows": rows,
        "examples": figures[0]["items"] if figures else [],
        **settings,
        "rule": localization.get("rule"),
        "chance": localization.get("chance"),
        "unit": localization.get("unit"),
        "image_size": localization.get("image_size"),
    }
