"""The Kubeflow shell's entry points: one function per pipeline step, called by `components/<step>.py`.

Each function takes the resolved params as JSON (plus the knobs the pipeline lifts), and artifact paths, and
calls the same `run_<step>` function as the CLI and the DVC stage. Raw images are addressed relative to a data
root: ingest records the source roots relative to it and later steps pass the root they see explicitly, so
manifests stay valid when each task sees the data at a different mount path.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import read_json, write_json
from fracture.base.logs import setup_logging
from fracture.config import Params, parse_params
from fracture.contracts.artifacts import MANIFEST, METRICS, SPLITS
from fracture.sources import SOURCE_DIRS

log = logging.getLogger(__name__)

LOCATION_FILE = "location.json"


def resolve_params(params_json: str, **knobs: Any) -> Params:
    """Parse the pipeline's params JSON and apply lifted knobs given as `section__key=value` (None = keep)."""
    data = json.loads(params_json)
    for name, value in knobs.items():
        if value is None:
            continue
        section, key = name.split("__", 1)
        data.setdefault(section, {})[key] = value
    return parse_params(data, "pipeline params_json")


def _setup() -> None:
    setup_logging(verbose=False)


def fetch_raw_data(data_source: str, data_location: str, data_revision: str, raw_data_path: str) -> Path:
    """Make the raw data available and return its root.

    `dvc`: `dvc get <repo> data/raw --rev <revision>` into the artifact (the repo's DVC remote is on S3).
    `volume`: the data stays on the mounted volume; the artifact records where it is.
    """
    out = Path(raw_data_path)
    if data_source == "dvc":
        cmd = ["dvc", "get", data_location, "data/raw", "--rev", data_revision, "-o", str(out), "--force"]
        log.info("fetching raw data: dvc get %s data/raw --rev %s", data_location, data_revision)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InputError(f"dvc get from {data_location}@{data_revision} failed: {proc.stderr.strip()[-500:]}")
        return out
    if data_source == "volume":
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / LOCATION_FILE, {"root": str(Path(data_location).resolve()), "revision": data_revision})
        return Path(data_location).resolve()
    raise InputError(f"unknown data_source {data_source!r} (expected 'dvc' or 'volume')")


def data_root(raw_data_path: str) -> Path:
    """The raw data root behind a raw-data artifact (the artifact itself, or the volume it points to)."""
    location = Path(raw_data_path) / LOCATION_FILE
    return Path(read_json(location)["root"]) if location.exists() else Path(raw_data_path)


def ingest_step(
    params_json: str, data_source: str, data_location: str, data_revision: str, raw_data_path: str, out_path: str
) -> None:
    """Fetch raw data, then `fracture ingest` on every source directory found under the data root."""
    from fracture.ingest import run_ingest

    _setup()
    root = fetch_raw_data(data_source, data_location, data_revision, raw_data_path)
    dirs = {src: Path(name) for src, name in SOURCE_DIRS.items() if (root / name).is_dir()}
    if not dirs:
        raise InputError(f"{root}: none of {', '.join(SOURCE_DIRS.values())} found")
    run_ingest(
        resolve_params(params_json),
        Path(out_path),
        kaggle_dir=dirs.get("kaggle"),
        mura_dir=dirs.get("mura"),
        hospital_dir=dirs.get("hospital"),
        data_root=root,  # roots are recorded relative to the data root
    )


def validate_step(params_json: str, raw_data_path: str, ingest_path: str, out_path: str, html_path: str) -> None:
    """`fracture validate`; the Data Docs index is also published as an HTML artifact."""
    from fracture.validate.run import run_validate

    _setup()
    manifest = Path(ingest_path) / MANIFEST
    try:
        run_validate(resolve_params(params_json), manifest, Path(out_path), data_root=data_root(raw_data_path))
    finally:
        index = Path(out_path) / "data_docs" / "index.html"
        if index.exists():
            shutil.copyfile(index, html_path)


def split_step(params_json: str, strategy: str, ingest_path: str, out_path: str) -> None:
    """`fracture split` with the pipeline's split strategy."""
    from fracture.split.run import run_split

    _setup()
    params = resolve_params(params_json, split__strategy=strategy)
    run_split(params, Path(ingest_path) / MANIFEST, Path(out_path) / SPLITS)


def preprocess_step(params_json: str, raw_data_path: str, ingest_path: str, out_path: str) -> None:
    """`fracture preprocess`."""
    from fracture.preprocess.run import run_preprocess

    _setup()
    manifest = Path(ingest_path) / MANIFEST
    run_preprocess(resolve_params(params_json), manifest, Path(out_path), data_root=data_root(raw_data_path))


def train_inputs(ingest_path: str, split_path: str, cache_path: str) -> tuple[Path, Path, Path]:
    """(manifest, splits, cache) inside the upstream artifacts: what both train shells hand to training."""
    return Path(ingest_path) / MANIFEST, Path(split_path) / SPLITS, Path(cache_path)


def train_step(
    params_json: str,
    epochs: int,
    learning_rate: float,
    ingest_path: str,
    split_path: str,
    cache_path: str,
    out_path: str,
) -> None:
    """`fracture train` with the pipeline's epochs and learning rate."""
    from fracture.train import run_train

    _setup()
    params = resolve_params(params_json, train__epochs=epochs, train__lr=learning_rate)
    run_train(params, *train_inputs(ingest_path, split_path, cache_path), Path(out_path))


def train_trainjob_step(
    params_json: str,
    epochs: int,
    learning_rate: float,
    ingest_path: str,
    split_path: str,
    cache_path: str,
    out_path: str,
) -> None:
    """`fracture train` across nodes: a Kubeflow Trainer TrainJob launched and followed from this task."""
    import uuid

    from fracture.kubeflow.trainjob import run_trainjob
    from fracture.kubeflow.trainjob_api import KubeTrainJobApi, own_namespace

    _setup()
    params = resolve_params(params_json, train__epochs=epochs, train__lr=learning_rate)
    namespace = params.pipeline.trainjob.namespace or own_namespace()
    job = f"fracture-train-{uuid.uuid4().hex[:10]}"
    inputs = train_inputs(ingest_path, split_path, cache_path)
    run_trainjob(params, *inputs, Path(out_path), KubeTrainJobApi(namespace), job, namespace)


def evaluate_step(
    params_json: str,
    model_path: str,
    ingest_path: str,
    split_path: str,
    cache_path: str,
    out_path: str,
    metrics: Any,
    classification: Any,
) -> None:
    """`fracture evaluate`; logs headline metrics and the test ROC / confusion matrix for the KFP UI.

    The gate's verdict (gate.json in the eval dir) is an artifact that infravalidate and register receive: they act
    on it and record it, so a refused model is a recorded outcome on the cluster as under DVC.
    """
    from fracture.evaluate import run_evaluate

    _setup()
    out = Path(out_path)
    run_evaluate(
        resolve_params(params_json),
        Path(model_path),
        Path(ingest_path) / MANIFEST,
        Path(split_path) / SPLITS,
        Path(cache_path),
        out,
    )
    log_kfp_metrics(out, metrics, classification)


def evaluation_refusal(eval_path: str) -> list[str] | None:
    """The evaluation gate's reasons when it failed; None when it passed or was undecidable.

    An undecidable model (too few test patients to decide) is served and registered as a challenger tagged
    undecidable; promoting it needs --force --reason. Only a failed verdict keeps it out.
    """
    from fracture.contracts.artifacts import GATE
    from fracture.contracts.verdict import read_verdict

    verdict = read_verdict(Path(eval_path) / GATE)
    return list(verdict.reasons) or ["the evaluation gate failed"] if verdict.status == "failed" else None


def log_kfp_metrics(eval_dir: Path, metrics: Any, classification: Any) -> None:
    """Headline scalars to a `Metrics` artifact; test ROC and confusion matrix to `ClassificationMetrics`."""
    for key, value in read_json(eval_dir / METRICS).items():
        if key.startswith("test.") and isinstance(value, int | float) and key.count(".") <= 2:
            metrics.log_metric(key, float(value))
    roc = pd.read_csv(eval_dir / "plots" / "roc.csv")
    if "split" in roc.columns:
        roc = roc[roc["split"] == "test"]
    # the (0, 0) corner has no finite threshold; KFP metadata refuses NaN and inf
    roc = roc.replace([float("inf"), float("-inf")], float("nan")).fillna({"threshold": 1.0})
    step = max(1, len(roc) // 200)  # the KFP UI needs a curve, not every threshold
    roc = roc.iloc[::step]
    classification.log_roc_curve(roc["fpr"].tolist(), roc["tpr"].tolist(), roc["threshold"].tolist())
    confusion = pd.read_csv(eval_dir / "plots" / "confusion.csv")
    categories = ["normal", "fracture"]
    matrix = [[int(((confusion["actual"] == a) & (confusion["predicted"] == p)).sum()) for p in (0, 1)] for a in (0, 1)]
    classification.log_confusion_matrix(categories, matrix)


def explain_step(params_json: str, model_path: str, eval_path: str, cache_path: str, out_path: str) -> None:
    """`fracture explain`."""
    from fracture.explain import run_explain

    _setup()
    run_explain(resolve_params(params_json), Path(model_path), Path(eval_path), Path(cache_path), Path(out_path))


def report_step(
    params_json: str,
    ingest_path: str,
    validation_path: str,
    split_path: str,
    model_path: str,
    eval_path: str,
    explain_path: str,
    html_path: str,
) -> None:
    """`fracture report` straight into the HTML artifact."""
    from fracture.report import run_report

    _setup()
    run_report(
        resolve_params(params_json),
        Path(html_path),
        ingest_dir=Path(ingest_path),
        validation_dir=Path(validation_path),
        splits_path=Path(split_path) / SPLITS,
        model_dir=Path(model_path),
        eval_dir=Path(eval_path),
        explain_dir=Path(explain_path),
    )


def infravalidate_step(
    params_json: str, raw_data_path: str, ingest_path: str, model_path: str, eval_path: str, out_path: str
) -> None:
    """`fracture infravalidate` on the trained model; the result is written either way (register acts on it).

    A model the evaluation gate refused is not served: the result says "not run" (an undecidable verdict).
    """
    from fracture.base.errors import GateError
    from fracture.infravalidate.checks import not_run_result
    from fracture.infravalidate.run import run_infravalidate

    _setup()
    refused = evaluation_refusal(eval_path)
    if refused is not None:
        reason = f"not run: the evaluation gate refused the model ({'; '.join(refused)})"
        log.warning("infra validation %s", reason)
        write_json(Path(out_path), not_run_result(reason, model_uri=model_path))
        return
    manifest = Path(ingest_path) / MANIFEST
    params = resolve_params(params_json)
    try:
        run_infravalidate(params, Path(model_path), Path(eval_path), manifest, data_root(raw_data_path), Path(out_path))
    except GateError as err:
        log.error("%s", err)


def register_step(
    params_json: str,
    model_path: str,
    eval_path: str,
    report_path: str,
    out_path: str,
    infra_path: str,
    validation_path: str | None = None,
) -> None:
    """`fracture register --gate-failure-ok`, acting on both verdicts it receives; the outcome is always written.

    A model refused by the evaluation gate or by infra validation is not registered, and the outcome says why
    (`{"registered": false, "why": ..., "reasons": [...]}`), as the DVC stage records it. A registered version gets
    the infra validation result as tags. validate's pages are logged beside the report.
    """
    from fracture.base.errors import GateError
    from fracture.infravalidate.checks import to_verdict
    from fracture.registry.register import not_registered_record, run_register

    _setup()
    infra = read_json(Path(infra_path))
    verdict = to_verdict(infra)
    if evaluation_refusal(eval_path) is None and not verdict.passed:
        record = {"registered": False, "why": f"infra validation {verdict.status}", "reasons": list(verdict.reasons)}
    else:
        validation = Path(validation_path) if validation_path is not None else None
        try:
            record = run_register(
                resolve_params(params_json),
                Path(model_path),
                Path(eval_path),
                report_path=Path(report_path),
                validation_dir=validation,
            )
        except GateError:
            record = not_registered_record(Path(eval_path))
        else:
            from fracture.infravalidate.version import record_result
            from fracture.registry.client import mlflow_client, now_iso

            record_result(mlflow_client(), record["name"], str(record["version"]), infra, now_iso())
    if record.get("registered") is False:
        log.warning("not registered: %s (%s)", record["why"], "; ".join(record["reasons"]))
    write_json(Path(out_path), record)


def split_fold_step(params_json: str, strategy: str, fold: int, ingest_path: str, out_path: str) -> str:
    """One fold of a CV study (`fracture cv-split` for one fold); returns the fold's params as JSON."""
    from fracture.cv.folds import fold_params, run_fold_split

    _setup()
    params = resolve_params(params_json)
    run_fold_split(params, Path(ingest_path) / MANIFEST, Path(out_path), int(fold), strategy)
    return json.dumps(fold_params(params, int(fold), strategy).to_dict(), sort_keys=True)


def pool_step(params_json: str, eval_paths: list[str], out_path: str, metrics: Any) -> None:
    """`fracture pool` over the collected eval dirs; the pooled numbers to a `Metrics` artifact."""
    from fracture.cv.pool import run_pool

    _setup()
    pooled = run_pool(resolve_params(params_json), [Path(p) for p in eval_paths], Path(out_path))
    for key, value in pooled.items():
        if isinstance(value, int | float):
            metrics.log_metric(key, float(value))
