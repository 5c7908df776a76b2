"""The evaluate step's I/O: load val/test (and cohort-excluded) rows, score them from the cache, write the eval dir."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import atomic_write_text, read_manifest, read_parquet, write_json, write_parquet
from fracture.base.parallel import progress
from fracture.config import Params, dump_params
from fracture.contracts.artifacts import GATE, HEADLINE, METRICS, PREDICTIONS, PRIMARY, SPECTRUM_PREDICTIONS, THRESHOLDS
from fracture.contracts.tasks import TASK_REASON, apply_task, check_in_task
from fracture.contracts.verdict import Verdict, write_verdict
from fracture.evaluate.cohort import EVAL_SPLITS, MANIFEST_FIELDS, cohort_reasons
from fracture.evaluate.core import Evaluation, assemble_evaluation, headline_record

log = logging.getLogger(__name__)

SCORE_CHUNK = 2048  # images read from the memmap per predict_proba call
SPLIT_FIELDS = ("image_id", "split", "reason", "cluster_id")
# plots/chance.csv: the no-skill diagonal drawn on the ROC and calibration plots (dvc.yaml's top-level `plots`).
CHANCE_DIAGONAL = pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "mean_pred": [0.0, 1.0], "frac_pos": [0.0, 1.0]})


def _first_duplicate(path: Path, ids: pd.Series) -> None:
    if ids.duplicated().any():
        raise InputError(f"{path}: image_id {ids[ids.duplicated()].iloc[0]} repeats")


def read_inputs(manifest_path: Path, splits_path: Path, task: str = "fracture") -> tuple[pd.DataFrame, pd.DataFrame]:
    """splits.parquet (image_id, split, reason, cluster_id) and the manifest fields evaluate joins, as `task` sees them.

    The fields' `label` is the task's target and `task_reason` says which rows are outside the task
    (fracture.contracts.tasks).

    Raises:
        InputError: a column is missing (cluster_id: re-run split) or an image_id repeats.
    """
    manifest, _ = read_manifest(manifest_path)
    splits = read_parquet(splits_path)
    for path, df, needed in ((splits_path, splits, SPLIT_FIELDS), (manifest_path, manifest, MANIFEST_FIELDS)):
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise InputError(f"{path}: missing columns {', '.join(missing)} (re-run the step that writes it)")
    splits = splits[list(SPLIT_FIELDS)].astype("string")
    manifest = apply_task(manifest, task)
    fields = manifest[[*MANIFEST_FIELDS, TASK_REASON]].astype({"image_id": "string"})
    _first_duplicate(splits_path, splits["image_id"])
    _first_duplicate(manifest_path, fields["image_id"])
    return splits, fields


def load_eval_rows(manifest_path: Path, splits_path: Path, task: str = "fracture") -> pd.DataFrame:
    """Val and test rows of splits.parquet joined with their manifest fields (train rows are never read on).

    Raises:
        InputError: a column is missing, ids disagree between the files, a label is not 0/1, a row is outside the
            task (splits made for another task), or there is no test.
    """
    splits, fields = read_inputs(manifest_path, splits_path, task)
    rows = splits.loc[splits["split"].isin(EVAL_SPLITS), ["image_id", "split", "cluster_id"]]
    frame = rows.merge(fields, on="image_id", how="left", indicator=True)
    unknown = frame.loc[frame["_merge"] == "left_only", "image_id"]
    if len(unknown):
        raise InputError(
            f"{splits_path}: {len(unknown)} val/test image_ids are not in {manifest_path} (e.g. {unknown.iloc[0]}); "
            "re-run split on this manifest"
        )
    if not frame["label"].isin([0, 1]).all():
        raise InputError(f"{manifest_path}: labels of val/test rows must be 0 or 1")
    if not (frame["split"] == "test").any():
        raise InputError(f"{splits_path}: no test rows to evaluate")
    check_in_task(frame, task, str(splits_path))
    return frame.drop(columns=["_merge", TASK_REASON])


def load_excluded_rows(
    manifest_path: Path, splits_path: Path, task: str = "fracture"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows split marked `excluded`: (spectrum candidates, every excluded row's study_id and label).

    Spectrum candidates carry a cohort-policy reason (metal, uncertain, sex O, projection other) and a cluster
    with no train row (a case whose patient trained the model says nothing about new patients); `cluster_split`
    is the split of the cluster's scored rows ("none" when it has none). Rows outside the task have no target there.
    """
    splits, fields = read_inputs(manifest_path, splits_path, task)
    excluded = splits[splits["split"] == "excluded"].merge(fields, on="image_id", how="inner")
    excluded = excluded[excluded["label"].isin([0, 1]) & excluded[TASK_REASON].isna()].drop(columns=TASK_REASON)
    split_of = splits[splits["split"].isin(("train", *EVAL_SPLITS))].groupby("cluster_id")["split"]
    in_train = set(splits.loc[splits["split"] == "train", "cluster_id"].dropna())
    reasons = cohort_reasons(excluded["reason"])
    keep = reasons.ne("").to_numpy() & ~excluded["cluster_id"].isin(in_train).to_numpy()
    spectrum = excluded[keep].assign(reason=reasons[keep].to_numpy())
    spectrum["cluster_split"] = spectrum["cluster_id"].map(split_of.first()).fillna("none").astype("string")
    return spectrum.reset_index(drop=True), excluded[["image_id", "study_id", "label"]]


def model_task(config: dict, task: str, source: Path) -> str:
    """The model's task (config.json; `fracture` when it predates tasks), which must be the params' `base.task`.

    Raises:
        InputError: they differ.
    """
    trained = str(config.get("task", "fracture"))
    if trained != task:
        raise InputError(f"{source}: the model was trained for task {trained!r} but base.task is {task!r}")
    return trained


def frozen_threshold(config: dict, source: Path) -> tuple[float, str]:
    """The operating point train froze into config.json.

    Raises:
        InputError: config.json has no threshold in [0, 1].
    """
    value = config.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InputError(f"{source}: no frozen 'threshold' in [0, 1] (got {value!r}); re-run train to tune it on val")
    return float(value), str(config.get("threshold_method") or "unknown")


def predict_rows(model: object, images: np.ndarray, rows: np.ndarray, config: dict, batch_size: int) -> np.ndarray:
    """Probabilities for cache rows `rows`, read from the memmap in sorted chunks (never the whole cache)."""
    import torch

    from fracture.model.core import predict_proba

    device = "cuda" if torch.cuda.is_available() else "cpu"
    order = np.argsort(rows, kind="stable")
    probs = np.empty(rows.size, dtype=np.float64)
    starts = range(0, rows.size, SCORE_CHUNK)
    for start in progress(starts, total=len(starts), desc="evaluate: scoring"):
        idx = order[start : start + SCORE_CHUNK]
        chunk = np.asarray(images[rows[idx]])  # [C, S, S] uint8
        probs[idx] = predict_proba(model, chunk, float(config["mean"]), float(config["std"]), batch_size, device)
    return probs


def score_frame(
    frame: pd.DataFrame, model: object, config: dict, cache_dir: Path, batch_size: int, require_test: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the frame's images from the cache; rows absent from the cache are left out and returned.

    Returns:
        (scored frame with a `prob` column, the rows not scored).

    Raises:
        InputError: the cache is unusable, no test image is in it (with `require_test`), or the model returns
            non-finite probabilities.
    """
    from fracture.preprocess.cache import load_cache

    images, index = load_cache(cache_dir)
    row_of = pd.Series(index["row"].to_numpy(np.int64), index=index["image_id"].astype("string").to_numpy())
    rows = frame["image_id"].map(row_of)
    unscored = rows.isna().to_numpy()
    scored = frame.loc[~unscored].copy()
    if require_test and not (scored["split"] == "test").any():
        raise InputError(f"{cache_dir}: none of the test images is in the cache; re-run preprocess")
    scored["prob"] = predict_rows(model, images, rows[~unscored].to_numpy(np.int64), config, batch_size)
    if not np.isfinite(scored["prob"]).all():
        raise InputError("the model returned non-finite probabilities")
    return scored, frame.loc[unscored]


def split_plot_files(name: str, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One curve per file, so `dvc plots show` draws lines rather than zig-zags between splits.

    Returns:
        {"<name>.csv": the test curve (DVC plots), "val/<name>.csv": the val curve (for the report)}; tables
        without a `split` column (the confusion rows, test only) stay one file.
    """
    if "split" not in table.columns:
        return {f"{name}.csv": table}
    files = {f"{name}.csv": table[table["split"] == "test"]}
    val = table[table["split"] == "val"]
    if not val.empty:
        files[f"val/{name}.csv"] = val
    return files


def write_evaluation(ev: Evaluation, out_dir: Path, params: Params) -> None:
    """Write the eval dir, every file atomically, with the resolved params beside it."""
    out_dir = Path(out_dir)
    write_json(out_dir / METRICS, ev.metrics)
    write_json(out_dir / HEADLINE, headline_record(ev.metrics))
    write_json(out_dir / PRIMARY, ev.primary)
    write_parquet(ev.predictions, out_dir / PREDICTIONS)
    write_parquet(ev.spectrum_predictions, out_dir / SPECTRUM_PREDICTIONS)
    write_json(out_dir / THRESHOLDS, ev.thresholds)
    tables = {
        "subgroups": ev.subgroups,
        "intervals": ev.intervals,
        "per_source": ev.per_source,
        "spectrum": ev.spectrum,
        "reliability": ev.reliability,
        "decision_curve": ev.decision,
    }
    for name, table in tables.items():
        atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    for name, table in ev.plots.items():
        for rel, part in split_plot_files(name, table).items():
            atomic_write_text(out_dir / "plots" / rel, part.to_csv(index=False))
    atomic_write_text(out_dir / "plots" / "chance.csv", CHANCE_DIAGONAL.to_csv(index=False))
    write_verdict(ev.gate, out_dir / GATE)
    dump_params(params, out_dir / "params.yaml")


def _g4(value: object) -> str:
    """A number in a log line: 4 significant digits (metrics.json keeps full precision); anything else as is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def log_gate(gate: Verdict) -> None:
    """State the verdict in the log (evaluate exits 0 whatever it is; register and KFP act on gate.json)."""
    summary = "; ".join(f"{c.name} = {_g4(c.observed)} (min {c.required})" for c in gate.checks)
    if gate.status == "passed":
        log.info("evaluation gate PASSED: %s", summary)
    elif gate.status == "undecidable":
        log.warning("evaluation gate UNDECIDABLE: %s (register makes it a challenger tagged undecidable; promoting "
                    "it needs --force --reason)", "; ".join(gate.reasons))  # fmt: skip
    else:
        log.warning("evaluation gate FAILED: %s (register will refuse this model)", "; ".join(gate.reasons))


def run_evaluate(
    params: Params, model_dir: Path, manifest_path: Path, splits_path: Path, cache_dir: Path, out_dir: Path
) -> dict:
    """Score val + test (and the cohort-excluded spectrum) with the model, evaluate, write the eval dir.

    Returns:
        The flat metrics written to metrics.json ("gate.passed" and "gate.undecidable" are 1 or 0).
    """
    from fracture.base.io import read_json
    from fracture.contracts.plan import check_plan
    from fracture.model.core import CONFIG_FILE, check_cache_contract, load_model_dir, read_contract
    from fracture.preprocess.cache import META_FILE

    check_plan(Path(model_dir), params, "evaluate")  # before anything is scored
    model, config = load_model_dir(Path(model_dir))
    task = model_task(config, params.base.task, Path(model_dir) / CONFIG_FILE)
    frame = load_eval_rows(Path(manifest_path), Path(splits_path), task)
    spectrum, excluded = load_excluded_rows(Path(manifest_path), Path(splits_path), task)
    contract = read_contract(config, Path(model_dir) / CONFIG_FILE)  # the model's inputs, never the current params
    check_cache_contract(contract, read_json(Path(cache_dir) / META_FILE), Path(cache_dir))
    frozen, method = frozen_threshold(config, Path(model_dir) / CONFIG_FILE)
    log.info("scoring %d val/test images (%s)", len(frame), frame["split"].value_counts().to_dict())
    batch = params.evaluate.batch_size
    scored, unscored = score_frame(frame, model, config, Path(cache_dir), batch)
    missing = {s: int((unscored["split"] == s).sum()) for s in EVAL_SPLITS}
    if len(unscored):
        log.warning("%s: val/test images not in the cache (failed decode?), not scored: %s", cache_dir, missing)
    if len(spectrum):
        log.info("scoring %d cohort-excluded images (spectrum, never in the headline)", len(spectrum))
        spectrum, _ = score_frame(spectrum, model, config, Path(cache_dir), batch, require_test=False)
    dropped = pd.concat([excluded, unscored[["image_id", "study_id", "label"]]], ignore_index=True)
    ev = assemble_evaluation(scored, frozen, method, config.get("thresholds"), params.evaluate, params.base.seed,
                             spectrum=spectrum, dropped=dropped)  # fmt: skip
    ev.metrics.update({f"{s}.n_unscored": n for s, n in missing.items()})
    ev.metrics["spectrum.n"] = len(spectrum)
    write_evaluation(ev, Path(out_dir), params)
    pr = ev.primary
    log.info(
        "primary endpoint: %s on %s = %s (CI low %s); test AUROC %s at frozen threshold %.4f (%s); wrote %s",
        pr.get("primary.metric"), pr.get("primary.population"), _g4(pr.get("primary.value")),
        _g4(pr.get("primary.ci_low")), _g4(ev.metrics.get("test.auroc")), frozen, method, out_dir,
    )  # fmt: skip
    log_gate(ev.gate)
    return ev.metrics
