"""Promotion compares like with like: one test set, a paired cluster-bootstrap CI of the AUROC difference, DeLong."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.config import PromoteParams
from fracture.registry.compare import (
    check_allow_different,
    comparison_tags,
    delong_paired,
    differing_test_set,
    extract_test_rows,
    fingerprint_test_set,
    pair_predictions,
    paired_auroc_bootstrap,
    paired_comparison,
)
from fracture.registry.gate import compare_versions, format_comparison
from fracture.stats.bootstrap import BLOCK

PROMOTE = PromoteParams(
    max_auroc_drop=0.01,
    min_sensitivity=0.6,
    require_review=False,
    max_test_reuse=20,
    max_sensitivity_drop=0.05,
    max_specificity_drop=0.05,
)
SAME = {"splits_hash": "s" * 64, "manifest_hash": "m" * 64, "test_set_fingerprint": "f" * 64}


def _tags(auroc: float, **extra: str) -> dict[str, str]:
    return {"test.auroc": repr(auroc), "test.frozen.sensitivity": "0.8", "gate.passed": "true", **SAME, **extra}


def _clustered(n_clusters: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Paired predictions: 1-4 images per patient, a patient effect on both models' scores, rounded (ties)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_clusters)
    cluster = np.repeat(np.arange(n_clusters), sizes)
    label = (rng.random(n_clusters) < 0.45)[cluster].astype(np.int8)
    label[rng.random(label.size) < 0.15] ^= 1  # a few views disagree with their patient
    patient = rng.normal(0, 0.8, n_clusters)[cluster]
    common = label * 1.2 + patient + rng.normal(0, 1, label.size)
    champ = 1 / (1 + np.exp(-(common + rng.normal(0, 0.5, label.size))))
    cand = 1 / (1 + np.exp(-(common + shift * label + rng.normal(0, 0.5, label.size))))
    return pd.DataFrame(
        {
            "image_id": [f"img{i:04d}" for i in range(label.size)],
            "label": label,
            "cluster_id": [f"p{c:03d}" for c in cluster],
            "prob_candidate": np.round(cand, 2),
            "prob_champion": np.round(champ, 2),
        }
    )


def _naive_auroc(y: list[int], p: list[float]) -> float:
    pos = [s for s, t in zip(p, y, strict=True) if t == 1]
    neg = [s for s, t in zip(p, y, strict=True) if t == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_paired_ci_matches_a_slow_reference_loop_over_the_same_draws():
    pairs = _clustered(n_clusters=25, seed=3, shift=0.3)
    n_resamples, seed, level = 120, 11, 0.9
    assert n_resamples <= BLOCK  # resample_counts draws one (B, G) block: the reference repeats that draw
    out = paired_auroc_bootstrap(pairs, n_resamples, seed, level)
    clusters = sorted(pairs["cluster_id"].unique())
    draws = np.random.default_rng(seed).integers(0, len(clusters), size=(n_resamples, len(clusters)))
    rows_of = {c: pairs.index[pairs["cluster_id"] == c].tolist() for c in clusters}
    diffs = []
    for draw in draws:  # explicit loop: every drawn patient brings all its images, once per draw
        rows = [r for g in draw for r in rows_of[clusters[g]]]
        y = pairs.loc[rows, "label"].tolist()
        diffs.append(
            _naive_auroc(y, pairs.loc[rows, "prob_candidate"].tolist())
            - _naive_auroc(y, pairs.loc[rows, "prob_champion"].tolist())
        )
    finite = np.array([d for d in diffs if math.isfinite(d)])
    ref_low, ref_high = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    assert out["n_valid"] == finite.size and out["n_clusters"] == 25 and out["n_images"] == len(pairs)
    assert out["ci_low"] == pytest.approx(ref_low, abs=1e-9) and out["ci_high"] == pytest.approx(ref_high, abs=1e-9)
    y = pairs["label"].tolist()
    point = _naive_auroc(y, pairs["prob_candidate"].tolist()) - _naive_auroc(y, pairs["prob_champion"].tolist())
    assert out["diff"] == pytest.approx(point, abs=1e-12)
    assert out["ci_low"] < out["diff"] < out["ci_high"]


def test_pairing_narrows_the_interval_of_correlated_models():
    """Same draws for both models: the CI of the difference is narrower than from independent draws."""
    pairs = _clustered(n_clusters=120, seed=5, shift=0.2)
    paired = paired_auroc_bootstrap(pairs, 300, 1, 0.95)
    a = paired_auroc_bootstrap(pairs.assign(prob_champion=0.5), 300, 1, 0.95)  # candidate AUROC - 0.5
    b = paired_auroc_bootstrap(pairs.assign(prob_candidate=pairs["prob_champion"], prob_champion=0.5), 300, 2, 0.95)
    unpaired_width = math.hypot(a["ci_high"] - a["ci_low"], b["ci_high"] - b["ci_low"])  # independent draws
    assert paired["ci_high"] - paired["ci_low"] < 0.6 * unpaired_width


def _naive_delong(y: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> tuple[float, float]:
    """Structural components by the double loop of DeLong et al. (1988): psi(X, Y) = 1, 1/2, 0."""
    comps10, comps01 = [], []
    for p in (pa, pb):
        pos, neg = p[y == 1], p[y == 0]
        psi = np.array([[1.0 if x > v else 0.5 if x == v else 0.0 for v in neg] for x in pos])
        comps10.append(psi.mean(axis=1))
        comps01.append(psi.mean(axis=0))
    m, n = len(comps10[0]), len(comps01[0])
    s10, s01 = np.cov(np.array(comps10)), np.cov(np.array(comps01))
    c = np.array([1.0, -1.0])
    var = c @ (s10 / m + s01 / n) @ c
    diff = comps10[0].mean() - comps10[1].mean()
    return diff, math.sqrt(var)


def test_delong_matches_a_hand_computed_example():
    # a: positives 0.9, 0.4; negatives 0.5, 0.1 -> AUROC 3/4, V10 = (1, 1/2), V01 = (1/2, 1)
    # b: positives 0.8, 0.6; negatives 0.3, 0.2 -> AUROC 1,   V10 = (1, 1),   V01 = (1, 1)
    # Var(A - B) = var(1, 1/2) / 2 + var(1/2, 1) / 2 = 0.125 / 2 + 0.125 / 2 = 0.125 (b's components are constant)
    y = np.array([1, 1, 0, 0])
    out = delong_paired(y, np.array([0.9, 0.4, 0.5, 0.1]), np.array([0.8, 0.6, 0.3, 0.2]))
    z = -0.25 / math.sqrt(0.125)
    assert (out["auroc_a"], out["auroc_b"], out["diff"]) == (0.75, 1.0, -0.25)
    assert out["se"] == pytest.approx(math.sqrt(0.125), abs=1e-15) and out["z"] == pytest.approx(z, abs=1e-12)
    assert out["p"] == pytest.approx(2 * NormalDist().cdf(z), abs=1e-12)
    assert out["p"] == pytest.approx(0.4795, abs=1e-4)


def test_delong_matches_the_naive_structural_components_with_ties():
    pairs = _clustered(n_clusters=40, seed=8, shift=0.4)
    y = pairs["label"].to_numpy()
    pa, pb = pairs["prob_candidate"].to_numpy(), pairs["prob_champion"].to_numpy()
    assert len(np.unique(pa)) < len(pa)  # rounded scores: ties are exercised
    out = delong_paired(y, pa, pb)
    diff, se = _naive_delong(y, pa, pb)
    assert out["diff"] == pytest.approx(diff, abs=1e-12) and out["se"] == pytest.approx(se, abs=1e-12)
    assert out["p"] == pytest.approx(2 * NormalDist().cdf(-abs(diff / se)), abs=1e-12)
    same = delong_paired(y, pa, pa)
    assert (same["diff"], same["p"]) == (0.0, 1.0)
    assert math.isnan(delong_paired(np.array([1, 0, 0]), pa[:3], pb[:3])["p"])  # one positive: no variance


def _evidence(pairs: pd.DataFrame | None, differences: list[str] | None = None, **extra) -> dict:
    paired = None if pairs is None else paired_comparison(pairs, 400, 0, 0.95)
    return {"test_set_differences": differences or [], "paired": paired, "test_set_reuse": 3, **extra}


def test_a_candidate_whose_ci_lower_bound_is_below_the_allowed_drop_is_refused_with_the_numbers():
    pairs = _clustered(n_clusters=80, seed=12, shift=-0.6)  # the candidate ranks positives worse
    ev = _evidence(pairs)
    pc = ev["paired"]
    assert pc["ci_low"] < -PROMOTE.max_auroc_drop
    cmp = compare_versions(_tags(0.8), _tags(0.85), PROMOTE, ("7", "6"), ev)
    assert not cmp["passed"] and len(cmp["reasons"]) == 1
    reason = cmp["reasons"][0]
    assert f"v7 - v6 = {pc['diff']:+.4f}" in reason and f"[{pc['ci_low']:+.4f}, {pc['ci_high']:+.4f}]" in reason
    assert "-max_auroc_drop -0.0100" in reason and f"DeLong p {pc['delong_p']:.3g}" in reason
    assert "80 clusters" in reason and f"{len(pairs)} images" in reason
    table = format_comparison(cmp)
    assert "paired AUROC diff" in table and "FAIL" in table and "DeLong" in table and "independent" in table
    assert "reuse" in table and json.dumps(cmp)  # stored as a tag: must serialise


def test_the_paired_ci_not_the_point_tags_decides():
    pairs = _clustered(n_clusters=150, seed=21, shift=0.0)
    pairs["prob_candidate"] = pairs["prob_champion"]  # the same model re-registered: difference exactly 0
    cmp = compare_versions(_tags(0.70), _tags(0.85), PROMOTE, ("2", "1"), _evidence(pairs))
    assert cmp["passed"], cmp["reasons"]  # the tags' point drop (0.15) is not what is compared
    assert cmp["paired"]["ci_low"] == 0.0 and cmp["paired"]["delong_p"] == 1.0


def test_a_candidate_evaluated_on_another_split_is_refused_unless_allowed():
    cand = _tags(0.86, splits_hash="t" * 64)
    differences = differing_test_set(cand, _tags(0.85))
    assert differences == [f"splits_hash differs (candidate {'t' * 12}, champion {'s' * 12})"]
    refused = compare_versions(cand, _tags(0.85), PROMOTE, ("3", "2"), _evidence(None, differences))
    assert not refused["passed"] and len(refused["reasons"]) == 1
    assert "were not evaluated on the same test set" in refused["reasons"][0]
    assert "--allow-different-test-set --reason" in refused["reasons"][0]
    allowed = _evidence(None, differences, allowed_different=True, reason="new hospital test set")
    ok = compare_versions(cand, _tags(0.85), PROMOTE, ("3", "2"), allowed)
    assert ok["passed"], ok["reasons"]
    table = format_comparison(ok)
    assert "DIFFERENT, allowed: new hospital test set" in table and "unpaired: different test sets" in table
    worse = compare_versions(_tags(0.80, splits_hash="t" * 64), _tags(0.85), PROMOTE, ("3", "2"), allowed)
    assert not worse["passed"] and "below champion v2" in worse["reasons"][0]  # the point drop still applies
    tags = comparison_tags(allowed, ok, "2026-12-01T00:00:00+00:00")
    assert tags["comparison.allowed_different_test_set"] == "true" and tags["comparison.same_test_set"] == "false"
    assert tags["comparison.different_test_set_reason"] == "new hospital test set"
    assert "splits_hash differs" in tags["comparison.test_set_differences"]


def test_unknown_lineage_is_not_the_same_test_set_and_allowing_needs_a_reason():
    legacy = {k: v for k, v in _tags(0.85).items() if k != "test_set_fingerprint"}
    expected = f"test_set_fingerprint unknown (candidate none, champion {'f' * 12})"
    assert differing_test_set(legacy, _tags(0.85)) == [expected]
    assert differing_test_set(_tags(0.85, manifest_hash="unknown"), _tags(0.85, manifest_hash="unknown"))
    with pytest.raises(InputError, match="--allow-different-test-set needs --reason"):
        check_allow_different(True, "  ")
    check_allow_different(False, None)


def test_missing_paired_evidence_refuses():
    ev = _evidence(None, paired_error="version 1 has no test_predictions evidence")
    cmp = compare_versions(_tags(0.9), _tags(0.85), PROMOTE, ("2", "1"), ev)
    assert not cmp["passed"] and "no paired comparison of v2 with v1: version 1 has no" in cmp["reasons"][0]


def test_comparison_tags_record_the_paired_numbers_and_reuse():
    pairs = _clustered(n_clusters=60, seed=4, shift=0.5)
    ev = _evidence(pairs)
    cmp = compare_versions(_tags(0.9), _tags(0.85), PROMOTE, ("5", "4"), ev)
    tags = comparison_tags(ev, cmp, "2026-12-01T00:00:00+00:00")
    pc = ev["paired"]
    assert float(tags["comparison.auroc_diff"]) == pc["diff"] and float(tags["comparison.delong_p"]) == pc["delong_p"]
    assert float(tags["comparison.auroc_diff_ci_low"]) == pc["ci_low"]
    assert tags["comparison.n_images"] == str(len(pairs)) and tags["comparison.n_clusters"] == "60"
    assert tags["comparison.test_set_reuse"] == "3" and tags["comparison.champion_version"] == "4"
    assert tags["comparison.passed"] == ("true" if cmp["passed"] else "false")
    first = comparison_tags({"test_set_reuse": 1}, compare_versions(_tags(0.9), None, PROMOTE, ("1", None), {}), "t")
    assert first == {"comparison.at": "t", "comparison.champion_version": "none", "comparison.passed": "true",
                     "comparison.test_set_reuse": "1"}  # fmt: skip


def _rows(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "split": ["test"] * (n - 1) + ["val"],
            "label": [1, 0] * (n // 2),
            "prob": np.linspace(0.1, 0.9, n),
            "cluster_id": [f"p{k // 2}" for k in range(n)],
            "age": 30,
        }
    )


def test_test_rows_and_fingerprint():
    rows = extract_test_rows(_rows(), "preds")
    assert list(rows.columns) == ["image_id", "label", "prob", "cluster_id"] and len(rows) == 5  # val row dropped
    shuffled = extract_test_rows(_rows().sample(frac=1, random_state=0), "preds")
    assert fingerprint_test_set(shuffled) == fingerprint_test_set(rows)  # order does not matter
    flipped = rows.assign(label=rows["label"].where(rows.index != 0, 1 - rows["label"]))
    assert fingerprint_test_set(flipped) != fingerprint_test_set(rows)  # labels do
    assert fingerprint_test_set(rows.iloc[1:]) != fingerprint_test_set(rows)
    with pytest.raises(InputError, match="preds: missing columns cluster_id"):
        extract_test_rows(_rows().drop(columns="cluster_id"), "preds")
    with pytest.raises(InputError, match="image_id repeats"):
        extract_test_rows(pd.concat([_rows(), _rows()]), "preds")
    with pytest.raises(InputError, match="no test rows"):
        extract_test_rows(_rows().assign(split="val"), "preds")


def test_pairing_needs_the_same_images_labels_and_clusters():
    rows = extract_test_rows(_rows(), "preds")
    pairs = pair_predictions(rows, rows.assign(prob=1 - rows["prob"]))
    assert pairs["prob_champion"].tolist() == pytest.approx((1 - rows["prob"]).tolist())
    with pytest.raises(InputError, match="1 only in the candidate's, 0 only in the champion's"):
        pair_predictions(rows, rows.iloc[1:])
    with pytest.raises(InputError, match="disagree on labels"):
        pair_predictions(rows, rows.assign(label=1 - rows["label"]))
    with pytest.raises(InputError, match="different clusters"):
        pair_predictions(rows, rows.assign(cluster_id="one"))


def test_the_test_set_budget_refuses_past_max_test_reuse():
    """Every promotion decision on one test set selects on its noise: past the budget, a new sealed test set."""
    within = compare_versions(_tags(0.85), None, PROMOTE, ("2", None), {"promotion_decisions": 19})
    assert within["passed"], within["reasons"]
    spent = compare_versions(_tags(0.85), None, PROMOTE, ("2", None), {"promotion_decisions": 20})
    assert (
        not spent["passed"]
        and "supported 20 promotion decisions (register.promote.max_test_reuse 20)" in (spent["reasons"][0])
    )
    assert "promotion decisions on this test set (budget)" in format_comparison(spent)


def _operating_point_pairs(sens_candidate: float, sens_champion: float, n: int = 200) -> pd.DataFrame:
    """Paired test rows of two models with the same scores (equal AUROC) but their own locked thresholds."""
    rng = np.random.default_rng(9)
    y = np.arange(n) % 2
    prob = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.15, n), 0, 1)
    pos_rank = pd.Series(prob).where(y == 1).rank(ascending=False)  # 1 = highest-scoring positive

    def pred(sens: float) -> np.ndarray:
        return (prob >= np.sort(prob[y == 1])[::-1][int(round(sens * (y == 1).sum())) - 1]).astype("int8")

    assert pos_rank.notna().sum() == n // 2
    return pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": y.astype("int8"),
                         "cluster_id": pd.array([f"p{i}" for i in range(n)], dtype="string"),
                         "prob_candidate": prob, "prob_champion": prob,
                         "pred_candidate": pred(sens_candidate), "pred_champion": pred(sens_champion)})  # fmt: skip


def test_promotion_refuses_a_candidate_that_loses_sensitivity_at_equal_auroc():
    """Regression: a candidate with sensitivity 0.61 at its locked threshold replaced a champion with 0.95, because
    the AUROC difference was about 0 and the candidate's own point sensitivity cleared min_sensitivity."""
    from fracture.registry.compare import paired_comparison

    pairs = _operating_point_pairs(0.61, 0.95)
    paired = paired_comparison(pairs, 300, 0, 0.95)
    assert paired["diff"] == 0 and paired["sens_diff"] == pytest.approx(0.61 - 0.95)
    evidence = {"test_set_differences": [], "paired": paired}
    cmp = compare_versions(_tags(0.85), _tags(0.85), PROMOTE, ("2", "1"), evidence)
    assert not cmp["passed"] and len(cmp["reasons"]) == 1
    assert cmp["reasons"][0].startswith("paired sensitivity difference v2 - v1 at each model's locked threshold")
    table = format_comparison(cmp)
    assert "smallest detectable sensitivity difference (80 % power)" in table
    same = paired_comparison(_operating_point_pairs(0.95, 0.95), 300, 0, 0.95)
    assert compare_versions(_tags(0.85), _tags(0.85), PROMOTE, ("2", "1"),
                            {"test_set_differences": [], "paired": same})["passed"]  # fmt: skip
