"""Clinical-study style evaluation: frozen operating point, CIs, calibration, study level, subgroups, gate.

The operating point is chosen on VAL only: train froze it into the model's config.json; here the val
thresholds are recomputed for the report (and checked against config.json) and the frozen one is applied
unchanged to test. Test labels never influence a threshold. Units are stated: image level (the model's unit)
and study level (max probability over a study's views, MURA's official unit). Confidence intervals resample
patients (cluster bootstrap) for AUROC / AUPRC / F1 and use Wilson intervals for proportions.

Layers: pure functions over a prediction frame (`assemble_evaluation` and its parts), then `run_evaluate`,
which loads the model, scores val + test from the preprocess cache and writes the eval dir atomically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fracture import metrics
from fracture.bootstrap import cluster_bootstrap, cluster_codes, percentile_interval
from fracture.config import EvaluateParams, GateParams, Params, dump_params
from fracture.errors import InputError
from fracture.io import atomic_write_text, read_manifest, read_parquet, write_json, write_parquet
from fracture.parallel import progress

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "val")
TUNED = ("youden", "f1_max", "target_sensitivity", "fixed")
# Val thresholds recomputed here may differ from train's by float noise (other device, batch size).
THRESHOLD_ATOL = 1e-4
MANIFEST_FIELDS = (
    "image_id", "label", "patient_id", "study_id", "source", "age", "sex", "body_part", "projection",
    "initial_exam", "cast", "metal",
)  # fmt: skip
PREDICTION_COLUMNS = (
    "image_id", "split", "prob", "label", "pred", "patient_id", "study_id", "source", "age", "age_band", "sex",
    "body_part", "projection", "initial_exam", "cast", "metal", "clinically_relevant",
)  # fmt: skip
SUBGROUPS = (
    "source", "age_band", "sex", "body_part", "projection", "initial_exam", "cast", "metal", "clinically_relevant",
)  # fmt: skip
SCORE_CHUNK = 2048  # images read from the memmap per predict_proba call


@dataclass(frozen=True)
class Evaluation:
    """Everything the eval dir holds, in memory."""

    predictions: pd.DataFrame
    metrics: dict[str, float]
    thresholds: dict
    subgroups: pd.DataFrame
    plots: dict[str, pd.DataFrame]
    gate: dict


# ------------------------------------------------------------------------------------------ subgroup columns
def age_bands(age: pd.Series, edges: Sequence[int]) -> pd.Series:
    """Age band labels ("<6", "6-11", ..., "65+", "unknown") for ages in years, bands closed on the left."""
    labels = [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:], strict=False)]
    labels.append(f"{edges[-1]}+")
    bins = [-math.inf, *edges, math.inf]
    values = pd.to_numeric(age, errors="coerce").astype("float64")
    bands = pd.cut(values, bins=bins, labels=labels, right=False).astype("string")
    return bands.fillna("unknown")


def clinically_relevant(frame: pd.DataFrame) -> pd.Series:
    """GRAZPEDWRI-DX's clinically relevant subset: Kaggle, initial exam, no cast, no metal."""
    flag = frame["source"].astype("string").eq("kaggle").fillna(False)
    flag &= frame["initial_exam"].astype("boolean").fillna(False)
    for column in ("cast", "metal"):
        flag &= ~frame[column].astype("boolean").fillna(False)
    return flag.astype(bool)


def _level_names(frame: pd.DataFrame, column: str) -> pd.Series:
    """Readable subgroup level of every row ("unknown" for missing values)."""
    values = frame[column]
    if column == "initial_exam":
        names = values.astype("boolean").map({True: "initial", False: "follow-up"}, na_action="ignore")
    elif column in ("cast", "metal", "clinically_relevant"):
        names = values.astype("boolean").map({True: "yes", False: "no"}, na_action="ignore")
    else:
        names = values.astype("string")
    return names.astype("string").fillna("unknown")


# ------------------------------------------------------------------------------------------ operating points
def compare_thresholds(
    recomputed: dict[str, float], frozen_set: dict | None, atol: float = THRESHOLD_ATOL
) -> list[str]:
    """Val thresholds recomputed here that disagree with those train stored in config.json.

    Returns:
        One message per disagreeing (or missing) method; empty when they all match.
    """
    if not frozen_set:
        return ["config.json has no 'thresholds' to compare with"] if recomputed else []
    problems = []
    for method, value in recomputed.items():
        stored = frozen_set.get(method)
        if not isinstance(stored, int | float):
            problems.append(f"{method}: not in config.json")
        elif abs(float(stored) - value) > atol:
            problems.append(f"{method}: recomputed {value:.6g} vs config.json {float(stored):.6g}")
    return problems


def tune_on_val(val: pd.DataFrame, target_sensitivity: float) -> dict[str, float]:
    """Val-only operating points (empty when val lacks a class, so nothing can be tuned)."""
    if val.empty or val["label"].nunique() < 2:
        log.warning("val has %d rows and %d class(es): val thresholds not recomputed", len(val), val["label"].nunique())
        return {}
    return metrics.tune_thresholds(val["label"].to_numpy(), val["prob"].to_numpy(), target_sensitivity)


def threshold_report(
    frozen: float, method: str, val_thresholds: dict[str, float], config_thresholds: dict | None
) -> dict:
    """thresholds.json: the frozen point, the val-tuned set, and whether it matches config.json."""
    problems = compare_thresholds(val_thresholds, config_thresholds)
    if problems:
        log.warning("val thresholds recomputed here differ from the model's config.json: %s", "; ".join(problems))
    return {
        "frozen": float(frozen),
        "method": method,
        "val": {k: float(v) for k, v in val_thresholds.items()},
        "config": {k: float(v) for k, v in (config_thresholds or {}).items() if isinstance(v, int | float)},
        "matches_config": not problems,
        "mismatches": problems,
        "rule": "positive when prob >= threshold; thresholds tuned on val only, the frozen one applied to test",
    }


def report_points(
    val_thresholds: dict[str, float], config_thresholds: dict | None, reference: float
) -> dict[str, float]:
    """The reference operating points: recomputed on val, else config.json's (also val-tuned), and `reference`."""
    source = val_thresholds or {k: v for k, v in (config_thresholds or {}).items() if isinstance(v, int | float)}
    return {**{k: float(source[k]) for k in TUNED if k in source}, "fixed": float(reference)}


# ----------------------------------------------------------------------------------------------- split metrics
def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": v for k, v in values.items()}


def _ci(cis: dict[str, float], key: str) -> dict[str, float]:
    """The bootstrap CI entries of `key` (none when the bootstrap is off)."""
    return {k: cis[k] for k in (f"{key}_ci_low", f"{key}_ci_high") if k in cis}


def bootstrap_cis(frame: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> dict[str, float]:
    """Patient-level bootstrap percentile CIs of AUROC, AUPRC and F1 at `threshold` ({} when n_bootstrap is 0).

    Returns:
        {"auroc_ci_low", "auroc_ci_high", "auprc_ci_low", ..., "f1_ci_high"}.
    """
    if ep.n_bootstrap == 0 or frame.empty:
        return {}
    y, p = frame["label"].to_numpy(), frame["prob"].to_numpy()
    reps = cluster_bootstrap(y, p, frame["patient_id"], threshold, ep.n_bootstrap, seed)
    cis = {}
    for name in ("auroc", "auprc", "f1"):
        cis[f"{name}_ci_low"], cis[f"{name}_ci_high"] = percentile_interval(reps[name], ep.ci_level)
    return cis


def discrimination(frame: pd.DataFrame, cis: dict[str, float]) -> dict[str, float]:
    """Counts, prevalence, the trivial F1, AUROC and AUPRC, each with its bootstrap CI when there is one."""
    y, p = frame["label"].to_numpy(), frame["prob"].to_numpy()
    prevalence = float(y.mean()) if y.size else float("nan")
    return {
        "n": len(frame),
        "n_pos": int(y.sum()),
        "n_patients": cluster_codes(frame["patient_id"])[1],
        "prevalence": prevalence,
        "trivial_f1": metrics.trivial_f1(prevalence),
        "auroc": metrics.auroc(y, p),
        **_ci(cis, "auroc"),
        "auprc": metrics.average_precision(y, p),
        **_ci(cis, "auprc"),
    }


def calibration(frame: pd.DataFrame, n_bins: int) -> dict[str, float]:
    """Brier score, expected calibration error, calibration slope / intercept / in-the-large."""
    y, p = frame["label"].to_numpy(), frame["prob"].to_numpy()
    fit = metrics.calibration_fit(y, p)
    return {
        "brier": metrics.brier_score(y, p),
        "ece": metrics.expected_calibration_error(metrics.reliability_curve(y, p, n_bins)),
        "calibration_slope": fit["slope"],
        "calibration_intercept": fit["intercept"],
        "calibration_in_the_large": fit["citl"],
    }


def point_metrics(
    frame: pd.DataFrame, points: dict[str, float], trivial: float, level: float, cis: dict[str, float]
) -> dict[str, float]:
    """Operating-point metrics at every named threshold, the trivial F1 beside each F1 (and the frozen F1's CI)."""
    y, p = frame["label"].to_numpy(), frame["prob"].to_numpy()
    out = {}
    for name, threshold in points.items():
        op = metrics.operating_point(y, p, threshold, level)
        kappa = op.pop("kappa")
        f1_ci = _ci(cis, "f1") if name == "frozen" else {}  # the bootstrap ran at the frozen threshold
        out.update(_prefixed(name, {**op, **f1_ci, "trivial_f1": trivial, "kappa": kappa}))
    return out


def split_metrics(frame: pd.DataFrame, points: dict[str, float], ep: EvaluateParams, seed: int) -> dict[str, float]:
    """All image-level metrics of one split (keys without the split prefix)."""
    cis = bootstrap_cis(frame, points["frozen"], ep, seed)
    out = discrimination(frame, cis)
    out.update(calibration(frame, ep.calibration_bins))
    out.update(point_metrics(frame, points, out["trivial_f1"], ep.ci_level, cis))
    return out


def study_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, study): max probability over its views and label = max label.

    An image without a study_id is its own study.
    """
    study = frame["study_id"].astype("string").fillna("image:" + frame["image_id"].astype("string"))
    grouped = frame.assign(study_id=study).groupby(["split", "study_id"], sort=True)
    studies = grouped.agg(
        prob=("prob", "max"), label=("label", "max"), patient_id=("patient_id", "first"), n_images=("image_id", "size")
    )
    return studies.reset_index()


def study_metrics(studies: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> dict[str, float]:
    """Study-level AUROC / AUPRC (patient bootstrap CIs) and the frozen-threshold metrics (keys under `study.`)."""
    cis = bootstrap_cis(studies, threshold, ep, seed)
    out = discrimination(studies, cis)
    out.update(point_metrics(studies, {"frozen": threshold}, out["trivial_f1"], ep.ci_level, cis))
    return _prefixed("study", out)


# -------------------------------------------------------------------------------------------------- subgroups
def subgroup_row(sub: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> dict:
    """n, prevalence, AUROC (CI), sensitivity / specificity (Wilson CI), F1 of one subgroup, flagged when tiny."""
    y, p = sub["label"].to_numpy(), sub["prob"].to_numpy()
    n, n_pos = len(sub), int(y.sum())
    notes = (["n too small"] if n < ep.min_subgroup_n else []) + (["one class only"] if n_pos in (0, n) else [])
    row = {"n": n, "n_pos": n_pos, "n_patients": cluster_codes(sub["patient_id"])[1], "prevalence": n_pos / n}
    row.update({"auroc": np.nan, "auroc_ci_low": np.nan, "auroc_ci_high": np.nan})
    if not notes:
        row["auroc"] = metrics.auroc(y, p)
        if ep.n_bootstrap > 0:
            reps = cluster_bootstrap(y, p, sub["patient_id"], threshold, ep.n_bootstrap, seed)["auroc"]
            row["auroc_ci_low"], row["auroc_ci_high"] = percentile_interval(reps, ep.ci_level)
    op = metrics.operating_point(y, p, threshold, ep.ci_level)
    for name in ("sensitivity", "specificity"):
        row.update({k: op[k] for k in (name, f"{name}_ci_low", f"{name}_ci_high")})
    row.update({"f1": op["f1"], "trivial_f1": metrics.trivial_f1(n_pos / n)})
    row.update({"reliable": not notes, "note": "; ".join(notes)})
    return row


def subgroup_table(frame: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """Per split, per subgroup column, per level: `subgroup_row` at the frozen threshold."""
    rows = []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        for column in SUBGROUPS:
            names = _level_names(part, column)
            for level in sorted(names.unique()):
                if column == "clinically_relevant" and level != "yes":
                    continue  # the subset itself; its complement mixes sources and is not a subgroup of interest
                row = subgroup_row(part[names == level], threshold, ep, seed)
                rows.append({"split": split, "subgroup": column, "level": level, **row})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ plots, gate
def plot_tables(frame: pd.DataFrame, n_bins: int) -> dict[str, pd.DataFrame]:
    """DVC plot data, val and test told apart by a `split` column.

    Returns:
        {"roc": fpr, tpr, threshold; "pr": recall, precision, threshold; "calibration": the reliability curve;
        "confusion": actual, predicted per test image at the frozen threshold}.
    """
    roc, pr, cal = [], [], []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        y, p = part["label"].to_numpy(), part["prob"].to_numpy()
        fpr, tpr, thr = metrics.roc_points(y, p)
        thr = np.where(np.isfinite(thr), thr, np.nan)  # the (0, 0) corner has no finite threshold
        roc.append(pd.DataFrame({"split": split, "fpr": fpr, "tpr": tpr, "threshold": thr}))
        recall, precision, _ = metrics.pr_points(y, p)
        pr.append(pd.DataFrame({"split": split, "recall": recall, "precision": precision, "threshold": thr}))
        cal.append(metrics.reliability_curve(y, p, n_bins).assign(split=split))
    test = frame[frame["split"] == "test"]
    confusion = pd.DataFrame({"actual": test["label"].astype(int), "predicted": test["pred"].astype(int)})
    calibration_df = pd.concat(cal, ignore_index=True) if cal else pd.DataFrame()
    if not calibration_df.empty:
        calibration_df = calibration_df[["split", *[c for c in calibration_df.columns if c != "split"]]]
    return {
        "roc": pd.concat(roc, ignore_index=True),
        "pr": pd.concat(pr, ignore_index=True),
        "calibration": calibration_df,
        "confusion": confusion.reset_index(drop=True),
    }


def evaluate_gate(values: dict[str, float], gate: GateParams) -> dict:
    """gate.json: minimum test AUROC and minimum test sensitivity at the frozen threshold."""
    checks = []
    for name, minimum in (("test.auroc", gate.min_auroc), ("test.frozen.sensitivity", gate.min_sensitivity)):
        value = values.get(name)
        defined = isinstance(value, int | float) and math.isfinite(value)
        passed = bool(defined and value >= minimum)
        checks.append(
            {"name": name, "value": float(value) if defined else None, "threshold": minimum, "passed": passed}
        )
    reasons = [
        f"{c['name']} {c['value']:.4f} < {c['threshold']}" if c["value"] is not None else f"{c['name']} is undefined"
        for c in checks
        if not c["passed"]
    ]
    return {"passed": not reasons, "reasons": reasons, "checks": checks}


def finite_metrics(values: dict[str, float]) -> dict[str, float | int]:
    """metrics.json content: flat keys, finite numbers only (undefined values are left out, never NaN)."""
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int | np.integer):
            out[key] = int(value)
        elif isinstance(value, float | np.floating) and math.isfinite(value):
            out[key] = float(value)
    return out


# ------------------------------------------------------------------------------------------------- assembly
def prepare_predictions(frame: pd.DataFrame, threshold: float, edges: Sequence[int]) -> pd.DataFrame:
    """predictions.parquet rows: the scored val/test frame plus pred, age_band and clinically_relevant."""
    out = frame.copy()
    out["label"] = out["label"].astype("int8")
    out["prob"] = out["prob"].astype("float64")
    out["pred"] = (out["prob"] >= threshold).astype("int8")
    out["age_band"] = age_bands(out["age"], edges)
    out["clinically_relevant"] = clinically_relevant(out)
    out = out.sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)
    return out[list(PREDICTION_COLUMNS)]


def assemble_evaluation(
    frame: pd.DataFrame,
    frozen: float,
    method: str,
    config_thresholds: dict | None,
    ep: EvaluateParams,
    seed: int,
) -> Evaluation:
    """The whole evaluation from scored val/test rows. Thresholds read val rows only.

    Args:
        frame: one row per scored image: image_id, split ("val"/"test"), prob, label and the manifest fields.
        frozen: the operating point frozen into the model (config.json "threshold"), applied unchanged.
        method: how it was chosen (config.json "threshold_method").
        config_thresholds: config.json "thresholds" (tuned on val by train), checked against a recomputation.
        ep: the evaluate section of the params.
        seed: bootstrap seed (base.seed).
    """
    preds = prepare_predictions(frame, frozen, ep.age_bands)
    val_thresholds = tune_on_val(preds[preds["split"] == "val"], ep.target_sensitivity)
    points = {"frozen": float(frozen), **report_points(val_thresholds, config_thresholds, ep.reference_threshold)}
    thresholds = {**threshold_report(frozen, method, val_thresholds, config_thresholds), "points": points}
    values: dict[str, float] = {"threshold": float(frozen)}
    studies = study_frame(preds)
    for split in EVAL_SPLITS:
        part = preds[preds["split"] == split]
        if part.empty:
            log.warning("no scored %s rows: %s metrics left out", split, split)
            continue
        values.update(_prefixed(split, split_metrics(part, points, ep, seed)))
        values.update(_prefixed(split, study_metrics(studies[studies["split"] == split], frozen, ep, seed)))
    gate = evaluate_gate(values, ep.gate)
    values["gate.passed"] = int(gate["passed"])
    subgroups = subgroup_table(preds, frozen, ep, seed)
    plots = plot_tables(preds, ep.calibration_bins)
    return Evaluation(preds, finite_metrics(values), thresholds, subgroups, plots, gate)


# ------------------------------------------------------------------------------------------------------- I/O
def load_eval_rows(manifest_path: Path, splits_path: Path) -> pd.DataFrame:
    """Val and test rows of splits.parquet joined with their manifest fields (train rows are never read on).

    Raises:
        InputError: a column is missing, ids disagree between the files, a label is not 0/1, or there is no test.
    """
    manifest, _ = read_manifest(manifest_path)
    splits = read_parquet(splits_path)
    for path, df, needed in ((splits_path, splits, ("image_id", "split")), (manifest_path, manifest, MANIFEST_FIELDS)):
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise InputError(f"{path}: missing columns {', '.join(missing)}")
    rows = splits.loc[splits["split"].isin(EVAL_SPLITS), ["image_id", "split"]].astype("string")
    if rows["image_id"].duplicated().any():
        raise InputError(f"{splits_path}: image_id {rows['image_id'][rows['image_id'].duplicated()].iloc[0]} repeats")
    fields = manifest[list(MANIFEST_FIELDS)].astype({"image_id": "string"})
    if fields["image_id"].duplicated().any():
        raise InputError(
            f"{manifest_path}: image_id {fields['image_id'][fields['image_id'].duplicated()].iloc[0]} repeats"
        )
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
    return frame.drop(columns="_merge")


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

    from fracture.model import predict_proba

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
    frame: pd.DataFrame, model: object, config: dict, cache_dir: Path, batch_size: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Score the frame's images from the cache; rows absent from the cache are left out and counted.

    Returns:
        (scored frame with a `prob` column, {split: number of images not scored}).

    Raises:
        InputError: the cache is unusable, no test image is in it, or the model returns non-finite probabilities.
    """
    from fracture.data import load_cache

    images, index = load_cache(cache_dir)
    row_of = pd.Series(index["row"].to_numpy(np.int64), index=index["image_id"].astype("string").to_numpy())
    rows = frame["image_id"].map(row_of)
    unscored = rows.isna().to_numpy()
    missing = {s: int(((frame["split"] == s).to_numpy() & unscored).sum()) for s in EVAL_SPLITS}
    if unscored.any():
        log.warning("%s: val/test images not in the cache (failed decode?), not scored: %s", cache_dir, missing)
    scored = frame.loc[~unscored].copy()
    if not (scored["split"] == "test").any():
        raise InputError(f"{cache_dir}: none of the test images is in the cache; re-run preprocess")
    scored["prob"] = predict_rows(model, images, rows[~unscored].to_numpy(np.int64), config, batch_size)
    if not np.isfinite(scored["prob"]).all():
        raise InputError("the model returned non-finite probabilities")
    return scored, missing


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
    write_json(out_dir / "metrics.json", ev.metrics)
    write_parquet(ev.predictions, out_dir / "predictions.parquet")
    write_json(out_dir / "thresholds.json", ev.thresholds)
    atomic_write_text(out_dir / "subgroups.csv", ev.subgroups.to_csv(index=False))
    for name, table in ev.plots.items():
        for rel, part in split_plot_files(name, table).items():
            atomic_write_text(out_dir / "plots" / rel, part.to_csv(index=False))
    write_json(out_dir / "gate.json", ev.gate)
    dump_params(params, out_dir / "params.yaml")


def log_gate(gate: dict) -> None:
    """State the gate's outcome in the log (evaluate exits 0 either way; register and KFP act on gate.json)."""
    summary = "; ".join(f"{c['name']} = {c['value']} (min {c['threshold']})" for c in gate["checks"])
    if gate["passed"]:
        log.info("evaluation gate PASSED: %s", summary)
    else:
        log.warning("evaluation gate FAILED: %s (register will refuse this model)", "; ".join(gate["reasons"]))


def run_evaluate(
    params: Params, model_dir: Path, manifest_path: Path, splits_path: Path, cache_dir: Path, out_dir: Path
) -> dict:
    """Score val + test with the model, evaluate at the frozen threshold, write the eval dir.

    Returns:
        The flat metrics written to metrics.json ("gate.passed" is 1 or 0).
    """
    from fracture.io import read_json
    from fracture.model import CONFIG_FILE, check_cache_contract, load_model_dir, read_contract

    frame = load_eval_rows(Path(manifest_path), Path(splits_path))
    model, config = load_model_dir(Path(model_dir))
    contract = read_contract(config, Path(model_dir) / CONFIG_FILE)  # the model's inputs, never the current params
    check_cache_contract(contract, read_json(Path(cache_dir) / "meta.json"), Path(cache_dir))
    frozen, method = frozen_threshold(config, Path(model_dir) / "config.json")
    log.info("scoring %d val/test images (%s)", len(frame), frame["split"].value_counts().to_dict())
    scored, missing = score_frame(frame, model, config, Path(cache_dir), params.evaluate.batch_size)
    ev = assemble_evaluation(scored, frozen, method, config.get("thresholds"), params.evaluate, params.base.seed)
    ev.metrics.update({f"{s}.n_unscored": n for s, n in missing.items()})
    write_evaluation(ev, Path(out_dir), params)
    log.info(
        "test AUROC %s at frozen threshold %.4f (%s); wrote %s", ev.metrics.get("test.auroc"), frozen, method, out_dir
    )
    log_gate(ev.gate)
    return ev.metrics
