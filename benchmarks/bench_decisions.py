"""Decision rules on simulated data of known truth (benchmarks.decision_sim), with Monte Carlo errors.

- the evaluation gate (fracture.evaluate.decision) at 40 test patients: undecidable every time;
- at 1,000 test patients against min AUROC 0.7: passes a true AUROC of 0.80 and fails a true 0.60 >= 95 % of runs
  (the point-estimate gate it replaced is shown beside, at 40 patients with true AUROC 0.66 and 0.74);
- the certified target-sensitivity threshold (fracture.evaluate.certify) from 20 to 200 positive val patients: how
  often it certifies, and how often a certified threshold meets the target on the population (nominal 97.5 %);
- zero-width cluster-bootstrap intervals at 20 patients: every one flagged in intervals.csv.
Monte Carlo error of a rate p over R runs: sqrt(p (1 - p) / R), stated beside every rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.common import Target, check, demo_params, make_result
from benchmarks.decision_sim import mu_for_auroc, prob_threshold, simulate, true_rates

NAME = "decisions"
FULL = {"runs": 200, "cert_runs": 200, "resamples": 500}
QUICK = {"runs": 4, "cert_runs": 4, "resamples": 100}
SEED = 20261207


def _rate(hits: int, runs: int) -> dict[str, float]:
    p = hits / runs if runs else float("nan")
    return {"rate": round(p, 4), "mc_error": round(math.sqrt(p * (1 - p) / runs), 4) if runs else None, "runs": runs}


def _gate_runs(ep: Any, n_patients: int, auroc: float, runs: int, rng: np.random.Generator) -> dict[str, int]:
    from fracture.evaluate.decision import coprimary_endpoints, evaluate_gate

    counts = {"passed": 0, "failed": 0, "undecidable": 0, "point_passed": 0}
    threshold = prob_threshold(mu_for_auroc(auroc) / 2)
    for i in range(runs):
        values = coprimary_endpoints(simulate(n_patients, auroc, rng), "all", threshold, ep, SEED + i)
        counts[evaluate_gate(values, ep.gate).status] += 1
        counts["point_passed"] += int(values["coprimary.auroc"] >= ep.gate.min_auroc)
    return counts


def gate_study(ep: Any, runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Decision rates of the gate at 40 and 1,000 patients, and the point gate at 40."""
    small = _gate_runs(ep, 40, 0.80, runs, rng)
    good, bad = _gate_runs(ep, 1000, 0.80, runs, rng), _gate_runs(ep, 1000, 0.60, runs, rng)
    near_bad, near_good = _gate_runs(ep, 40, 0.66, runs, rng), _gate_runs(ep, 40, 0.74, runs, rng)
    return {
        "undecidable_at_40": _rate(small["undecidable"], runs),
        "passes_0.80_at_1000": _rate(good["passed"], runs),
        "fails_0.60_at_1000": _rate(bad["failed"], runs),
        "point_gate_passes_0.66_at_40": _rate(near_bad["point_passed"], runs),
        "point_gate_fails_0.74_at_40": _rate(runs - near_good["point_passed"], runs),
    }


def certification_study(ep: Any, runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Per number of positive val patients: certification rate and how often a certified threshold meets 0.9."""
    from fracture.evaluate.certify import certify_target

    target, auroc = 0.9, 0.9
    mu, out = mu_for_auroc(auroc), {}
    for n_pos in (20, 36, 50, 100, 200):
        certified = met = 0
        for _ in range(runs):
            val = simulate(2 * n_pos, auroc, rng)
            cert = certify_target(val["label"].to_numpy(), val["prob"].to_numpy(), val["cluster_id"], target,
                                  ep.ci_level)  # fmt: skip
            if cert["certified"]:
                certified += 1
                met += true_rates(mu, math.log(cert["threshold"] / (1 - cert["threshold"])))[0] >= target
        out[str(n_pos)] = {"certified": _rate(certified, runs), "met_when_certified": _rate(met, certified)}
    return out


def zero_width_study(ep: Any, runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Zero-width bootstrap intervals at 20 patients, and how many intervals.csv leaves unflagged."""
    from fracture.evaluate import tables
    from fracture.evaluate.intervals import interval_table

    zero = unflagged = total = 0
    for i in range(runs):
        test = simulate(20, 0.95, rng)
        values = tables.prefixed("test", tables.split_metrics(test, {"frozen": 0.5}, ep, SEED + i))
        table = interval_table(values, ep.n_bootstrap)
        total += len(table)
        zero += int(table["zero_width"].sum())
        unflagged += int((table["zero_width"] & ~table["flagged"]).sum())
    return {"intervals": total, "zero_width": zero, "zero_width_unflagged": unflagged}


def run(quick: bool = False) -> dict[str, Any]:
    """The three studies; the headline is the lower of the two decision rates at 1,000 patients."""
    cfg = QUICK if quick else FULL
    ep = demo_params({"evaluate": {"n_bootstrap": cfg["resamples"]}}).evaluate
    ep = ep.model_copy(update={"gate": ep.gate.model_copy(update={"min_sensitivity": 0.5, "min_specificity": 0.5})})
    rng = np.random.default_rng(SEED)
    gate = gate_study(ep, cfg["runs"], rng)
    cert = certification_study(ep, cfg["cert_runs"], rng)
    zero = zero_width_study(ep, cfg["runs"], rng)
    value = min(gate["passes_0.80_at_1000"]["rate"], gate["fails_0.60_at_1000"]["rate"])
    met = [v["met_when_certified"]["rate"] for v in cert.values() if v["met_when_certified"]["runs"]]
    checks = [
        check("undecidable_at_40", gate["undecidable_at_40"]["rate"], Target(1.0, on="value", text="always")),
        check(
            "certified_meets_target",
            min(met) if met else float("nan"),
            Target(0.95, on="value", text=">= 0.95 (nominal 0.975, less MC error)"),
        ),  # fmt: skip
        check("zero_width_unflagged", zero["zero_width_unflagged"], Target(0, op="<=", on="value", text="none")),
    ]
    rule = "gate on one-sided 97.5 % lower bounds; min AUROC 0.7, min sens/spec 0.5, precision 0.1"
    details = {"gate": gate, "certification": cert, "zero_width": zero, "config": cfg, "rule": rule}
    return make_result(NAME, "correct_decision_rate_1000_patients", value, 0.95, "rate",
                       Target(0.95, on="value", text=">= 0.95 correct decisions at 1,000 patients"), details,
                       checks=checks)  # fmt: skip
