"""Who is scored and in which group: prediction rows, bootstrap clusters, subgroup levels, primary population."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import pandas as pd

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "val")
MANIFEST_FIELDS = (
    "image_id", "label", "patient_id", "study_id", "source", "age", "sex", "body_part", "projection",
    "initial_exam", "cast", "metal",
)  # fmt: skip
PREDICTION_COLUMNS = (
    "image_id", "split", "prob", "label", "pred", "patient_id", "cluster_id", "study_id", "source", "age", "age_band",
    "sex", "body_part", "projection", "initial_exam", "cast", "metal", "clinically_relevant",
)  # fmt: skip
SUBGROUPS = (
    "source", "age_band", "sex", "body_part", "projection", "initial_exam", "cast", "metal", "clinically_relevant",
)  # fmt: skip
# The cohort policy's exclusion reasons (split.exclusion_reasons): such cases are scored as the spectrum, never in
# the headline. Other reasons (a source outside the strategy, ...) are not cases the model is meant for.
COHORT_REASONS = ("metal", "diagnosis_uncertain", "sex O", "projection other")
POPULATIONS = ("all", "clinically_relevant")


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


def level_names(frame: pd.DataFrame, column: str) -> pd.Series:
    """Readable subgroup level of every row ("unknown" for missing values)."""
    values = frame[column]
    if column == "initial_exam":
        names = values.astype("boolean").map({True: "initial", False: "follow-up"}, na_action="ignore")
    elif column in ("cast", "metal", "clinically_relevant"):
        names = values.astype("boolean").map({True: "yes", False: "no"}, na_action="ignore")
    else:
        names = values.astype("string")
    return names.astype("string").fillna("unknown")


def cluster_ids(frame: pd.DataFrame) -> pd.Series:
    """The bootstrap cluster of every row: splits.parquet's `cluster_id` (the unit the split grouped by).

    Frames without it (built by hand) fall back to patient_id, with a warning: a patient id can separate an
    augmented copy from its original, so CIs may then be too narrow.
    """
    if "cluster_id" in frame.columns:
        return frame["cluster_id"].astype("string")
    log.warning("no cluster_id column: bootstrapping by patient_id (re-run split to group copies with originals)")
    return frame["patient_id"].astype("string")


def prepare_predictions(frame: pd.DataFrame, threshold: float, edges: Sequence[int]) -> pd.DataFrame:
    """predictions.parquet rows: the scored frame plus pred, cluster_id, age_band and clinically_relevant."""
    out = frame.copy()
    out["label"] = out["label"].astype("int8")
    out["prob"] = out["prob"].astype("float64")
    out["pred"] = (out["prob"] >= threshold).astype("int8")
    out["cluster_id"] = cluster_ids(out)
    out["age_band"] = age_bands(out["age"], edges)
    out["clinically_relevant"] = clinically_relevant(out)
    out = out.sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)
    return out[list(PREDICTION_COLUMNS)]


def resolve_population(population: str, test: pd.DataFrame) -> str:
    """The primary population a pre-specified `evaluate.primary.population` names.

    "auto" means GRAZPEDWRI-DX's clinically relevant subset when every test image is from Kaggle (GRAZPEDWRI-DX),
    else all test images: decided from the test set's make-up, never from its results.
    """
    if population != "auto":
        return population
    sources = set(test["source"].astype("string").dropna())
    return "clinically_relevant" if sources == {"kaggle"} else "all"


def population_rows(frame: pd.DataFrame, population: str) -> pd.DataFrame:
    """The rows of `frame` in a named population ("all" or "clinically_relevant")."""
    if population == "all":
        return frame
    return frame[clinically_relevant(frame).to_numpy()]


def cohort_reasons(reason: pd.Series) -> pd.Series:
    """Per row, the cohort-policy reasons among its "; "-joined exclusion reasons ("" when none)."""
    parts = reason.astype("string").fillna("").str.split("; ")
    return parts.map(lambda ps: "; ".join(p for p in ps if p in COHORT_REASONS)).astype("string")
