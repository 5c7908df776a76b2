"""Benchmark 4: patient-level bootstrap CIs (2,000 resamples, 32,700 predictions, ~6,000 patients) vs a plain loop.

Product: `fracture.evaluate.bootstrap_cis` (what evaluate runs: `fracture.stats.bootstrap.cluster_bootstrap`, vectorised
over resamples, then percentile intervals) for AUROC, AUPRC and F1 at a fixed threshold.
Baseline: the straightforward per-resample loop: draw patients with replacement, gather their images, score with
scikit-learn (`roc_auc_score`, `average_precision_score`, `f1_score`). The loop is timed on 100 resamples and
extrapolated linearly to 2,000 (said so in the result); on its first resamples it uses the very same patient
draws as the product, and the result reports how closely the two agree there.
Targets: >= 10x faster than the loop, and under 10 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import Target, alternate, check, demo_params, make_result, median, spread

NAME = "bootstrap"
FULL = {"predictions": 32_700, "patients": 6_000, "resamples": 2_000, "loop_resamples": 100, "reps": 3}
QUICK = {"predictions": 600, "patients": 150, "resamples": 50, "loop_resamples": 10, "reps": 1}
THRESHOLD = 0.5
SEED = 42


def synthetic_predictions(n: int, n_patients: int, seed: int = 0) -> Any:
    """A predictions table like evaluate's: label, prob (informative, AUROC about 0.9), patient_id (1 to ~11 images)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(0, n_patients, size=n))
    patient[:n_patients] = np.arange(n_patients)  # every patient has at least one image
    risk = rng.normal(size=n_patients)[patient]  # patients differ: images of one patient are correlated
    label = (rng.random(n) < 1 / (1 + np.exp(-(risk - 0.3)))).astype(np.int64)
    prob = 1 / (1 + np.exp(-(1.8 * (label - 0.5) + 0.6 * risk + rng.normal(scale=1.0, size=n))))
    return pd.DataFrame({"label": label, "prob": prob, "patient_id": [f"kaggle:{p:04d}" for p in patient]})


def loop_bootstrap(frame: Any, threshold: float, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Per-resample loop: patients drawn with replacement (first 128 draws as the product's), sklearn metrics."""
    import pandas as pd
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    codes, uniques = pd.factorize(frame["patient_id"], sort=True)
    members = pd.Series(np.arange(len(frame))).groupby(codes).apply(np.asarray).tolist()
    y, p = frame["label"].to_numpy(), frame["prob"].to_numpy()
    draws = np.random.default_rng(seed).integers(0, len(uniques), size=(n_resamples, len(uniques)))
    out = {"auroc": np.empty(n_resamples), "auprc": np.empty(n_resamples), "f1": np.empty(n_resamples)}
    for b in range(n_resamples):
        idx = np.concatenate([members[g] for g in draws[b]])
        yb, pb = y[idx], p[idx]
        out["auroc"][b] = roc_auc_score(yb, pb)
        out["auprc"][b] = average_precision_score(yb, pb)
        out["f1"][b] = f1_score(yb, pb >= threshold)
    return out


def agreement(frame: Any, n: int) -> float:
    """Max |difference| of per-resample AUROC/AUPRC/F1 between product and loop on the same first `n` draws."""
    from fracture.stats.bootstrap import BLOCK, cluster_bootstrap

    n = min(n, BLOCK)  # the product draws blocks of BLOCK resamples; the first block's draws are the loop's
    y, p, g = frame["label"].to_numpy(), frame["prob"].to_numpy(), frame["patient_id"]
    vec = cluster_bootstrap(y, p, g, THRESHOLD, n, SEED)
    ref = loop_bootstrap(frame, THRESHOLD, n, SEED)
    return float(max(np.nanmax(np.abs(vec[k] - ref[k])) for k in ref))


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds for 2,000 patient-level resamples: product (measured) vs the loop (measured on fewer, scaled)."""
    from fracture.evaluate import bootstrap_cis

    cfg = QUICK if quick else FULL
    frame = synthetic_predictions(cfg["predictions"], cfg["patients"])
    ep = demo_params({"evaluate": {"n_bootstrap": cfg["resamples"]}}).evaluate
    scale = cfg["resamples"] / cfg["loop_resamples"]
    times = alternate(
        {
            "product": lambda: bootstrap_cis(frame, THRESHOLD, ep, SEED),
            "loop": lambda: loop_bootstrap(frame, THRESHOLD, cfg["loop_resamples"], SEED),
        },
        cfg["reps"],
    )
    product_s, loop_s = median(times["product"]), median(times["loop"]) * scale
    cis = bootstrap_cis(frame, THRESHOLD, ep, SEED)
    details = {
        "predictions": len(frame),
        "patients": int(frame["patient_id"].nunique()),
        "resamples": cfg["resamples"],
        "loop_resamples_timed": cfg["loop_resamples"],
        "loop_note": f"loop timed on {cfg['loop_resamples']} resamples and scaled x{scale:g} to {cfg['resamples']}",
        "seconds": {"product": spread(times["product"]), "loop_timed": spread(times["loop"])},
        "metrics": ["auroc", "auprc", "f1"],
        "ci_example": {k: round(v, 4) for k, v in cis.items()},
        "agreement_max_abs_diff": agreement(frame, cfg["loop_resamples"]),
        "product": "fracture.evaluate.bootstrap_cis -> fracture.stats.bootstrap.cluster_bootstrap",
        "baseline": "per-resample loop: gather drawn patients' images, sklearn roc_auc / average_precision / f1",
    }
    return make_result(
        NAME,
        "seconds_2000_resamples",
        product_s,
        loop_s,
        "s",
        Target(10, text=">= 10x faster than the per-resample loop"),
        details,
        higher_is_better=False,
        checks=[check("under_10_s", product_s, Target(10, op="<=", on="value", text="under 10 s on this machine"))],
    )
