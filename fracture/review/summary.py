"""The review's summary (cases reviewed per outcome, agreement, label-error flags) and its sign-off verdict.

The sign-off is a verdict in the shared schema (fracture.contracts.verdict, gate "review"): `passed` when a clinical
reviewer signed the version off, `failed` when one refused it, with the statement as the reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from fracture.contracts.verdict import Check, Verdict
from fracture.review.cases import OUTCOMES

GATE = "review"


def review_summary(cases: pd.DataFrame, verdicts: Iterable[dict]) -> dict:
    """Counts per outcome (cases, reviewed, agree, disagree, unsure), agreement and the label-error flags.

    Args:
        cases: the case frame (image_id, outcome).
        verdicts: the current verdicts (verdict_dict rows) of the version.
    """
    rows = pd.DataFrame(list(verdicts), columns=["image_id", "reviewer", "verdict", "label_wrong",
                                                  "suggested_label", "note", "created_at"])  # fmt: skip
    outcome_of = cases.set_index("image_id")["outcome"].astype(str)
    rows = rows[rows["image_id"].isin(outcome_of.index)]
    rows["outcome"] = rows["image_id"].map(outcome_of)
    per_outcome = {}
    for outcome in OUTCOMES:
        sub = rows[rows["outcome"] == outcome]
        per_outcome[outcome] = {
            "cases": int((outcome_of == outcome).sum()),
            "reviewed": int(sub["image_id"].nunique()),
            **{v: int((sub["verdict"] == v).sum()) for v in ("agree", "disagree", "unsure")},
        }
    decided = rows["verdict"].isin(("agree", "disagree"))
    agreement = float((rows["verdict"] == "agree").sum() / decided.sum()) if decided.any() else None
    flags = rows[rows["label_wrong"].astype(bool)]
    return {
        "cases": len(cases),
        "reviewed": int(rows["image_id"].nunique()),
        "verdicts": len(rows),
        "reviewers": sorted(rows["reviewer"].unique().tolist()),
        "agreement": agreement,
        "per_outcome": per_outcome,
        "label_flags": flags[["image_id", "reviewer", "suggested_label", "note", "outcome"]].to_dict("records"),
    }


def sign_off_verdict(summary: dict, decision: str, reviewer: str, statement: str) -> Verdict:
    """The review gate's verdict for a sign-off (`signed_off`) or refusal (`refused`)."""
    agreement = summary["agreement"]
    checks = (
        Check("cases_reviewed", "passed", observed=summary["reviewed"], n_observed=summary["reviewed"],
              note=f"{summary['reviewed']} of {summary['cases']} cases reviewed"),
        Check("agreement", "passed", observed=agreement, n_observed=summary["verdicts"],
              note="share of agree among agree + disagree verdicts"),
        Check("sign_off", "passed" if decision == "signed_off" else "failed", observed=decision,
              required="signed_off", note=f"{reviewer}: {statement}"),
    )  # fmt: skip
    reasons = () if decision == "signed_off" else (f"refused by {reviewer}: {statement}",)
    return Verdict(GATE, "passed" if decision == "signed_off" else "failed", reasons, checks)
