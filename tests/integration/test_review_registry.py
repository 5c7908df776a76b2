"""Closing the loop: `fracture review summary` attaches the review to the registry version, and with
`register.promote.require_review` promotion refuses a version nobody signed off (the local sqlite registry)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fracture.base.errors import GateError, InputError
from fracture.review import store
from fracture.review.registry import run_review_summary
from fracture.review.summary import review_summary, sign_off_verdict
from fracture.tracking import MODEL_DIGEST_TAG

pytestmark = pytest.mark.integration

DIGEST = "d" * 64


@pytest.fixture
def version(tmp_path):
    """A registered version whose run carries the model digest (what `fracture register` records)."""
    from fracture.registry.client import mlflow_client

    client = mlflow_client()
    exp = client.create_experiment(f"review-{tmp_path.name}")
    run = client.create_run(exp, tags={MODEL_DIGEST_TAG: DIGEST})
    name = f"review-model-{tmp_path.name}".replace("_", "-")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return client, name, mv.version


def eval_dir(tmp_path):
    out = tmp_path / "eval"
    out.mkdir(exist_ok=True)
    pd.DataFrame({"image_id": ["a", "b"], "split": "test", "prob": [0.9, 0.2], "label": [1, 1]}).to_parquet(
        out / "predictions.parquet"
    )
    (out / "thresholds.json").write_text(json.dumps({"frozen": 0.5}))
    return out


def test_promotion_needs_a_signed_review_when_required(version, tmp_path, make_params):
    from fracture.registry.aliases import run_promote

    client, name, number = version
    strict = make_params({"register": {"promote": {"require_review": True}}})
    with pytest.raises(GateError, match="no clinical review sign-off \\(review.status is absent\\)"):
        run_promote(strict, name, version=int(number))

    url = f"sqlite:///{tmp_path / 'review.db'}"
    engine = store.open_engine(url)
    row = {"model_version": DIGEST, "image_id": "b", "reviewer": "alice", "verdict": "disagree",
           "label_wrong": False, "suggested_label": None, "note": "missed"}  # fmt: skip
    store.add_verdict(engine, row)
    record = run_review_summary(f"models:/{name}/{number}", eval_dir(tmp_path), url, tmp_path / "review.json")
    assert record["verdict"]["status"] == "undecidable"  # verdicts, but nobody signed
    with pytest.raises(GateError, match="review.status is undecidable"):
        run_promote(strict, name, version=int(number))

    from fracture.review.cases import load_cases

    summary = review_summary(load_cases(eval_dir(tmp_path))[0], [store.verdict_dict(v) for v in
                                                                  store.latest_verdicts(engine, DIGEST)])  # fmt: skip
    verdict = sign_off_verdict(summary, "signed_off", "alice", "FN reviewed, acceptable")
    store.add_sign_off(engine, {"model_version": DIGEST, "reviewer": "alice", "decision": "signed_off",
                                "statement": "FN reviewed, acceptable",
                                "verdict_json": json.dumps(verdict.to_dict())})  # fmt: skip
    record = run_review_summary(f"models:/{name}/{number}", eval_dir(tmp_path), url, tmp_path / "review.json")
    tags = client.get_model_version(name, number).tags
    assert tags["review.status"] == "passed" and tags["review.signed_by"] == "alice"
    assert tags["review.reviewed"] == "1 of 2" and tags["review.agreement"] == "0.0000"
    artifacts = [f.path for f in client.list_artifacts(client.get_model_version(name, number).run_id, "review")]
    assert artifacts == ["review/review.json"]
    with pytest.raises(InputError) as err:  # past the review gate: the fake version fails model verification
        run_promote(strict, name, version=int(number))
    assert "clinical review" not in str(err.value)
    refusal = json.dumps(sign_off_verdict(summary, "refused", "bob", "too many FN").to_dict())
    store.add_sign_off(engine, {"model_version": DIGEST, "reviewer": "bob", "decision": "refused",
                                "statement": "too many FN", "verdict_json": refusal})  # fmt: skip
    record = run_review_summary(f"models:/{name}/{number}", eval_dir(tmp_path), url, tmp_path / "review.json")
    assert record["verdict"]["status"] == "failed"  # the latest sign-off decides
    assert client.get_model_version(name, number).tags["review.status"] == "failed"
    with pytest.raises(GateError, match="review.status is failed"):
        run_promote(strict, name, version=int(number))


def test_review_tags_are_reviewer_only_in_the_guard():
    from fracture.access.names import is_review_tag

    assert is_review_tag("review.status") and is_review_tag("review.signed_by")
