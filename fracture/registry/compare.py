"""Paired comparison of a candidate with the champion on the same test predictions, pure.

Two versions are compared only when they were evaluated on the same test set: equal splits hash, manifest hash
and test-set fingerprint (a hash of the sorted test image ids and labels). The comparison is then paired: both
versions' test predictions are joined on image_id and the patient clusters are resampled with the same draws
for both models, so the CI of the AUROC difference (candidate - champion) reflects the correlation between the
two models' errors. DeLong's test for two correlated AUROCs is a cross-check; it treats images as independent,
which images of one patient are not, so the cluster bootstrap CI is what the gate uses.
"""

from __future__ import annotations

import hashlib
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.config import PromoteParams
from fracture.registry.names import TEST_SET_TAG
from fracture.stats.bootstrap import Resamples, cluster_codes, draw_resamples, percentile_interval, ranking_replicates
from fracture.stats.metrics import auroc

TEST_COLUMNS = ("image_id", "label", "prob", "cluster_id")
SAME_TEST_SET_KEYS = ("splits_hash", "manifest_hash", TEST_SET_TAG)
DELONG_NOTE = "DeLong treats images as independent (images of one patient are not): a cross-check only"
_EPS = 1e-9  # as gate._EPS: a bound exactly at the limit passes
# paired_comparison key -> `comparison.*` tag name
_PAIRED_FLOAT_TAGS = {
    "diff": "auroc_diff",
    "ci_low": "auroc_diff_ci_low",
    "ci_high": "auroc_diff_ci_high",
    "level": "ci_level",
    "delong_p": "delong_p",
    "delong_z": "delong_z",
    "auroc_candidate": "auroc_candidate",
    "auroc_champion": "auroc_champion",
}


def extract_test_rows(predictions: pd.DataFrame, source: str) -> pd.DataFrame:
    """The test rows of evaluate's predictions.parquet, reduced to what a comparison needs, sorted by image_id.

    Args:
        predictions: predictions.parquet (image_id, split, label, prob, cluster_id, ...); a frame without
            `split` is taken as test rows only.
        source: where it came from, for the error messages.

    Returns:
        image_id (str), label (int8, 0/1), prob (float64), cluster_id (string; missing ids stay missing and
        are bootstrapped as singletons).

    Raises:
        InputError: a column is missing, no test rows, an image_id repeats, a label is not 0/1 or a prob is not
            finite.
    """
    missing = [c for c in TEST_COLUMNS if c not in predictions.columns]
    if missing:
        raise InputError(f"{source}: missing columns {', '.join(missing)}")
    rows = predictions if "split" not in predictions.columns else predictions[predictions["split"] == "test"]
    if rows.empty:
        raise InputError(f"{source}: no test rows")
    if rows["image_id"].duplicated().any():
        raise InputError(f"{source}: image_id repeats among the test rows")
    labels = pd.to_numeric(rows["label"], errors="coerce")
    probs = pd.to_numeric(rows["prob"], errors="coerce").astype("float64")
    if not labels.isin((0, 1)).all() or not np.isfinite(probs.to_numpy()).all():
        raise InputError(f"{source}: test labels must be 0/1 and probabilities finite")
    out = pd.DataFrame(
        {
            "image_id": rows["image_id"].astype(str).to_numpy(),
            "label": labels.astype("int8").to_numpy(),
            "prob": probs.to_numpy(),
            "cluster_id": rows["cluster_id"].astype("string").to_numpy(),
        }
    )
    if "pred" in rows.columns:  # the decision at the version's own locked threshold (evaluate's predictions)
        out["pred"] = pd.to_numeric(rows["pred"], errors="coerce").fillna(0).astype("int8").to_numpy()
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)


def fingerprint_test_set(test: pd.DataFrame) -> str:
    """sha256 over the sorted `image_id<TAB>label` lines of the test rows: which images, with which labels."""
    rows = test.sort_values("image_id", kind="stable")
    lines = (rows["image_id"].astype(str) + "\t" + rows["label"].astype(int).astype(str)).str.cat(sep="\n")
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def tags_of_test_set(test: pd.DataFrame) -> dict[str, str]:
    """The version tags that name a test set: its fingerprint, images and clusters (missing ids: singletons)."""
    return {
        TEST_SET_TAG: fingerprint_test_set(test),
        "test.n_images": str(len(test)),
        "test.n_clusters": str(cluster_codes(test["cluster_id"])[1]),
    }


def differing_test_set(candidate: dict[str, str], champion: dict[str, str]) -> list[str]:
    """Why two versions' tags do not show one test set (empty when they do); an unknown value is a difference."""
    out = []
    for key in SAME_TEST_SET_KEYS:
        a, b = candidate.get(key), champion.get(key)
        if not a or not b or "unknown" in (a, b):
            out.append(f"{key} unknown (candidate {(a or 'none')[:12]}, champion {(b or 'none')[:12]})")
        elif a != b:
            out.append(f"{key} differs (candidate {a[:12]}, champion {b[:12]})")
    return out


def check_allow_different(allow: bool, reason: str | None) -> None:
    """`--allow-different-test-set` must say why.

    Raises:
        InputError: the flag without a non-empty reason.
    """
    if allow and not (reason or "").strip():
        raise InputError("--allow-different-test-set needs --reason TEXT: say why (it is recorded on the version)")


def pair_predictions(candidate: pd.DataFrame, champion: pd.DataFrame) -> pd.DataFrame:
    """Join two versions' test predictions on image_id.

    Returns:
        image_id, label, cluster_id, prob_candidate, prob_champion (sorted by image_id).

    Raises:
        InputError: the two sets of images, their labels or their clusters differ.
    """
    merged = candidate.merge(champion, on="image_id", how="outer", suffixes=("_candidate", "_champion"))
    only = merged["prob_candidate"].isna() | merged["prob_champion"].isna()
    if only.any():
        raise InputError(
            f"the test predictions cover different images ({int(merged['prob_champion'].isna().sum())} only in the "
            f"candidate's, {int(merged['prob_candidate'].isna().sum())} only in the champion's)"
        )
    if (merged["label_candidate"] != merged["label_champion"]).any():
        raise InputError("the test predictions disagree on labels of the same images")
    clusters_a, clusters_b = merged["cluster_id_candidate"], merged["cluster_id_champion"]
    if not (clusters_a.fillna("\0") == clusters_b.fillna("\0")).all():
        raise InputError("the test predictions put the same images in different clusters (split re-run?)")
    out = merged.rename(columns={"label_candidate": "label", "cluster_id_candidate": "cluster_id"})
    columns = ["image_id", "label", "cluster_id", "prob_candidate", "prob_champion"]
    if {"pred_candidate", "pred_champion"} <= set(out.columns):
        columns += ["pred_candidate", "pred_champion"]
    return out[columns].sort_values("image_id", kind="stable").reset_index(drop=True)


def paired_auroc_replicates(rs: Resamples, y: np.ndarray, p_candidate: np.ndarray, p_champion: np.ndarray) -> Any:
    """[B] AUROC(candidate) - AUROC(champion) of every resample, both models on the same draws (NaN: one class)."""
    return ranking_replicates(rs, y, p_candidate)["auroc"] - ranking_replicates(rs, y, p_champion)["auroc"]


def paired_auroc_bootstrap(pairs: pd.DataFrame, n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Paired patient-cluster bootstrap of the AUROC difference (candidate - champion).

    Args:
        pairs: from `pair_predictions`.
        n_resamples: resamples B (evaluate.n_bootstrap).
        seed: seeds the draws (base.seed): equal inputs give equal intervals.
        level: CI level (evaluate.ci_level).

    Returns:
        {"auroc_candidate", "auroc_champion", "diff", "ci_low", "ci_high", "level", "n_resamples", "n_valid",
        "n_images", "n_clusters"}; the CI is the percentile interval of the defined resamples.
    """
    y = pairs["label"].to_numpy().astype(bool)
    pa, pb = pairs["prob_candidate"].to_numpy(), pairs["prob_champion"].to_numpy()
    rs = draw_resamples(pairs["cluster_id"], n_resamples, seed)
    diffs = paired_auroc_replicates(rs, y, pa, pb)
    low, high = percentile_interval(diffs, level)
    a, b = auroc(y, pa), auroc(y, pb)
    return {
        "auroc_candidate": a,
        "auroc_champion": b,
        "diff": a - b,
        "ci_low": low,
        "ci_high": high,
        "level": level,
        "n_resamples": n_resamples,
        "n_valid": int(np.isfinite(diffs).sum()),
        "n_images": int(y.size),
        "n_clusters": int(rs.counts.shape[1]),
    }


def _components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components V10 (per positive) and V01 (per negative).

    V10: the share of negatives scoring below the positive; V01: the share of positives scoring above the
    negative; ties count 1/2.
    """
    sp, sn = np.sort(pos), np.sort(neg)
    v10 = (np.searchsorted(sn, pos, side="left") + np.searchsorted(sn, pos, side="right")) / (2 * neg.size)
    v01 = (2 * pos.size - np.searchsorted(sp, neg, side="left") - np.searchsorted(sp, neg, side="right")) / (
        2 * pos.size
    )
    return v10, v01


def delong_paired(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of AUROC(a) = AUROC(b) for two models scored on the same images (DeLong et al. 1988).

    Var(A - B) = c' (S10 / m + S01 / n) c with c = (1, -1), S10 / S01 the covariance matrices of the two models'
    structural components over the m positives / n negatives. Images are taken as independent.

    Returns:
        {"auroc_a", "auroc_b", "diff", "se", "z", "p"} (two-sided p); se, z, p are NaN with fewer than two
        positives or negatives.
    """
    y = np.asarray(y).astype(bool)
    scores = [np.asarray(p, dtype=np.float64) for p in (p_a, p_b)]
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return {"auroc_a": nan, "auroc_b": nan, "diff": nan, "se": nan, "z": nan, "p": nan}
    comps = [_components(s[y], s[~y]) for s in scores]
    v10, v01 = np.stack([c[0] for c in comps]), np.stack([c[1] for c in comps])  # [2, m], [2, n]
    aucs = v10.mean(axis=1)
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-300:  # identical rankings: no evidence of a difference
        z, p = (0.0, 1.0) if abs(diff) < _EPS else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / math.sqrt(var)
        p = 2 * NormalDist().cdf(-abs(z))
    se = math.sqrt(max(var, 0.0))
    return {"auroc_a": float(aucs[0]), "auroc_b": float(aucs[1]), "diff": diff, "se": se, "z": z, "p": p}


def paired_rate_differences(pairs: pd.DataFrame, n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Paired cluster-bootstrap differences (candidate - champion) of sensitivity and specificity.

    Each model at its own locked threshold (the `pred` columns), on the same draws as the AUROC difference.

    Returns:
        {"sens_diff", "sens_diff_ci_low", "sens_diff_ci_high", "sens_sdd", "spec_diff", ...}; `*_sdd` is the
        smallest difference this test set detects with 80 % power at the CI's level ((z_a + z_0.8) x bootstrap SE);
        {} when the predictions carry no `pred` columns.
    """
    if "pred_candidate" not in pairs.columns:
        return {}
    y = pairs["label"].to_numpy().astype(bool)
    pc, pb = pairs["pred_candidate"].to_numpy().astype(bool), pairs["pred_champion"].to_numpy().astype(bool)
    rs = draw_resamples(pairs["cluster_id"], n_resamples, seed)
    sums = rs.sums(np.stack([y & pc, y & pb, y, ~y & ~pc, ~y & ~pb, ~y], axis=1))  # [B, 6]
    z = NormalDist().inv_cdf(0.5 + level / 2) + NormalDist().inv_cdf(0.8)
    out: dict[str, Any] = {}
    for name, (a, b, n) in {"sens": (0, 1, 2), "spec": (3, 4, 5)}.items():
        mask = y if name == "sens" else ~y
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (sums[:, a] - sums[:, b]) / sums[:, n]
        low, high = percentile_interval(reps, level)
        own = pc if name == "sens" else ~pc
        champ = pb if name == "sens" else ~pb
        finite = reps[np.isfinite(reps)]
        se = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
        out.update({f"{name}_diff": float(own[mask].mean() - champ[mask].mean()) if mask.any() else float("nan"),
                    f"{name}_diff_ci_low": low, f"{name}_diff_ci_high": high, f"{name}_sdd": z * se,
                    f"{name}_candidate": float(own[mask].mean()) if mask.any() else float("nan"),
                    f"{name}_champion": float(champ[mask].mean()) if mask.any() else float("nan")})  # fmt: skip
    return out


def paired_comparison(pairs: pd.DataFrame, n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """The paired bootstrap of the AUROC difference with DeLong's test beside it (keys `delong_*`).

    Also the paired sensitivity and specificity differences at each model's locked threshold
    (`paired_rate_differences`).
    """
    out = paired_auroc_bootstrap(pairs, n_resamples, seed, level)
    out.update(paired_rate_differences(pairs, n_resamples, seed, level))
    y = pairs["label"].to_numpy()
    dl = delong_paired(y, pairs["prob_candidate"].to_numpy(), pairs["prob_champion"].to_numpy())
    out.update({"delong_se": dl["se"], "delong_z": dl["z"], "delong_p": dl["p"]})
    return out


def _row(name: str, candidate: Any, champion: Any, limit: Any, passed: bool | None, why: str = "") -> dict:
    return {"check": name, "candidate": candidate, "champion": champion, "limit": limit, "passed": passed, "why": why}


def same_test_set_check(evidence: dict, versions: tuple[str, str | None]) -> dict:
    """The gate row: same test set, or an allowed (recorded) difference, or a refusal."""
    cand_v, champ_v = versions
    diffs = evidence["test_set_differences"]
    name = "same test set (splits, manifest, test images)"
    if not diffs:
        return _row(name, "same", "same", "same", True)
    if evidence.get("allowed_different"):
        why = f"allowed: {evidence.get('reason')}"
        return _row(f"{name}: DIFFERENT, {why}", "different", "different", "same", None)
    why = (
        f"candidate v{cand_v} and champion v{champ_v} were not evaluated on the same test set "
        f"({'; '.join(diffs)}); evaluate both on one test set, or --allow-different-test-set --reason"
    )
    return _row(name, "different", "different", "same", False, why)


def paired_checks(evidence: dict, promote: PromoteParams, versions: tuple[str, str | None]) -> list[dict]:
    """The paired AUROC-difference gate row and its information rows (empty on different test sets)."""
    if evidence["test_set_differences"]:
        return []
    cand_v, champ_v = versions
    pc = evidence.get("paired")
    limit = -promote.max_auroc_drop
    name = "paired AUROC diff (cand - champ), CI low >= -max_auroc_drop"
    if pc is None:
        why = f"no paired comparison of v{cand_v} with v{champ_v}: {evidence.get('paired_error')}"
        return [_row(name, None, None, limit, False, why)]
    low, high, pct = pc["ci_low"], pc["ci_high"], round(100 * pc["level"])
    passed = bool(np.isfinite(low)) and low + _EPS >= limit
    why = (
        f"paired AUROC difference v{cand_v} - v{champ_v} = {pc['diff']:+.4f}, {pct}% cluster-bootstrap CI "
        f"[{low:+.4f}, {high:+.4f}] ({pc['n_images']} images, {pc['n_clusters']} clusters, {pc['n_valid']}/"
        f"{pc['n_resamples']} valid resamples): lower bound below -max_auroc_drop {limit:+.4f}; "
        f"DeLong p {pc['delong_p']:.3g}"
    )
    return [
        _row(name, f"{pc['diff']:+.4f} [{low:+.4f}, {high:+.4f}]", None, limit, passed, why),
        *rate_rows(pc, promote, versions),
        _row("AUROC on the paired test images", pc["auroc_candidate"], pc["auroc_champion"], None, None),
        _row(f"DeLong p ({DELONG_NOTE})", f"{pc['delong_p']:.3g}", None, None, None),
        _row("paired images / clusters", f"{pc['n_images']} / {pc['n_clusters']}", None, None, None),
    ]


def rate_rows(pc: dict, promote: PromoteParams, versions: tuple[str, str | None]) -> list[dict]:
    """Non-inferiority rows of sensitivity and specificity at each model's locked threshold (paired CIs).

    With the smallest detectable difference, so that "not shown worse" is never read as "shown not worse".
    """
    if "sens_diff" not in pc:
        return [_row("paired sensitivity / specificity diff: predictions carry no locked decisions (pred)", None,
                     None, None, None)]  # fmt: skip
    rows = []
    for key, label, margin in (("sens", "sensitivity", promote.max_sensitivity_drop),
                               ("spec", "specificity", promote.max_specificity_drop)):  # fmt: skip
        low, high, diff = pc[f"{key}_diff_ci_low"], pc[f"{key}_diff_ci_high"], pc[f"{key}_diff"]
        passed = bool(np.isfinite(low)) and low + _EPS >= -margin
        why = (f"paired {label} difference v{versions[0]} - v{versions[1]} at each model's locked threshold = "
               f"{diff:+.4f}, CI [{low:+.4f}, {high:+.4f}]: lower bound below the non-inferiority margin "
               f"-{margin:.4f} (register.promote.max_{label}_drop)")  # fmt: skip
        rows.append(_row(f"paired {label} diff (cand - champ), CI low >= -max_{label}_drop",
                         f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]", None, -margin, passed, why))  # fmt: skip
        rows.append(_row(f"{label} at the locked thresholds", pc[f"{key}_candidate"], pc[f"{key}_champion"], None,
                         None))  # fmt: skip
        rows.append(_row(f"smallest detectable {label} difference (80 % power)", pc[f"{key}_sdd"], None, None,
                         None))  # fmt: skip
    return rows


def reuse_check(evidence: dict, max_decisions: int | None = None) -> list[dict]:
    """The test-set budget rows: versions evaluated on the candidate's test set, and its promotion decisions.

    The reuse row is information; the decisions row gates against `register.promote.max_test_reuse`.

    Every decision on one test set selects on its noise (ten equal candidates inflate the winner's AUROC), so past
    the budget promotion refuses until a new sealed test set is registered, or --force --reason.
    """
    rows = []
    reuse = evidence.get("test_set_reuse")
    if reuse is not None:
        rows.append(_row("registered versions evaluated on this test set (reuse)", str(reuse), None, None, None))
    decisions = evidence.get("promotion_decisions")
    if decisions is not None and max_decisions is not None:
        ok = decisions < max_decisions
        why = (f"the test set has supported {decisions} promotion decisions (register.promote.max_test_reuse "
               f"{max_decisions}): register a new sealed test set, or --force --reason")  # fmt: skip
        rows.append(_row("promotion decisions on this test set (budget)", decisions, None, max_decisions, ok, why))
    return rows


def comparison_tags(evidence: dict, comparison: dict, at: str) -> dict[str, str]:
    """The `comparison.*` version tags: the paired numbers, the test-set decision and reuse, who it was against."""
    tags = {
        "comparison.at": at,
        "comparison.champion_version": str(comparison["champion_version"] or "none"),
        "comparison.passed": "true" if comparison["passed"] else "false",
    }
    if evidence.get("test_set_reuse") is not None:
        tags["comparison.test_set_reuse"] = str(evidence["test_set_reuse"])
    if evidence.get("promotion_decisions") is not None:
        tags["comparison.promotion_decisions"] = str(evidence["promotion_decisions"])
    if comparison["champion_version"] is None:
        return tags
    diffs = evidence["test_set_differences"]
    tags["comparison.same_test_set"] = "false" if diffs else "true"
    if diffs:
        tags["comparison.test_set_differences"] = "; ".join(diffs)[:5000]
    if diffs and evidence.get("allowed_different"):
        tags["comparison.allowed_different_test_set"] = "true"
        tags["comparison.different_test_set_reason"] = str(evidence.get("reason") or "").strip()[:5000]
    pc = evidence.get("paired")
    if pc is not None:
        tags.update({f"comparison.{tag}": repr(float(pc[key])) for key, tag in _PAIRED_FLOAT_TAGS.items()})
        rates = (
            "sens_diff",
            "sens_diff_ci_low",
            "sens_diff_ci_high",
            "spec_diff",
            "spec_diff_ci_low",
            "spec_diff_ci_high",
        )
        tags.update({f"comparison.{key}": repr(float(pc[key])) for key in rates if key in pc})
        tags.update({f"comparison.{k}": str(pc[k]) for k in ("n_images", "n_clusters", "n_resamples", "n_valid")})
    elif evidence.get("paired_error"):
        tags["comparison.paired_error"] = str(evidence["paired_error"])[:5000]
    return tags
