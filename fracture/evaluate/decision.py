"""The evaluation gate as a verdict: co-primary endpoints, one-sided lower bounds, and the sample size a decision needs.

Co-primary endpoints (evaluate.gate, on the pre-specified primary population of test): sensitivity and specificity
at the locked (train-frozen) threshold, with the AUROC beside them. Every check reads the one-sided lower bound of a
two-sided `ci_level` interval (`gate.primary_bound: ci_low`, so a 0.95 level gives a one-sided 97.5 % bound), or the
point estimate when `primary_bound: point`.

Bounds of sensitivity and specificity: the lower of two intervals, so that neither can overstate precision.
- the patient-cluster percentile bootstrap (fracture.evaluate.intervals);
- Clopper-Pearson on the effective number of patients: n_eff = n_images / deff, with the design effect
  deff = var_bootstrap / (p (1 - p) / n_images) observed on the cluster resamples, at least 1. When the bootstrap
  cannot estimate it (every resample gives the same proportion, p = 0 or 1, or no resamples) deff is the mean number
  of images per patient, i.e. each patient counts once. With 0 misses this gives alpha ** (1 / n_patients), so
  0 misses among 36 positive patients bound sensitivity at 0.9026 (alpha = 0.025).
A zero-width bootstrap interval (low == high) is flagged (`*_zero_width`), and the exact bound is what then decides.

Sample size (precision-based rule for sensitivity and specificity, Buderer 1996, inflated by the observed design
effect, Kish): a decision needs n0 = z^2 p (1 - p) / d^2 effective units, where d is `gate.precision` (the CI
half-width), z the two-sided `ci_level` quantile and p the gate's limit (at least 0.5: the hardest place to decide).
In patients: ceil(n0 * deff / m), m the mean images per patient of that class. Fewer positive (or negative) patients
than needed make every check of the gate `undecidable: n too small`, whatever the bounds say.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from fracture.config import EvaluateParams, GateParams
from fracture.contracts.verdict import Check, Verdict, combine
from fracture.evaluate.cohort import population_rows
from fracture.stats import bootstrap, metrics

PREFIX = "coprimary"
ENDPOINTS = ("sensitivity", "specificity")
GATE = "evaluate"
_EPS = 1e-9  # a bound exactly at the limit passes (0.85 - 0.84 > 0.01 in binary floats)


def z_two_sided(level: float) -> float:
    """The normal quantile of a two-sided `level` interval (1.96 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def clopper_pearson_low(successes: float, n: float, level: float) -> float:
    """Lower bound of the two-sided `level` Clopper-Pearson interval (one-sided (1 + level) / 2).

    Non-integer counts (effective counts after a design-effect adjustment) use the beta-quantile form.
    Returns NaN when n <= 0.
    """
    from scipy.stats import beta

    if n <= 0:
        return float("nan")
    if successes <= 0:
        return 0.0
    return float(beta.ppf((1 - level) / 2, successes, n - successes + 1))


def design_effect(reps: np.ndarray, p: float, n_images: int, images_per_patient: float) -> float:
    """Observed design effect of a proportion: bootstrap variance over the binomial variance of its images.

    At least 1; `images_per_patient` (each patient counts once) when the bootstrap cannot estimate it.
    """
    finite = np.asarray(reps, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    binomial = p * (1 - p) / n_images if n_images > 0 else 0.0
    if finite.size < 2 or binomial <= 0 or not np.var(finite) > 0:
        return max(1.0, float(images_per_patient))
    return max(1.0, float(np.var(finite, ddof=1)) / binomial)


def patients_needed(limit: float, precision: float, level: float, deff: float, images_per_patient: float) -> int:
    """Patients of one class a decision at `precision` needs (see the module docstring for the rule)."""
    p = min(max(limit, 0.5), 0.99)
    n0 = z_two_sided(level) ** 2 * p * (1 - p) / precision**2
    per_patient = max(float(images_per_patient), 1.0) / max(deff, 1.0)  # effective units per patient
    return math.ceil(n0 / per_patient - 1e-9)


def _proportion(name: str, k: int, n: int, reps: np.ndarray | None, n_patients: int, ep: EvaluateParams) -> dict:
    """One co-primary proportion: estimate, bootstrap CI, exact bound, design effect, flags, patients needed."""
    value = k / n if n else float("nan")
    m = n / n_patients if n_patients else 1.0
    low, high = bootstrap.percentile_interval(reps, ep.ci_level) if reps is not None else (np.nan, np.nan)
    deff = design_effect(reps if reps is not None else np.array([]), value, n, m) if n else float("nan")
    n_eff = n / deff if n else 0.0
    exact = clopper_pearson_low(value * n_eff, n_eff, ep.ci_level) if n else float("nan")
    limit = ep.gate.min_sensitivity if name == "sensitivity" else ep.gate.min_specificity
    needed = patients_needed(limit, ep.gate.precision, ep.ci_level, deff, m) if n else None
    bound = float(np.nanmin([low, exact])) if np.isfinite([low, exact]).any() else float("nan")
    return {
        name: value,
        f"{name}_ci_low": low,
        f"{name}_ci_high": high,
        f"{name}_exact_low": exact,
        f"{name}_bound": bound,
        f"{name}_deff": deff,
        f"{name}_n_eff": n_eff,
        f"{name}_zero_width": int(bool(np.isfinite(low) and np.isfinite(high) and high - low <= 0)),
        f"{name}_n_needed": needed,
    }


def coprimary_endpoints(test: pd.DataFrame, population: str, threshold: float, ep: EvaluateParams, seed: int) -> dict:
    """`coprimary.*` keys: sensitivity, specificity (at `threshold`) and AUROC on the primary population of test.

    `test` holds label, prob and cluster_id (the patient cluster); `population` is resolved ("all" or
    "clinically_relevant").
    """
    rows = population_rows(test, population)
    y, p = rows["label"].to_numpy().astype(bool), rows["prob"].to_numpy(np.float64)
    clusters = rows["cluster_id"].astype("string")
    pos_patients, neg_patients = int(clusters[y].nunique()), int(clusters[~y].nunique())
    rs = bootstrap.draw_resamples(clusters, ep.n_bootstrap, seed) if ep.n_bootstrap > 0 and len(rows) else None
    rates = bootstrap.rate_replicates(rs, y, p, threshold) if rs is not None else {}
    ranks = bootstrap.ranking_replicates(rs, y, p) if rs is not None and y.any() and (~y).any() else {}
    pred = p >= threshold
    out: dict = {"population": population, "threshold": float(threshold), "precision": ep.gate.precision}
    out.update({"n_images": len(rows), "n_pos_patients": pos_patients, "n_neg_patients": neg_patients})
    out.update(_proportion("sensitivity", int((y & pred).sum()), int(y.sum()), rates.get("sensitivity"),
                           pos_patients, ep))  # fmt: skip
    out.update(_proportion("specificity", int((~y & ~pred).sum()), int((~y).sum()), rates.get("specificity"),
                           neg_patients, ep))  # fmt: skip
    auroc = metrics.auroc(y, p) if y.any() and (~y).any() else float("nan")
    low, high = bootstrap.percentile_interval(ranks["auroc"], ep.ci_level) if ranks else (np.nan, np.nan)
    out.update({"auroc": auroc, "auroc_ci_low": low, "auroc_ci_high": high, "auroc_bound": low})
    out["auroc_zero_width"] = int(bool(np.isfinite(low) and np.isfinite(high) and high - low <= 0))
    return {f"{PREFIX}.{k}": v for k, v in out.items()}


def _number(values: dict, key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def sample_size_checks(values: dict) -> list[Check]:
    """Positive and negative patients observed against those the configured precision needs."""
    checks = []
    for cls, endpoint in (("pos", "sensitivity"), ("neg", "specificity")):
        observed = int(values.get(f"{PREFIX}.n_{cls}_patients") or 0)
        needed = values.get(f"{PREFIX}.{endpoint}_n_needed")
        enough = needed is not None and observed >= needed
        word = "positive" if cls == "pos" else "negative"
        precision = values.get(f"{PREFIX}.precision")
        note = "" if enough else f"n too small: {observed} {word} patients, {endpoint} at ±{precision} needs {needed}"
        checks.append(Check(f"sample_size.{word}_patients", "passed" if enough else "undecidable", observed, needed,
                            None if needed is None else int(needed), observed, note))  # fmt: skip
    return checks


def _bound_check(name: str, key: str, values: dict, limit: float, bound: str, decidable: bool) -> Check:
    """One endpoint against its limit, on its lower bound (`<key>_bound`, `primary.ci_low`) or its point estimate."""
    lower = "primary.ci_low" if key == "primary.value" else f"{key}_bound"
    read = key if bound == "point" else lower
    observed = _number(values, read)
    label = f"{name} ({'point' if bound == 'point' else 'lower bound'})"
    if not decidable:
        return Check(label, "undecidable", observed, limit, note="undecidable: n too small")
    if observed is None:
        return Check(label, "failed", None, limit, note=f"{read} is undefined")
    passed = observed + _EPS >= limit
    note = "" if passed else f"{read} {observed:.4f} < {limit}"
    return Check(label, "passed" if passed else "failed", observed, limit, note=note)


def evaluate_gate(values: dict, gate: GateParams) -> Verdict:
    """gate.json: the evaluation verdict from the flat metric values (`coprimary.*`, `primary.*`).

    Undecidable when either class has fewer patients than the precision needs; otherwise failed when any lower
    bound (or point, `primary_bound: point`) is below its limit, else passed.
    """
    size = sample_size_checks(values)
    decidable = all(c.status == "passed" for c in size)
    checks = [
        *size,
        _bound_check("coprimary.auroc", f"{PREFIX}.auroc", values, gate.min_auroc, gate.primary_bound, decidable),
        _bound_check(
            "coprimary.sensitivity",
            f"{PREFIX}.sensitivity",
            values,
            gate.min_sensitivity,
            gate.primary_bound,
            decidable,
        ),  # fmt: skip
        _bound_check(
            "coprimary.specificity",
            f"{PREFIX}.specificity",
            values,
            gate.min_specificity,
            gate.primary_bound,
            decidable,
        ),  # fmt: skip
    ]
    if gate.min_primary is not None:
        checks.append(_bound_check("primary", "primary.value", values, gate.min_primary, gate.primary_bound, decidable))
    verdict = combine(GATE, checks)
    if verdict.status == "undecidable":
        reasons = [r for r in verdict.reasons if "n too small:" in r]
        return Verdict(GATE, "undecidable", ("undecidable: n too small", *reasons), verdict.checks)
    return verdict


def gate_metrics(verdict: Verdict) -> dict[str, int]:
    """metrics.json's numeric view of the verdict: gate.passed, gate.undecidable (1 or 0)."""
    return {"gate.passed": int(verdict.status == "passed"), "gate.undecidable": int(verdict.status == "undecidable")}
