"""Every artifact the steps exchange: its file names, and each step's inputs, outputs and params. The one owner.

In the style of TFX's `standard_component_specs`: the CLI, the DVC stages (checked by tests/unit/test_dag.py and
tests/unit/contracts/test_artifacts.py), the KFP components, the registry and the report read the names from here;
no other module spells an artifact's file name (a test scans the package for the literals below).

A step's artifacts are folders (`ingest_dir`, `eval_dir`, ...) holding named files; the CLI option, the KFP
artifact and the DVC path of one artifact share its key (`StepSpec.inputs` / `outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

# synth (fracture synth): what it generated, beside the three layouts
SYNTH_SUMMARY = "synth_summary.json"

# Every output folder also holds the resolved params it was made with.
PARAMS_COPY = "params.yaml"

# ingest_dir (fracture ingest)
MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.csv"
INGEST_SUMMARY = "summary.json"

# validation (fracture validate)
VALIDATION_JSON = "validation.json"
VALIDATION_HTML = "validation.html"

# splits (fracture split): the split file and the cohort tables beside it
SPLITS = "splits.parquet"
SPLIT_SUMMARY_JSON = "split_summary.json"
SPLIT_SUMMARY_CSV = "split_summary.csv"
FLOW = "flow.json"
BASELINE = "baseline.csv"

# cache (fracture preprocess)
CACHE_IMAGES = "images.npy"
CACHE_INDEX = "index.parquet"
CACHE_META = "meta.json"
CACHE_FAILURES = "failures.csv"

# model dir (fracture train)
WEIGHTS = "model.pt"
MODEL_CONFIG = "config.json"
MODEL_METADATA = "metadata.json"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"

# eval_dir (fracture evaluate)
HEADLINE = "headline.json"
METRICS = "metrics.json"
PRIMARY = "primary.json"
GATE = "gate.json"  # the evaluation gate's verdict (fracture.contracts.verdict)
PREDICTIONS = "predictions.parquet"
THRESHOLDS = "thresholds.json"
SUBGROUPS = "subgroups.csv"
INTERVALS = "intervals.csv"
PER_SOURCE = "per_source.csv"
SPECTRUM = "spectrum.csv"
SPECTRUM_PREDICTIONS = "spectrum_predictions.parquet"
RELIABILITY = "reliability.csv"
DECISION_CURVE = "decision_curve.csv"
PLOTS = "plots"

# explain_dir (fracture explain)
EXPLAIN_INDEX = "index.json"
EXPLAIN_META = "meta.json"

# report (fracture report) and register's outcome
REPORT_HTML = "report.html"
REGISTRATION = "registration.json"


@dataclass(frozen=True)
class StepSpec:
    """One step's interface: the artifact keys it reads and writes, and the files of each output it writes."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: dict[str, tuple[str, ...]]


STEPS: dict[str, StepSpec] = {
    s.name: s
    for s in (
        # ingest fetches the raw data it is pointed at (KFP: a volume or a bucket revision) and passes it on
        StepSpec("ingest", (), ("raw_data", "ingest_dir"), {"ingest_dir": (MANIFEST, QUARANTINE, INGEST_SUMMARY)}),
        StepSpec(
            "validate", ("raw_data", "ingest_dir"), ("validation",), {"validation": (VALIDATION_JSON, VALIDATION_HTML)}
        ),
        StepSpec(
            "split",
            ("ingest_dir",),
            ("splits",),
            {"splits": (SPLITS, SPLIT_SUMMARY_JSON, SPLIT_SUMMARY_CSV, FLOW, BASELINE)},
        ),
        StepSpec(
            "preprocess",
            ("raw_data", "ingest_dir"),
            ("cache",),
            {"cache": (CACHE_IMAGES, CACHE_INDEX, CACHE_META, CACHE_FAILURES)},
        ),
        StepSpec(
            "train",
            ("ingest_dir", "splits", "cache"),
            ("model",),
            {"model": (WEIGHTS, MODEL_CONFIG, MODEL_METADATA, HISTORY)},
        ),
        StepSpec(
            "evaluate",
            ("model", "ingest_dir", "splits", "cache"),
            ("eval_dir",),
            {"eval_dir": (HEADLINE, METRICS, PRIMARY, GATE, PREDICTIONS, THRESHOLDS, SUBGROUPS, INTERVALS)},
        ),
        StepSpec(
            "explain", ("model", "eval_dir", "cache"), ("explain_dir",), {"explain_dir": (EXPLAIN_INDEX, EXPLAIN_META)}
        ),
        StepSpec(
            "report",
            ("ingest_dir", "validation", "splits", "model", "eval_dir", "explain_dir"),
            ("report",),
            {"report": (REPORT_HTML,)},
        ),
        StepSpec(
            "register",
            ("model", "eval_dir", "report", "validation", "infra_validation"),
            ("registration",),
            {"registration": (REGISTRATION,)},
        ),
    )
}


def artifact_file_names() -> frozenset[str]:
    """Every file name this module owns (what tests/unit/contracts/test_artifacts.py looks for elsewhere)."""
    return frozenset(v for k, v in globals().items() if k.isupper() and isinstance(v, str) and "." in v)
