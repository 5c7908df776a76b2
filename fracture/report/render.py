"""Rendering: the template context (with the model card), the Jinja template, and `run_report`, the step."""

from __future__ import annotations

import logging
from pathlib import Path

from fracture.config import Params
from fracture.modelcard import INTENDED_USE, card_limitations
from fracture.report.artifacts import Artifacts, load_artifacts
from fracture.report.figures import curve_figures, gallery, plot_history
from fracture.report.tables import (
    PROVENANCE_KEYS,
    STUDY_HEADLINE,
    confusion_cells,
    fmt,
    headline_rows,
    is_number,
    lineage_rows,
    operating_point_rows,
    other_metric_keys,
    provenance_rows,
    quarantine_counts,
    subgroup_rows,
    summary_rows,
    training_rows,
    validation_rows,
)

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"  # fracture/templates (package data)


def model_card(art: Artifacts) -> dict:
    """Model card fields: intended use, data, preprocessing, training, limitations, lineage."""
    card = art.metadata.get("model_card") or {}
    data = card.get("Data") if isinstance(card.get("Data"), dict) else {}
    return {
        "intended_use": INTENDED_USE,
        "data_rows": data.get("rows") or [],
        "data_summary": data.get("summary"),
        "preprocessing": card.get("Preprocessing"),
        "training": card.get("Training"),
        "input": (art.metadata.get("input") or {}).get("description") or card.get("Input"),
        "output": (art.metadata.get("output") or {}).get("description") or card.get("Output"),
        "limitations": card_limitations(card),
        "lineage": lineage_rows(art.metadata, art.config, art.fingerprints),
    }


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
        loader=FileSystemLoader(TEMPLATE_DIR),
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
