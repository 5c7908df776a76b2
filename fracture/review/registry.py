"""`fracture review summary`: attach a version's clinical review to the registry (tags + an artifact).

The version's model is found in the review store by its digest (the `fracture.model_digest` tag of the version's
run), so the review done on a model dir counts for the registered version of the same weights. The latest
sign-off decides `review.status`: `passed` (signed off), `failed` (refused) or `undecidable` (nobody signed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fracture.base.errors import InputError

log = logging.getLogger(__name__)


def find_version(model_uri: str) -> tuple[Any, Any, str, str]:
    """(client, model version, its model digest, its name) for `models:/NAME/VERSION` or `models:/NAME@ALIAS`.

    Raises:
        InputError: no such version, or its run carries no model digest.
    """
    from mlflow.exceptions import MlflowException

    from fracture.registry.client import access_error, mlflow_client
    from fracture.registry.download import parse_model_uri
    from fracture.tracking import MODEL_DIGEST_TAG

    name, alias, version = parse_model_uri(model_uri)
    client = mlflow_client()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        digest = client.get_run(mv.run_id).data.tags.get(MODEL_DIGEST_TAG) if mv.run_id else None
    except MlflowException as err:
        raise access_error(err) or InputError(f"{model_uri}: no such registered model version") from None
    if not digest:
        raise InputError(f"{model_uri}: its run has no {MODEL_DIGEST_TAG} tag (registered by `fracture register`?)")
    return client, mv, digest, name


def review_record(cases: Any, engine: Any, digest: str) -> dict:
    """The review of model `digest`: summary, latest sign-off and its verdict (undecidable when unsigned)."""
    from fracture.contracts.verdict import Verdict
    from fracture.review import store
    from fracture.review.summary import GATE, review_summary

    verdicts = [store.verdict_dict(v) for v in store.latest_verdicts(engine, digest)]
    summary = review_summary(cases, verdicts)
    signs = store.sign_offs(engine, digest)
    if signs:
        last = signs[-1]
        verdict = Verdict.from_dict(json.loads(last.verdict_json), source="review store")
        sign = {"reviewer": last.reviewer, "decision": last.decision, "statement": last.statement,
                "at": last.created_at.isoformat()}  # fmt: skip
    else:
        verdict, sign = Verdict(GATE, "undecidable", ("no clinical reviewer signed this version off",)), None
    return {"model_digest": digest, "summary": summary, "sign_off": sign, "verdict": verdict.to_dict()}


def review_tags(record: dict) -> dict[str, str]:
    """The version tags of a review record."""
    from fracture.registry.client import tag_text
    from fracture.registry.names import REVIEW_STATUS_TAG

    summary, sign = record["summary"], record["sign_off"] or {}
    agreement = summary["agreement"]
    return {
        REVIEW_STATUS_TAG: record["verdict"]["status"],
        "review.signed_by": sign.get("reviewer", ""),
        "review.signed_at": sign.get("at", ""),
        "review.statement": tag_text(sign.get("statement", "")),
        "review.reviewed": f"{summary['reviewed']} of {summary['cases']}",
        "review.agreement": "n/a" if agreement is None else f"{agreement:.4f}",
        "review.label_flags": str(len(summary["label_flags"])),
    }


def run_review_summary(model_uri: str, eval_dir: Path, db_url: str, out: Path) -> dict:
    """Write the review record to `out`, set the version's review tags, log the record to its run (`review/`)."""
    from fracture.base.io import write_json
    from fracture.review.cases import load_cases
    from fracture.review.store import open_engine

    client, mv, digest, name = find_version(model_uri)
    cases, _ = load_cases(eval_dir)
    record = review_record(cases, open_engine(db_url), digest) | {"model": f"{name}/{mv.version}"}
    write_json(out, record)
    for key, value in review_tags(record).items():
        client.set_model_version_tag(name, mv.version, key, value)
    client.log_artifact(mv.run_id, str(out), artifact_path="review")
    log.info("%s version %s: review %s (%s reviewed); tags and review/%s attached", name, mv.version,
             record["verdict"]["status"], record["summary"]["reviewed"], Path(out).name)  # fmt: skip
    return record
