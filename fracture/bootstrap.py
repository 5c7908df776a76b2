"""Patient-level (cluster) bootstrap, vectorised over resamples.

A resample draws patients with replacement; every image of a drawn patient enters the resample as often as
its patient was drawn. That makes a resample a vector of integer per-image weights, so thousands of resamples
are one [B, N] weight matrix: AUROC and average precision come from one sort of the scores plus cumulative
sums (fracture.metrics.RankIndex), and confusion counts at a fixed threshold from a matrix-vector product over
per-patient counts. No per-resample sort, no Python loop over resamples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fracture.metrics import RankIndex

# Resamples per block of the [B, N] weight matrix (memory: block * N * 4 bytes per int32 array).
BLOCK = 128


def cluster_codes(groups: np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    """Integer cluster code per sample (missing ids become singleton clusters).

    Returns:
        (codes [N] int64 in 0..G-1, G).
    """
    values = pd.Series(groups, dtype="object").reset_index(drop=True)
    missing = values.isna().to_numpy()
    keys = values.astype(str).to_numpy(dtype=object)  # one type, so sorting never compares str with int
    keys[missing] = [f"\0singleton:{i}" for i in np.flatnonzero(missing)]
    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.int64), len(uniques)


def resample_counts(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each cluster is drawn in each resample (G draws with replacement from G clusters).

    Both the vectorised bootstrap and any reference implementation consume these same draws.

    Returns:
        [n_resamples, n_clusters] int32 counts; every row sums to n_clusters.
    """
    out = np.empty((n_resamples, n_clusters), dtype=np.int32)
    for start in range(0, n_resamples, BLOCK):
        stop = min(start + BLOCK, n_resamples)
        draws = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        flat = draws + (np.arange(stop - start) * n_clusters)[:, None]
        out[start:stop] = np.bincount(flat.ravel(), minlength=(stop - start) * n_clusters).reshape(-1, n_clusters)
    return out


def image_weights(counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-sample weights of resamples: each sample weighs as much as its cluster was drawn.

    Args:
        counts: [B, G] cluster draw counts from `resample_counts`.
        codes: [N] cluster code of each sample.

    Returns:
        [B, N] weights (same dtype as counts).
    """
    return counts[:, codes]


def cluster_bootstrap(
    y_true: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | pd.Series,
    threshold: float,
    n_resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """AUROC, average precision and F1 at `threshold` over patient-level bootstrap resamples.

    Args:
        y_true: [N] 0/1 labels.
        probs: [N] predicted probabilities.
        groups: [N] cluster (patient) id of each sample.
        threshold: fixed operating point (positive when prob >= threshold).
        n_resamples: number of resamples B.
        seed: seeds `np.random.default_rng`, so equal inputs give equal resamples.

    Returns:
        {"auroc", "auprc", "f1"}, each [B] with NaN where a resample lacks a class (or F1 is undefined).
    """
    y = np.asarray(y_true).astype(bool)
    codes, n_clusters = cluster_codes(groups)
    counts = resample_counts(n_clusters, n_resamples, np.random.default_rng(seed))
    index = RankIndex(y, probs)
    auroc, auprc = np.empty(n_resamples), np.empty(n_resamples)
    ordered_codes = codes[index.order]  # one gather per block straight into the index's sample order
    for start in range(0, n_resamples, BLOCK):
        block = slice(start, min(start + BLOCK, n_resamples))
        auroc[block], auprc[block] = index.auroc_and_ap_ordered(image_weights(counts[block], ordered_codes))
    pred = np.asarray(probs) >= threshold
    per_cluster = np.stack(
        [np.bincount(codes, weights=m, minlength=n_clusters) for m in (y & pred, ~y & pred, y & ~pred)], axis=1
    )  # [G, 3] tp, fp, fn per patient
    tp, fp, fn = (counts @ per_cluster).T
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return {"auroc": auroc, "auprc": auprc, "f1": f1}


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring undefined (NaN) ones.

    Returns:
        (low, high); (NaN, NaN) when fewer than two replicates are defined.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)
