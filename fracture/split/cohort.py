"""The split's cohort tables: STARD-style flow counts and baseline characteristics per split.

Both are pure functions of the manifest, splits.parquet and ingest's quarantine.csv; `fracture split` writes them
beside splits.parquet (`flow.json`, `baseline.csv`) for the report.

Flow, per image (the unit the manifest holds): every candidate file is quarantined by ingest (by reason code),
excluded by the split (by reason: cohort policy, a source outside the strategy, or an augmented copy whose group
landed in val/test), or included in train/val/test (val and test are what evaluate scores). Candidates =
quarantined + excluded + included, in total and per source; per split, assigned = excluded from it + included.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from fracture.contracts.schema import SPLITS, copy_exclusion_reason

ASSIGNED = ("train", "val", "test")
BASELINE_COLUMNS = ("split", "source", "characteristic", "level", "unit", "n", "percent", "value")
FLAGS = ("initial_exam", "cast", "metal")
CATEGORICAL = ("sex", "projection")


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(values.astype(str)).items())}


def _quarantine_codes(quarantine: pd.DataFrame) -> pd.Series:
    """The reason category of each quarantine row: `code` where ingest wrote it, else the reason text."""
    if "code" in quarantine.columns:
        return quarantine["code"].astype("string").fillna(quarantine["reason"].astype("string"))
    return quarantine["reason"].astype("string")


def stage_counts(splits: pd.DataFrame, quarantine: pd.DataFrame) -> dict[str, Any]:
    """Candidates -> quarantined (by code) -> accepted -> excluded (by reason) -> included (per split)."""
    excluded = splits[splits["split"] == "excluded"]
    included = {name: int((splits["split"] == name).sum()) for name in ASSIGNED}
    return {
        "candidates": len(quarantine) + len(splits),
        "quarantined": len(quarantine),
        "quarantined_by_reason": _counts(_quarantine_codes(quarantine)),
        "accepted": len(splits),
        "excluded": len(excluded),
        "excluded_by_reason": _counts(excluded["reason"].fillna("unknown")),
        "included": sum(included.values()),
        "included_by_split": included,
    }


def split_flow(df: pd.DataFrame, splits: pd.DataFrame, name: str) -> dict[str, Any]:
    """One split: the images whose group it received, those excluded from it (augmented copies), those kept."""
    reason = splits["reason"].astype("string")
    dropped = ((splits["split"] == "excluded") & (reason == copy_exclusion_reason(name))).fillna(False).to_numpy()
    kept = (splits["split"] == name).to_numpy()
    members = df.loc[kept]
    return {
        "assigned": int(kept.sum() + dropped.sum()),
        "excluded": int(dropped.sum()),
        "excluded_by_reason": _counts(reason[dropped]),
        "included": int(kept.sum()),
        "scored": name != "train",
        "patients": int(members["patient_id"].nunique()),
        "clusters": int(splits.loc[kept, "cluster_id"].nunique()),
        "positives": int(members["label"].astype(int).sum()),
    }


def flow_counts(
    df: pd.DataFrame, splits: pd.DataFrame, quarantine: pd.DataFrame | None, strategy: str, fold: int
) -> dict[str, Any]:
    """STARD-style flow of images, in total, per source and per split.

    Args:
        df: the manifest (row i belongs to splits row i).
        splits: make_splits output.
        quarantine: ingest's quarantine.csv (`source`, `reason`, `code`); None when it was not found, which the
            result records (`quarantine_known: false`: candidates then count accepted images only).
        strategy: split strategy, recorded.
        fold: split fold, recorded.
    """
    q = quarantine if quarantine is not None else pd.DataFrame({"source": [], "reason": [], "code": []})
    source = df["source"].astype(str).to_numpy()
    q_source = q["source"].astype(str).to_numpy()
    sources = sorted(set(source) | set(q_source))
    return {
        "unit": "image",
        "strategy": strategy,
        "fold": fold,
        "quarantine_known": quarantine is not None,
        "total": stage_counts(splits, q),
        "sources": {s: stage_counts(splits[source == s], q[q_source == s]) for s in sources},
        "splits": {name: split_flow(df, splits, name) for name in ASSIGNED},
    }


# ------------------------------------------------------------------------------------------ baseline table


def _row(characteristic: str, level: str, unit: str, n: int, total: int, value: float | None = None) -> dict:
    percent = round(100.0 * n / total, 2) if total else None
    return {"characteristic": characteristic, "level": level, "unit": unit, "n": n, "percent": percent, "value": value}


def _levels(characteristic: str, values: pd.Series, unit: str) -> list[dict]:
    """Counts and % of each level (null -> `unknown`)."""
    text = values.astype("string").fillna("unknown")
    counts = text.value_counts()
    return [_row(characteristic, str(k), unit, int(counts[k]), len(values)) for k in sorted(counts.index)]


def _flag_levels(characteristic: str, values: pd.Series) -> list[dict]:
    yes_no = values.astype("boolean").map({True: "yes", False: "no"}, na_action="ignore")
    return _levels(characteristic, yes_no, "image")


def _age_rows(ages: pd.Series, unit: str) -> list[dict]:
    """Known / missing counts and mean, sd, median, quartiles, min, max of age in years."""
    known = ages.dropna().astype(float).to_numpy()
    rows = [
        _row("age", "known", unit, len(known), len(ages)),
        _row("age", "missing", unit, len(ages) - len(known), len(ages)),
    ]
    if len(known):
        q1, median, q3 = np.percentile(known, [25, 50, 75])
        stats = {"mean": known.mean(), "sd": known.std(ddof=1) if len(known) > 1 else np.nan, "median": median}
        stats.update(q1=q1, q3=q3, min=known.min(), max=known.max())
        rows += [_row("age", k, unit, len(known), len(ages), round(float(v), 3)) for k, v in stats.items()]
    return rows


def ao_classes(codes: pd.Series) -> list[set[str]]:
    """Per image, the set of AO (PCCF) classes in its code string: `23r-M/3.1; 23u-E/7` -> {23r-M, 23u-E}."""
    texts = codes.astype("string").fillna("").tolist()
    return [{part.split("/")[0].strip() for part in text.split(";") if part.strip()} for text in texts]


def _ao_rows(codes: pd.Series) -> list[dict]:
    """Images with any AO code, and per AO class (an image with two classes counts in both)."""
    classes = ao_classes(codes)
    rows = [_row("ao_class", "any", "image", sum(1 for found in classes if found), len(codes))]
    counts = Counter(c for found in classes for c in found)
    return rows + [_row("ao_class", k, "image", v, len(codes)) for k, v in sorted(counts.items())]


def _patient_view(sub: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: median age over their images, most frequent known sex."""
    first_sex = sub.dropna(subset=["sex"]).groupby("patient_id")["sex"].agg(lambda s: s.mode().iloc[0])
    view = sub.groupby("patient_id").agg(age=("age", "median"))
    return view.assign(sex=first_sex.reindex(view.index))


def characteristics(sub: pd.DataFrame) -> list[dict]:
    """Baseline rows of one split (and source): sizes, label, age, sex, projection, flags, AO class."""
    n = len(sub)
    patients = _patient_view(sub)
    positives = int(sub["label"].astype(int).sum())
    rows = [
        _row("images", "all", "image", n, n),
        _row("patients", "all", "patient", len(patients), len(patients)),
        _row("studies", "known", "study", int(sub["study_id"].nunique()), 0),  # no percent: ids may be missing
        _row("label", "fracture", "image", positives, n),
        _row("label", "normal", "image", n - positives, n),
    ]
    rows += _age_rows(sub["age"], "image") + _age_rows(patients["age"], "patient")
    rows += _levels("sex", sub["sex"], "image") + _levels("sex", patients["sex"], "patient")
    rows += _levels("projection", sub["projection"], "image")
    for flag in FLAGS:
        rows += _flag_levels(flag, sub[flag])
    if sub["ao_code"].notna().any():
        rows += _ao_rows(sub["ao_code"])
    return rows


def baseline_table(df: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Baseline characteristics per split (train, val, test, excluded) and source (plus source `all`).

    Returns:
        Long table with BASELINE_COLUMNS: `n` and `percent` (of the images, or patients for unit `patient`, in that
        split and source) for counts; `value` for age statistics (years; `n` is then the number of known ages).
    """
    frame = df.reset_index(drop=True).assign(split=splits["split"].to_numpy())
    out = []
    for name in SPLITS:
        part = frame[frame["split"] == name]
        if part.empty:
            continue
        for source in ["all", *sorted(part["source"].astype(str).unique())]:
            sub = part if source == "all" else part[part["source"].astype(str) == source]
            out += [{"split": name, "source": source, **row} for row in characteristics(sub)]
    table = pd.DataFrame(out, columns=list(BASELINE_COLUMNS))
    return table.astype({"n": "int64", "percent": "Float64", "value": "Float64"})
