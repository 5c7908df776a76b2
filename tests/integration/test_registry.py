"""The model registry against a real `mlflow server` on loopback with artifacts on an S3 endpoint (moto).

Each test uses its own registered model name, so tests do not depend on each other's versions or aliases.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fracture.base.errors import GateError, InputError
from fracture.registry.aliases import run_promote, run_rollback
from fracture.registry.download import download_model_dir
from fracture.registry.lineage import fingerprint_model_dir
from fracture.registry.register import run_register
from fracture.tracking import MODEL_DIGEST_TAG, ensure_experiment, git_commit
from tests.integration.conftest import BIN, PLANTED_KEY_ID, PLANTED_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _state(client: MlflowClient, name: str) -> dict:
    """Everything promote could change: aliases, registered-model tags, every version's tags."""
    rm = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "aliases": dict(rm.aliases),
        "model_tags": dict(rm.tags),
        "versions": {mv.version: dict(mv.tags) for mv in versions},
    }


def _validation_dir(root: Path) -> Path:
    """What `fracture validate --out` leaves: validation.json, validation.html and GX's Data Docs site."""
    out = root / "validation"
    (out / "data_docs" / "validations").mkdir(parents=True)
    (out / "validation.json").write_text('{"passed": true}')
    (out / "validation.html").write_text('<a href="data_docs/index.html">Data Docs</a>')
    (out / "data_docs" / "index.html").write_text("<html>data docs</html>")
    (out / "data_docs" / "validations" / "run.html").write_text("<html>one run</html>")
    return out


def test_register_records_lineage_evidence_and_is_idempotent(registry_env, params, make_candidate, caplog):
    cand = make_candidate(seed=1)
    name = _name("reg")
    validation = _validation_dir(cand.report_path.parent)
    with caplog.at_level(logging.INFO, logger="fracture"):
        rec = run_register(
            params, cand.model_dir, cand.eval_dir, name=name, report_path=cand.report_path, validation_dir=validation
        )
    assert "no finished training run with model digest" in caplog.text  # said once, in one line
    assert f"MLflow models: {registry_env}/#/models/{name}" in caplog.text
    client = MlflowClient(registry_env)
    mv = client.get_model_version(name, str(rec["version"]))
    assert rec["created"] and rec["aliases"] == ["challenger"]
    assert mv.tags["fingerprint"] == fingerprint_model_dir(cand.model_dir)
    # no training run: the registering checkout's commit, recorded on register's own run too
    assert mv.tags["git_commit"] == (git_commit() or "unknown") and mv.tags["manifest_hash"] == "manifest-A"
    assert client.get_run(mv.run_id).data.tags["git_commit"] == mv.tags["git_commit"]
    assert mv.tags["params_hash"] == "params-1" and mv.tags["split_strategy"] == "cross_domain"
    assert float(mv.tags["test.auroc"]) == pytest.approx(0.85)
    assert float(mv.tags["test.auroc_ci_low"]) == pytest.approx(0.80)
    assert float(mv.tags["test.frozen.sensitivity_ci_high"]) == pytest.approx(0.85)
    assert float(mv.tags["test.frozen.specificity"]) == pytest.approx(0.8)
    assert mv.tags["threshold"] == "0.5" and mv.tags["threshold_method"] == "youden"
    assert mv.tags["gate.passed"] == "true" and "forced" not in mv.tags
    assert mv.tags["run_origin"] == "register_run"  # metadata has no run id: a new run, recorded as such
    assert mv.tags["evaluation_report"] == f"runs:/{rec['run_id']}/evaluation/report.html"
    artifacts = {a.path for a in client.list_artifacts(rec["run_id"], "evaluation")}
    assert {"evaluation/report.html", "evaluation/metrics.json", "evaluation/gate.json"} <= artifacts
    assert "evaluation/predictions.parquet" in artifacts  # the paired-comparison evidence
    assert mv.tags["test_predictions"] == f"runs:/{rec['run_id']}/evaluation/predictions.parquet"
    assert len(mv.tags["test_set_fingerprint"]) == 64 and mv.tags["test.n_images"] == "200"
    # The report links to validation/validation.html and validation/data_docs/ (relative to its dir): in the run the
    # pages sit at the same relative paths from evaluation/report.html, so the links work inside MLflow.
    paths = _artifact_tree(client, rec["run_id"], "evaluation")
    assert {"evaluation/validation/validation.html", "evaluation/validation/data_docs/index.html"} <= paths
    assert "evaluation/validation/data_docs/validations/run.html" in paths
    assert "evaluation/headline_metrics.json" in paths  # the CI bounds, as a table
    run = client.get_run(rec["run_id"])
    # Test metrics grouped under test/, point estimates only; no CI bounds as single-point charts.
    assert run.data.metrics["test/auroc"] == pytest.approx(0.85)
    assert not [k for k in run.data.metrics if "ci_" in k or k.startswith("test.")]
    assert re.fullmatch(r"register-[0-9a-f]{6}-\d{8}T\d{6}", run.info.run_name), run.info.run_name
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "test-set" and {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == (
        "evaluation"
    )
    exp_id = run.info.experiment_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    link = f"(#/experiments/{exp_id}/runs/{rec['run_id']}/artifacts/evaluation/report.html)"
    assert "test AUROC 0.85 (95% CI 0.8-0.9)" in run.data.tags["mlflow.note.content"]
    assert link in run.data.tags["mlflow.note.content"] and link in mv.description
    assert "test AUROC 0.85" in mv.description

    again = run_register(params, cand.model_dir, cand.eval_dir, name=name)
    assert (again["version"], again["created"]) == (rec["version"], False)
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def _artifact_tree(client: MlflowClient, run_id: str, path: str) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifact_tree(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_register_logs_inside_the_train_run_found_by_the_model_digest(registry_env, params, make_candidate, caplog):
    client = MlflowClient(registry_env)
    cand = make_candidate(seed=2)
    digest = fingerprint_model_dir(cand.model_dir)
    exp_id = ensure_experiment(client, params.train.experiment)
    tags = {"fracture.step": "train"}
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    older = client.create_run(exp_id, an_hour_ago, {**tags, MODEL_DIGEST_TAG: digest}, "older").info.run_id
    client.set_terminated(older, "FINISHED")
    for other in ({**tags, MODEL_DIGEST_TAG: "0" * 64}, tags):  # another model; a run that crashed before the digest
        client.set_terminated(client.create_run(exp_id, tags=other).info.run_id, "FINISHED")
    failed = client.create_run(exp_id, tags={**tags, MODEL_DIGEST_TAG: digest}).info.run_id
    client.set_terminated(failed, "FAILED")
    train_tags = {**tags, MODEL_DIGEST_TAG: digest, "git_commit": "c" * 40}
    train_run = client.create_run(exp_id, run_name="train", tags=train_tags).info.run_id
    client.set_terminated(train_run, "FINISHED")
    with caplog.at_level(logging.INFO, logger="fracture"):
        rec = run_register(params, cand.model_dir, cand.eval_dir, name=_name("trainrun"))
    assert "no finished training run" not in caplog.text
    assert rec["run_id"] == train_run and rec["run_origin"] == "train_run"
    assert client.get_run(train_run).info.status == "FINISHED"
    assert any(o.model_id == rec["model_id"] for o in client.get_run(train_run).outputs.model_outputs)
    assert client.get_model_version(rec["name"], str(rec["version"])).tags["git_commit"] == "c" * 40  # the run's


def test_register_cli_log_is_ours_alone_and_ends_with_ui_links(registry_env, params, params_file, make_candidate):
    cand = make_candidate(seed=4)
    name = _name("cli")
    validation = _validation_dir(cand.report_path.parent)
    cmd = [str(BIN / "fracture"), "register", "--model", str(cand.model_dir), "--eval", str(cand.eval_dir)]
    cmd += ["--report", str(cand.report_path), "--validation", str(validation), "--name", name]
    proc = subprocess.run([*cmd, "--params", str(params_file)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    # One log format: no MLflow INFO lines (its own format or ours), no progress bar, no CloudPickle warning.
    assert "INFO mlflow" not in log and not re.search(r"^\d{4}/\d\d/\d\d ", log, re.M), log
    assert "Downloading artifacts" not in log and "Uploading artifacts" not in log and "CloudPickle" not in log
    assert "/tmp/tmp" not in log and "fracture-register-" not in log  # no temporary paths
    assert not re.search(r"\d\.\d{9,}", log), log  # no 16-digit floats
    exp_id = MlflowClient(registry_env).get_experiment_by_name(params.train.experiment).experiment_id
    assert f"runs:   {registry_env}/#/experiments/{exp_id}/runs?workflowType=machine_learning" in log
    assert f"models: {registry_env}/#/models/{name}" in log


def test_register_refuses_a_failed_gate_unless_forced_with_reason(registry_env, params, params_file, make_candidate):
    cand = make_candidate(seed=3, auroc=0.6, passed=False)
    name = _name("gate")
    cmd = [str(BIN / "fracture"), "register", "--model", str(cand.model_dir), "--eval", str(cand.eval_dir)]
    proc = subprocess.run([*cmd, "--name", name, "--params", str(params_file)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "evaluation gate failed" in proc.stderr and "test.auroc 0.600 < min_auroc" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="--reason"):
        run_register(params, cand.model_dir, cand.eval_dir, name=name, force=True, reason="  ")
    client = MlflowClient(registry_env)
    assert client.search_model_versions(f"name = '{name}'") == []

    rec = run_register(params, cand.model_dir, cand.eval_dir, name=name, force=True, reason="reader study needs it")
    mv = client.get_model_version(name, str(rec["version"]))
    assert mv.tags["forced"] == "true" and mv.tags["force_reason"] == "reader study needs it"
    assert mv.tags["gate.passed"] == "false" and "min_auroc" in mv.tags["gate.reasons"]


def test_promotion_gates_history_and_rollback(registry_env, params, make_candidate):
    name = _name("promo")
    client = MlflowClient(registry_env)
    v1 = run_register(params, *_dirs(make_candidate(seed=11, auroc=0.85)), name=name)["version"]
    first = run_promote(params, name, reason="first model")  # no champion: absolute gates only
    assert first["promoted"] and first["champion_version"] is None
    assert client.get_registered_model(name).aliases == {"champion": str(v1)}  # challenger became champion

    v2 = run_register(params, *_dirs(make_candidate(seed=12, auroc=0.845)), name=name)["version"]  # drop 0.005 ok
    rec = run_promote(params, name, reason="retrained on more data")
    assert rec["promoted"] and rec["champion_version"] == v1
    aliases = client.get_registered_model(name).aliases
    assert aliases == {"champion": str(v2), "previous-champion": str(v1)}
    tags = client.get_model_version(name, str(v2)).tags
    assert (
        tags["promoted_by"] == "integration-tester (unauthenticated)"
        and tags["promotion_reason"] == "retrained on more data"
    )
    assert tags["promoted_at"].endswith("+00:00") and tags["promoted_from"] == str(v1)
    assert tags["comparison.same_test_set"] == "true" and float(tags["comparison.auroc_diff"]) == pytest.approx(-0.005)
    assert float(tags["comparison.auroc_diff_ci_low"]) > -0.01 and tags["comparison.n_clusters"] == "100"
    comparison = json.loads(tags["promotion_comparison"])
    assert comparison["passed"] and comparison["champion_version"] == str(v1)
    assert client.get_model_version(name, str(v1)).tags["superseded_by"] == str(v2)

    v3 = run_register(params, *_dirs(make_candidate(seed=13, auroc=0.79)), name=name)["version"]  # drop 0.055
    with pytest.raises(GateError, match=rf"paired AUROC difference v{v3} - v{v2} = -0\.0550, 95% cluster-bootstrap CI"):
        run_promote(params, name, version=v3)
    assert client.get_model_version(name, str(v3)).tags["comparison.passed"] == "false"  # the refusal is recorded
    assert client.get_registered_model(name).aliases["champion"] == str(v2)
    forced = run_promote(params, name, version=v3, force=True, reason="clinical lead sign-off")
    assert forced["promoted"] and forced["forced"]
    assert client.get_model_version(name, str(v3)).tags["promotion_forced"] == "true"

    back = run_rollback(params, name)
    assert (back["champion_version"], back["rolled_back_version"]) == (v2, v3)
    assert client.get_registered_model(name).aliases["champion"] == str(v2)
    assert "rolled_back_at" in client.get_model_version(name, str(v3)).tags
    history = [json.loads(v) for k, v in sorted(client.get_registered_model(name).tags.items()) if "history." in k]
    assert [h["event"] for h in history] == ["promote", "promote", "promote", "rollback"]
    with pytest.raises(InputError, match="no previous-champion"):
        run_rollback(params, name)


def test_promotion_compares_like_with_like(registry_env, params, params_file, make_candidate, caplog):
    caplog.set_level(logging.INFO, logger="fracture.registry")
    name, client = _name("like"), MlflowClient(registry_env)
    set_a, set_b = _name("test-set"), _name("test-set")  # test sets of this test only: exact reuse counts
    v1 = run_register(params, *_dirs(make_candidate(seed=81, auroc=0.85, test_set=set_a)), name=name)["version"]
    run_promote(params, name, reason="first model")
    assert client.get_model_version(name, str(v1)).tags["comparison.test_set_reuse"] == "1"

    v2 = run_register(params, *_dirs(make_candidate(seed=82, auroc=0.86, test_set=set_b)), name=name)["version"]
    with pytest.raises(GateError, match=rf"v{v2} and champion v{v1} were not evaluated on the same test set"):
        run_promote(params, name)
    refused = client.get_model_version(name, str(v2)).tags
    assert refused["comparison.same_test_set"] == "false" and refused["comparison.passed"] == "false"
    assert "splits_hash differs" in refused["comparison.test_set_differences"]
    with pytest.raises(InputError, match="--allow-different-test-set needs --reason"):
        run_promote(params, name, allow_different_test_set=True)
    cli = [str(BIN / "fracture"), "promote", "--name", name, "--params", str(params_file), "--allow-different-test-set"]
    proc = subprocess.run(cli, capture_output=True, text=True)  # the flag reaches run_promote: no reason, exit 2
    assert proc.returncode == 2 and "--allow-different-test-set needs --reason" in proc.stderr, proc.stderr[-2000:]
    caplog.clear()
    rec = run_promote(params, name, allow_different_test_set=True, reason="new hospital test set")
    assert rec["promoted"] and "DIFFERENT, allowed: new hospital test set" in caplog.text and "unpaired" in caplog.text
    allowed = client.get_model_version(name, str(v2)).tags
    assert allowed["comparison.allowed_different_test_set"] == "true" and allowed["comparison.passed"] == "true"
    assert allowed["comparison.different_test_set_reason"] == "new hospital test set"
    assert client.get_registered_model(name).aliases["champion"] == str(v2)

    v3 = run_register(params, *_dirs(make_candidate(seed=83, auroc=0.855, test_set=set_b)), name=name)["version"]
    caplog.clear()
    run_promote(params, name, reason="same test set, paired")
    tags = client.get_model_version(name, str(v3)).tags
    assert tags["comparison.same_test_set"] == "true" and tags["comparison.champion_version"] == str(v2)
    assert float(tags["comparison.auroc_diff"]) == pytest.approx(-0.005)
    low, high = float(tags["comparison.auroc_diff_ci_low"]), float(tags["comparison.auroc_diff_ci_high"])
    assert -0.01 < low < -0.005 < high and 0 <= float(tags["comparison.delong_p"]) <= 1
    assert (tags["comparison.n_images"], tags["comparison.n_clusters"]) == ("200", "100")
    assert tags["comparison.test_set_reuse"] == "2"  # v2 and v3 were evaluated on test set B
    assert f"{low:+.4f}" in caplog.text and "DeLong" in caplog.text and "reuse" in caplog.text


def _dirs(cand):  # noqa: ANN001, ANN202
    return cand.model_dir, cand.eval_dir


def test_first_promotion_applies_the_absolute_gate(registry_env, params, make_candidate):
    name = _name("first")
    run_register(params, *_dirs(make_candidate(seed=21, sensitivity=0.4)), name=name)
    with pytest.raises(GateError, match=r"test\.frozen\.sensitivity 0\.4 < min_sensitivity"):
        run_promote(params, name)
    assert "champion" not in MlflowClient(registry_env).get_registered_model(name).aliases
    with pytest.raises(InputError, match="--reason"):
        run_promote(params, name, force=True)


def test_an_undecidable_model_is_a_challenger_tagged_undecidable_and_promoting_it_needs_force(
    registry_env, params, make_candidate
):
    from fracture.contracts.verdict import Verdict, write_verdict

    name = _name("undecidable")
    cand = make_candidate(seed=24)
    write_verdict(Verdict("evaluate", "undecidable", ("undecidable: n too small",)), cand.eval_dir / "gate.json")
    rec = run_register(params, *_dirs(cand), name=name)
    assert rec["aliases"] == ["challenger"] and rec["gate_status"] == "undecidable" and not rec["forced"]
    tags = MlflowClient(registry_env).get_model_version(name, str(rec["version"])).tags
    assert tags["undecidable"] == "true" and tags["gate.status"] == "undecidable"
    with pytest.raises(GateError, match=r"undecidable \(n too small\); promoting it needs --force --reason"):
        run_promote(params, name)
    assert run_promote(params, name, force=True, reason="reader study on 300 patients planned")["promoted"]


def test_dry_run_changes_nothing(registry_env, params, params_file, make_candidate):
    name = _name("dry")
    client = MlflowClient(registry_env)
    run_register(params, *_dirs(make_candidate(seed=31)), name=name)
    before = _state(client, name)
    rec = run_promote(params, name, dry_run=True, reason="would pass")
    assert rec["passed"] and rec["dry_run"] and not rec["promoted"]
    assert _state(client, name) == before
    run_promote(params, name, reason="first")
    run_register(params, *_dirs(make_candidate(seed=32, auroc=0.5)), name=name)
    before = _state(client, name)
    cli = [str(BIN / "fracture"), "promote", "--name", name, "--dry-run", "--params", str(params_file)]
    proc = subprocess.run(cli, capture_output=True, text=True)  # a failing dry run says so (exit 1) ...
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "paired AUROC diff" in proc.stderr and "FAIL" in proc.stderr
    assert "not promoted" in proc.stderr and "Traceback" not in proc.stderr
    rec = run_promote(params, name, dry_run=True, force=True, reason="what if")  # ... a forced one would pass
    assert rec["dry_run"] and rec["forced"] and not rec["passed"] and not rec["promoted"]
    assert _state(client, name) == before
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}


def test_load_by_alias_predict_and_download(
    registry_env, params, make_candidate, radiograph_png, tmp_path, monkeypatch
):
    from fracture.images.decode import prepare_image
    from fracture.model.core import load_model_dir, predict_proba
    from fracture.serving.pyfunc import PATH_ROOTS_ENV, encode_image_file

    monkeypatch.setenv(PATH_ROOTS_ENV, str(radiograph_png.parent))  # serve.allowed_path_roots: the `path` column on

    name = _name("load")
    cand = make_candidate(seed=41)
    version = run_register(params, *_dirs(cand), name=name)["version"]
    run_promote(params, name, reason="serve it")
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = pyfunc.predict(pd.DataFrame({"path": [str(radiograph_png)], "image": [None]}))
    b64 = pyfunc.predict(pd.DataFrame({"image": [encode_image_file(radiograph_png)]}))
    model, config = load_model_dir(cand.model_dir)
    img = prepare_image(radiograph_png, config["img_size"], params.preprocess.window_percentiles)
    expected = predict_proba(model, img[None], config["mean"], config["std"], batch_size=1)[0]
    assert list(out.columns) == ["probability", "decision", "threshold"]
    assert out["probability"].iloc[0] == pytest.approx(expected, abs=1e-6)
    assert b64["probability"].iloc[0] == pytest.approx(expected, abs=1e-6)
    assert out["decision"].iloc[0] == int(expected >= 0.5) and out["threshold"].iloc[0] == 0.5

    local = download_model_dir(f"models:/{name}@champion", tmp_path / "by-alias")
    assert {"model.pt", "config.json", "metadata.json"} <= {p.name for p in local.iterdir()}
    assert fingerprint_model_dir(local) == fingerprint_model_dir(cand.model_dir)
    reloaded, _ = load_model_dir(download_model_dir(f"models:/{name}/{version}", tmp_path / "by-version"))
    again = predict_proba(reloaded, img[None], config["mean"], config["std"], batch_size=1)[0]
    assert np.isclose(again, expected)
    with pytest.raises(InputError, match="models:/NAME@ALIAS"):
        download_model_dir(f"runs:/{name}", tmp_path / "bad")
    with pytest.raises(InputError, match="no such registered model version"):
        download_model_dir(f"models:/{name}@no-such-alias", tmp_path / "bad")


def test_s3_outage_during_register_leaves_nothing_half_registered(
    registry_env, mlflow_server, params, make_candidate, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast; the message must still name the upload
    name = _name("outage")
    cand = make_candidate(seed=51)
    client = MlflowClient(registry_env)
    runs_before = {r.info.run_id for r in client.search_runs([_experiment_id(client, params)])}
    with mlflow_server.s3.down(), pytest.raises(InputError, match="could not upload model artifacts to") as err:
        run_register(params, *_dirs(cand), name=name)
    assert mlflow_server.url in str(err.value) and "/mlflow-artifacts/artifacts/" in str(err.value)
    assert client.search_model_versions(f"name = '{name}'") == []
    half_logged = f"tags.fingerprint = '{fingerprint_model_dir(cand.model_dir)}'"
    assert client.search_logged_models([_experiment_id(client, params)], filter_string=half_logged) == []
    runs_after = {r.info.run_id for r in client.search_runs([_experiment_id(client, params)])}
    assert runs_after == runs_before  # the run created for this registration was removed again
    rec = run_register(params, *_dirs(cand), name=name)  # endpoint back: the same dir registers cleanly
    assert rec["created"] and rec["version"] == 1
    leaks = [str(err.value), caplog.text]
    assert not any(PLANTED_SECRET in text or PLANTED_KEY_ID in text for text in leaks)


def _experiment_id(client: MlflowClient, params) -> str:  # noqa: ANN001
    exp = client.get_experiment_by_name(params.train.experiment)
    return exp.experiment_id if exp is not None else client.create_experiment(params.train.experiment)


def test_planted_credentials_never_reach_tags_params_or_logs(
    registry_env, mlflow_server, params, make_candidate, tmp_path
):
    name = _name("leak")
    rec = run_register(params, *_dirs(make_candidate(seed=61)), name=name)
    run_promote(params, name, reason="leak check")
    client = MlflowClient(registry_env)
    texts = [mlflow_server.log_path.read_text(errors="replace")]
    for rm in client.search_registered_models():
        texts.append(json.dumps(rm.tags))
        texts.extend(json.dumps(mv.tags) for mv in client.search_model_versions(f"name = '{rm.name}'"))
    run = client.get_run(rec["run_id"])
    texts += [json.dumps(run.data.tags), json.dumps(run.data.params)]
    model_files = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{rec['version']}", dst_path=tmp_path))
    texts += [p.read_text(errors="replace") for p in model_files.rglob("*") if p.is_file() and p.suffix != ".pt"]
    assert any("fingerprint" in t for t in texts)  # the scan did read the tags
    assert not any(PLANTED_SECRET in t or PLANTED_KEY_ID in t for t in texts)


def test_register_the_real_train_and_evaluate_outputs(registry_env, params, demo_model, demo_eval, tmp_path):
    """Contract check: the model dir from train and the eval dir from evaluate register and load as they are."""
    from fracture.model.core import load_model_dir

    name = _name("chain")
    forced = json.loads((demo_eval / "gate.json").read_text())["status"] == "failed"  # a 2-epoch demo may fail
    reason = "2-epoch test model" if forced else None
    rec = run_register(params, demo_model, demo_eval, name=name, force=forced, reason=reason)
    mv = MlflowClient(registry_env).get_model_version(name, str(rec["version"]))
    metrics = json.loads((demo_eval / "metrics.json").read_text())
    # Numbers in tags carry 4 significant digits.
    assert mv.tags["test.auroc"] == f"{metrics['test.auroc']:.4g}"
    assert mv.tags["test.frozen.sensitivity_ci_low"] == f"{metrics['test.frozen.sensitivity_ci_low']:.4g}"
    assert mv.tags["manifest_hash"] != "unknown" and mv.tags["split_strategy"] == params.split.strategy
    _, config = load_model_dir(download_model_dir(f"models:/{name}@challenger", tmp_path / "dl"))
    assert mv.tags["threshold"] == f"{config['threshold']:.4g}"
