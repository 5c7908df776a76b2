"""Where the model looks, in numbers: Grad-CAM checked against the radiologists' boxes.

Per image (all on the model's input grid, boxes mapped there by fracture/images/geometry.py):
- pointing game: the Grad-CAM peak lies inside a fracture box grown by a tolerance (px at input resolution); its
  chance level is the share of the input the grown boxes cover (where a peak dropped at random would score);
- energy inside: the share of the positive Grad-CAM mass inside the union of fracture boxes; its chance level is
  the boxes' share of the input area (a map spread evenly scores exactly that);
- shortcut attention: the same share inside `text` (side markers, annotations) and `metal` boxes, positives and
  negatives apart. A model that reads the marker puts more mass there than the markers' area share.

Figures are means over images; CIs resample patients (fracture/stats/bootstrap.py), and each figure's chance level gets
the same resamples, so "lower bound above chance" compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fracture.images.geometry import box_mask, boxes_to_grid
from fracture.stats.bootstrap import draw_resamples, percentile_interval

FRACTURE = "fracture"
SHORTCUT_CLASSES = ("text", "metal")
SUBGROUPS = ("cast", "metal", "projection")
UNIT = "image; CIs resample patients (cluster_id)"


@dataclass(frozen=True)
class CaseBoxes:
    """One image's boxes on the input grid: class -> `[K, 4]` `(x0, y0, x1, y1)` px."""

    by_class: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        """The boxes of one class (`[0, 4]` when none)."""
        return self.by_class.get(name, np.zeros((0, 4)))


def grid_boxes(boxes: pd.DataFrame, size: int) -> dict[str, CaseBoxes]:
    """boxes.parquet rows -> per image_id, its boxes on the `size` px input grid, by class."""
    out: dict[str, CaseBoxes] = {}
    for image_id, rows in boxes.groupby(boxes["image_id"].astype(str), sort=True):
        h, w = int(rows["image_height"].iloc[0]), int(rows["image_width"].iloc[0])
        px = boxes_to_grid(rows[["x", "y", "w", "h"]].to_numpy(dtype=np.float64), h, w, size)
        classes = rows["class"].astype(str).to_numpy()
        out[str(image_id)] = CaseBoxes({c: px[classes == c] for c in sorted(set(classes))})
    return out


def case_scores(cam: np.ndarray, boxes: CaseBoxes, tolerance_px: float) -> dict[str, float]:
    """Per-image figures (NaN where the image has no box of that class, or the map has no positive mass).

    Args:
        cam: `[S, S]` Grad-CAM, >= 0.
        boxes: the image's boxes on the same grid.
        tolerance_px: the pointing game's tolerance, px.

    Returns:
        pointing_hit, pointing_chance, fracture_energy, fracture_area, and `<class>_energy`, `<class>_area` for
        the shortcut classes.
    """
    size = cam.shape[0]
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    mass = cam.sum()
    out: dict[str, float] = {}
    fx = boxes.get(FRACTURE)
    if len(fx):
        grown = box_mask(fx, size, tolerance_px)
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        out["pointing_hit"] = float(grown[peak]) if mass > 0 else 0.0  # a flat zero map points nowhere
        out["pointing_chance"] = float(grown.mean())
    for name in (FRACTURE, *SHORTCUT_CLASSES):
        found = boxes.get(name)
        if len(found):
            inside = box_mask(found, size)
            out[f"{name}_energy"] = float(cam[inside].sum() / mass) if mass > 0 else float("nan")
            out[f"{name}_area"] = float(inside.mean())
    return out


def score_cases(
    cams: np.ndarray, cases: pd.DataFrame, boxes: dict[str, CaseBoxes], tolerance_px: float
) -> pd.DataFrame:
    """`cases` (one row per image, in the order of `cams`) with the per-image figures as columns."""
    rows = [case_scores(cam, boxes[str(i)], tolerance_px) for cam, i in zip(cams, cases["image_id"], strict=True)]
    return pd.concat([cases.reset_index(drop=True), pd.DataFrame(rows, index=range(len(rows)))], axis=1)


def mean_with_ci(
    values: np.ndarray, clusters: np.ndarray, n_bootstrap: int, ci_level: float, seed: int
) -> dict[str, float | int | list[float] | None]:
    """Mean of the finite values and its patient-cluster percentile CI."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    values, clusters = values[keep], np.asarray(clusters)[keep]
    n = int(values.size)
    if n == 0:
        return {"n": 0, "n_patients": 0, "value": None, "ci": None}
    entry: dict = {"n": n, "n_patients": int(pd.Series(clusters).nunique()), "value": float(values.mean())}
    if n_bootstrap < 1 or n < 2:
        entry["ci"] = None
        return entry
    rs = draw_resamples(clusters, n_bootstrap, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = rs.sums(values) / rs.sums(np.ones(n))
    low, high = percentile_interval(replicates, ci_level)
    entry["ci"] = None if np.isnan(low) else [low, high]
    return entry


def figure(
    scored: pd.DataFrame, value: str, chance: str, n_bootstrap: int, ci_level: float, seed: int
) -> dict[str, object]:
    """One figure (mean and CI) beside its chance level (mean and CI) over the rows that have both."""
    rows = scored[np.isfinite(scored[value].astype(float)) & np.isfinite(scored[chance].astype(float))]
    clusters = rows["cluster_id"].astype(str).to_numpy()
    stat = mean_with_ci(rows[value].to_numpy(float), clusters, n_bootstrap, ci_level, seed)
    level = mean_with_ci(rows[chance].to_numpy(float), clusters, n_bootstrap, ci_level, seed)
    lift = mean_with_ci((rows[value] - rows[chance]).to_numpy(float), clusters, n_bootstrap, ci_level, seed)
    return {
        **stat,
        "chance": level["value"],
        "chance_ci": level["ci"],
        "lift": lift["value"],
        "lift_ci": lift["ci"],
        "above_chance": bool(stat["ci"] is not None and stat["ci"][0] > (level["value"] or 0.0)),
    }


def split_figures(
    scored: pd.DataFrame, value: str, chance: str, n_bootstrap: int, ci_level: float, seed: int
) -> dict[str, dict[str, object]]:
    """A figure over all rows, by TP / FN (positives) or TN / FP, and by each level of the subgroups."""
    out = {"all": figure(scored, value, chance, n_bootstrap, ci_level, seed)}
    for category in sorted(scored["category"].dropna().astype(str).unique()):
        out[category] = figure(scored[scored["category"] == category], value, chance, n_bootstrap, ci_level, seed)
    for column in SUBGROUPS:
        if column not in scored.columns:
            continue
        for level in sorted(scored[column].dropna().astype(str).unique()):
            rows = scored[scored[column].astype(str) == level]
            out[f"{column}={level}"] = figure(rows, value, chance, n_bootstrap, ci_level, seed)
    return out


def categorise(cases: pd.DataFrame) -> pd.Series:
    """TP / FN / FP / TN from label and pred."""
    label, pred = cases["label"].astype(int), cases["pred"].astype(int)
    names = np.where(label == 1, np.where(pred == 1, "TP", "FN"), np.where(pred == 1, "FP", "TN"))
    return pd.Series(names, index=cases.index, dtype="string")


def summarise(scored: pd.DataFrame, n_bootstrap: int, ci_level: float, seed: int) -> dict[str, object]:
    """localization.json's figures from `score_cases` output (needs label, pred, cluster_id)."""
    scored = scored.assign(category=categorise(scored))
    has = scored.columns.__contains__
    empty = pd.Series(np.nan, index=scored.index)
    fx = scored[np.isfinite(scored["fracture_area"] if has("fracture_area") else empty)]
    out: dict[str, object] = {
        "pointing_game": split_figures(fx, "pointing_hit", "pointing_chance", n_bootstrap, ci_level, seed)
        if len(fx)
        else {},
        "energy_inside": split_figures(fx, "fracture_energy", "fracture_area", n_bootstrap, ci_level, seed)
        if len(fx)
        else {},
        "shortcut": {},
    }
    for name in SHORTCUT_CLASSES:
        rows = scored[np.isfinite(scored[f"{name}_area"] if has(f"{name}_area") else empty)]
        out["shortcut"][name] = {
            group: split_figures(part, f"{name}_energy", f"{name}_area", n_bootstrap, ci_level, seed)
            for group, part in (("positives", rows[rows["label"] == 1]), ("negatives", rows[rows["label"] == 0]))
            if len(part)
        }
    return out


def pick_cases(candidates: pd.DataFrame, sample: int, seed: int) -> pd.DataFrame:
    """All candidate cases, or a seeded sample of `sample` of them (sorted by image_id either way)."""
    ordered = candidates.sort_values("image_id", kind="mergesort").reset_index(drop=True)
    if len(ordered) <= sample:
        return ordered
    picked = np.sort(np.random.default_rng(seed).choice(len(ordered), size=sample, replace=False))
    return ordered.iloc[picked].reset_index(drop=True)


def box_classes(boxes: pd.DataFrame, names: Iterable[str]) -> set[str]:
    """image_ids with at least one box of the named classes."""
    return set(boxes.loc[boxes["class"].astype(str).isin(list(names)), "image_id"].astype(str))
