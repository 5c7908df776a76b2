"""The cases under review: an eval dir's predictions with their outcome at the frozen threshold, filtered and paged.

Pure functions over a pandas frame loaded once at start-up (30,000 rows filter and sort in milliseconds); the
verdict status of each case comes from the store and is passed in as a set of image ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.contracts.artifacts import PREDICTIONS, THRESHOLDS

OUTCOMES = ("TP", "FP", "FN", "TN")
SUBGROUP_FILTERS = ("split", "source", "age_band", "sex", "body_part", "projection", "cast", "clinically_relevant")
# Shown on the case page: pseudonymised ids and coarse attributes only (never the file path or exact age).
METADATA_FIELDS = (
    "image_id", "split", "source", "patient_id", "study_id", "age_band", "sex", "body_part", "projection",
    "initial_exam", "cast", "metal", "clinically_relevant",
)  # fmt: skip
SORTS = ("error", "confidence", "prob", "image_id")
STATUSES = ("any", "reviewed", "unreviewed", "label_flagged")
NEEDED = ("image_id", "split", "prob", "label")


@dataclass(frozen=True)
class CaseQuery:
    """The case list's filters, sort and page (the query parameters of `/` and `GET /api/cases`)."""

    outcome: tuple[str, ...] = ()
    split: str | None = None
    source: str | None = None
    age_band: str | None = None
    sex: str | None = None
    body_part: str | None = None
    projection: str | None = None
    cast: str | None = None
    clinically_relevant: str | None = None
    prob_min: float = 0.0
    prob_max: float = 1.0
    status: str = "any"
    sort: str = "error"
    page: int = 1
    page_size: int = 50


def text_levels(values: pd.Series) -> pd.Series:
    """Subgroup values as filterable text: booleans as yes/no, missing as "unknown"."""
    if values.dtype == bool or str(values.dtype) == "boolean":
        values = values.astype("boolean").map({True: "yes", False: "no"}, na_action="ignore")
    return values.astype("string").fillna("unknown")


def load_cases(eval_dir: Path) -> tuple[pd.DataFrame, float]:
    """predictions.parquet with outcome, margin and text subgroup columns; and the frozen threshold.

    Raises:
        InputError: a file is missing or lacks a needed column or the frozen threshold.
    """
    from fracture.base.io import read_json, read_parquet

    eval_dir = Path(eval_dir)
    for name in (PREDICTIONS, THRESHOLDS):
        if not (eval_dir / name).is_file():
            raise InputError(f"{eval_dir / name}: missing; pass the eval dir `fracture evaluate` wrote")
    frame = read_parquet(eval_dir / PREDICTIONS)
    missing = [c for c in NEEDED if c not in frame.columns]
    if missing:
        raise InputError(f"{eval_dir / PREDICTIONS}: missing columns {', '.join(missing)}")
    frozen = read_json(eval_dir / THRESHOLDS).get("frozen")
    if not isinstance(frozen, int | float) or not 0 <= frozen <= 1:
        raise InputError(f"{eval_dir / THRESHOLDS}: no frozen threshold in [0, 1]")
    return with_outcomes(frame, float(frozen)), float(frozen)


def with_outcomes(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Add `pred` and `outcome` at `threshold` (positive when prob >= threshold), `margin` and text subgroups."""
    out = frame.copy()
    out["image_id"] = out["image_id"].astype(str)
    prob = out["prob"].to_numpy(np.float64)
    label = out["label"].to_numpy(np.int64)
    pred = (prob >= threshold).astype(np.int64)
    out["pred"] = pred
    names = np.array(["TN", "FN", "FP", "TP"])  # index 2 * pred + label
    out["outcome"] = pd.Categorical(names[2 * pred + label], categories=list(OUTCOMES))
    out["margin"] = np.abs(prob - threshold)  # distance from the operating point: the model's confidence
    out["id_rank"] = out["image_id"].rank(method="first").astype(np.int64)  # integer tie-break for the sorts
    for column in SUBGROUP_FILTERS:
        out[column] = text_levels(out[column]) if column in out.columns else "unknown"
    return out.reset_index(drop=True)


def filter_levels(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The values each subgroup filter offers (sorted)."""
    return {c: sorted(frame[c].astype(str).unique()) for c in SUBGROUP_FILTERS}


def select_cases(frame: pd.DataFrame, query: CaseQuery, reviewed: set[str], flagged: set[str]) -> pd.DataFrame:
    """The rows the query's filters keep, sorted (not paged)."""
    keep = np.ones(len(frame), dtype=bool)
    if query.outcome:
        keep &= frame["outcome"].isin(query.outcome).to_numpy()
    for column in SUBGROUP_FILTERS:
        value = getattr(query, column)
        if value:
            keep &= (frame[column] == value).to_numpy()
    prob = frame["prob"].to_numpy()
    keep &= (prob >= query.prob_min) & (prob <= query.prob_max)
    if query.status != "any":
        ids = frame["image_id"]
        marked = ids.isin(flagged if query.status == "label_flagged" else reviewed).to_numpy()
        keep &= ~marked if query.status == "unreviewed" else marked
    return sort_cases(frame[keep], query.sort)


def sort_cases(frame: pd.DataFrame, sort: str) -> pd.DataFrame:
    """error: wrong decisions first, most confidently wrong first; confidence: least confident first."""
    rank, margin = frame["id_rank"].to_numpy(), frame["margin"].to_numpy()
    if sort == "error":
        wrong = frame["outcome"].isin(("FP", "FN")).to_numpy()
        return frame.iloc[np.lexsort((rank, np.where(wrong, -margin, margin + 2)))]
    if sort == "confidence":
        return frame.iloc[np.lexsort((rank, margin))]
    if sort == "prob":
        return frame.iloc[np.lexsort((rank, -frame["prob"].to_numpy()))]
    return frame.iloc[np.argsort(rank, kind="stable")]


def page_of(selected: pd.DataFrame, page: int, page_size: int) -> tuple[pd.DataFrame, int]:
    """Rows of page `page` (1-based, clipped to the last page) and the number of pages."""
    pages = max(1, math.ceil(len(selected) / page_size))
    page = min(max(page, 1), pages)
    return selected.iloc[(page - 1) * page_size : page * page_size], pages


def case_record(row: pd.Series, threshold: float) -> dict:
    """One case as JSON: ids, split, probability, label, decision and outcome at the frozen threshold."""
    return {
        "image_id": str(row["image_id"]),
        "split": str(row["split"]),
        "source": str(row["source"]),
        "prob": float(row["prob"]),
        "label": int(row["label"]),
        "pred": int(row["pred"]),
        "decision": "fracture" if int(row["pred"]) else "normal",
        "outcome": str(row["outcome"]),
        "threshold": threshold,
    }


def neighbours(order: list[str], image_id: str) -> tuple[str | None, str | None]:
    """The previous and next image ids around `image_id` in the list order."""
    try:
        i = order.index(image_id)
    except ValueError:
        return None, None
    return (order[i - 1] if i > 0 else None), (order[i + 1] if i + 1 < len(order) else None)


def metadata(row: pd.Series) -> dict[str, str]:
    """The case's displayable metadata (METADATA_FIELDS present in the row)."""
    return {k: ("unknown" if pd.isna(row[k]) else str(row[k])) for k in METADATA_FIELDS if k in row.index}
