"""Operating points: every threshold is tuned on VAL only (image level and study level), never on test."""

from __future__ import annotations

import logging

import pandas as pd

from fracture.config import EvaluateParams
from fracture.stats.operating_points import tune_thresholds

log = logging.getLogger(__name__)

TUNED = ("youden", "f1_max", "target_sensitivity", "target_sensitivity_conservative", "fixed")
# Val thresholds recomputed here may differ from train's by float noise (other device, batch size).
THRESHOLD_ATOL = 1e-4


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


def tune_on_val(val: pd.DataFrame, ep: EvaluateParams, seed: int) -> dict[str, float]:
    """Val-only operating points, the conservative rule resampling val's clusters ({} when val lacks a class)."""
    if val.empty or val["label"].nunique() < 2:
        log.warning("val has %d rows and %d class(es): val thresholds not recomputed", len(val), val["label"].nunique())
        return {}
    y, p = val["label"].to_numpy(), val["prob"].to_numpy()
    return tune_thresholds(y, p, ep.target_sensitivity, val["cluster_id"], ep.n_bootstrap, seed)


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


def study_threshold(
    val_studies: pd.DataFrame, method: str, image_threshold: float, ep: EvaluateParams, seed: int
) -> tuple[float, str]:
    """The study-level operating point: the image rule (`method`) re-tuned on VAL studies' max-over-views scores.

    Max-over-views shifts the score distribution up, so the image threshold reused on it over-calls studies.

    Returns:
        (threshold, how it was chosen); the image threshold, said so, when val studies cannot tune `method`.
    """
    if method == "fixed":
        return 0.5, "fixed"
    tuned = tune_on_val(val_studies, ep, seed) if len(val_studies) else {}
    if method not in tuned:
        log.warning("val studies cannot tune %r: the image threshold is reused at study level", method)
        return float(image_threshold), "image threshold (val studies could not tune it)"
    return float(tuned[method]), f"{method} on val studies"
