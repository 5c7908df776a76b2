"""Rendering: the template context (with the model card), the Jinja template, and `run_report`, the step."""

from __future__ import annotations

import logging
from pathlib import Path

from fracture.config import Params
from fracture.model.card import INTENDED_USE, card_limitations
from fracture.report.artifacts import Artifacts, load_artifacts
from fracture.report.decision import decision_view
from fracture.report.endpoints import (
    METHOD_LABELS,
    METRIC_NAMES,
    baseline_tables,
    ci_lookup,
    flow_source_rows,
    flow_split_rows,
    n_resamples,
    primary_view,
    records,
    split_values,
    table_rows,
    target_rows,
)
from fracture.report.figures import curve_figures, gallery, localization_context, plot_history
from fracture.report.flowchart import plot_flow
from fracture.report.tables import (
    PROVENANCE_KEYS,
    STUDY_HEADLINE,
    confusion_cells,
    fmt,
    headline_rows,
    is_number,
    lineage_rows,
    merge_unknown_rows,
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


def endpoint_context(art: Artifacts) -> dict:
    """The primary endpoint, flow, baseline, per-source, reliability, decision-curve and spectrum content."""
    m = art.metrics
    primary = primary_view(art.primary, art.eval_params, n_resamples(art.intervals, art.eval_params))
    figures = curve_figures(art)
    per_source = {s: table_rows(art.per_source, "split", s, "source") for s in split_values(art.per_source)}
    spectrum_splits = split_values(art.spectrum, "cluster_split")
    evaluate = art.eval_params.get("evaluate") or {}
    return {
        "primary": primary,
        "method_labels": METHOD_LABELS,
        "method_abbr": {"cluster_bootstrap": "B", "wilson": "W"},
        "metric_names": METRIC_NAMES,
        "ci_level": evaluate.get("ci_level", art.params.evaluate.ci_level),
        "min_subgroup_patients": evaluate.get("min_subgroup_patients", art.params.evaluate.min_subgroup_patients),
        "ci_info": ci_lookup(art.intervals),
        "intervals_known": art.intervals is not None,
        "targets": target_rows(m),
        "flow": art.flow,
        "flow_png": plot_flow(art.flow, m, m.get("primary.n_images")) if art.flow else None,
        "flow_splits": flow_split_rows(art.flow),
        "flow_sources": flow_source_rows(art.flow),
        "baseline": baseline_tables(art.baseline),
        "per_source": per_source if art.per_source is not None else None,
        "reliability": {s: records(art.reliability, s) for s in split_values(art.reliability)}
        if art.reliability is not None
        else None,
        "decision_png": figures.get("decision_curve"),
        "decision": {s: records(art.decision, s) for s in split_values(art.decision)}
        if art.decision is not None
        else None,
        "spectrum": {s: table_rows(art.spectrum, "cluster_split", s, "reason") for s in spectrum_splits}
        if art.spectrum is not None
        else None,
        "figures": {k: v for k, v in figures.items() if k != "decision_curve"},
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
        "gate": decision_view(art.gate, m, art.primary),
        "plan": art.plan,
        "provenance": provenance_rows(art.summary),
        "provenance_keys": PROVENANCE_KEYS,
        "summary_rows": summary_rows(art.summary) if not provenance_rows(art.summary) else [],
        "quarantine": quarantine_counts(art.quarantine) if art.quarantine is not None else None,
        "validation": art.validation,
        "validation_rows": validation_rows(art.validation),
        "validation_href": art.validation_href,
        "data_docs_href": art.data_docs_href,
        "split_summary": art.split_summary,
        "history_png": plot_history(art.history, best) if art.history is not None and len(art.history) else None,
        "training_rows": training_rows(art.history, art.metadata),
        "headline": headline_rows(m),
        "operating_points": operating_point_rows(m, "test"),
        "thresholds": art.thresholds,
        "n_bootstrap": ep.n_bootstrap,
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
        "subgroup_tables": [
            (s, merge_unknown_rows(subgroup_rows(subgroups, s, ep.min_subgroup_n))) for s in ("test", "val")
        ]
        if subgroups is not None
        else [],
        "min_subgroup_n": ep.min_subgroup_n,
        "study_headline": headline_rows(m, spec=STUDY_HEADLINE),
        "gallery": gallery(art.explain_index, art.explain_dir),
        "explain_meta": art.explain_meta or {},
        "localization": localization_context(art.localization, art.explain_dir),
        "card": model_card(art),
        "all_metric_keys": other_metric_keys(m),
        "params_yaml": yaml.safe_dump(art.params.to_dict(), sort_keys=False),
        "cv_studies": [],  # run_report's cv_dirs fill it
        **endpoint_context(art),
    }


def render_html(context: dict) -> str:
    """Render the Jinja template (autoescaped; the only raw HTML are base64 PNG data URIs)."""
    from fracture.templates.pages import environment

    env = environment()
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
    localization_path: Path | None = None,
    cv_dirs: list[Path] | None = None,
) -> Path:
    """Write the self-contained report.html (the resolved params are embedded in it, not written beside it).

    `cv_dirs`: pool dirs of cross-validation studies (`fracture pool`); given, the report gets their section.

    Returns:
        The report's path.
    """
    from fracture.base.io import atomic_write_text
    from fracture.contracts.plan import check_plan

    plan = check_plan(Path(model_dir), params, "report")
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
        localization_path=localization_path,
    )
    art.plan = plan
    if art.missing:
        log.warning("report: %d artifact(s) missing, their sections say so: %s", len(art.missing), art.missing)
    from fracture.report.cv import cv_context

    context = {**build_context(art), "cv_studies": cv_context(list(cv_dirs or []))}
    atomic_write_text(out_path, render_html(context))
    log.info("report: %s (%.0f kB)", out_path, out_path.stat().st_size / 1024)
    return out_path
