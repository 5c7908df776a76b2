"""Infra validation before promotion: the trained demo model served by `mlflow models serve` passes; a candidate
whose weights no longer give its evaluation's probabilities is refused with the reason; no server is left behind.

The registry gate (headline metrics) is not under test here: the eval dirs carry passing headline numbers from
`write_eval_dir`, beside the demo evaluation's real `predictions.parquet`, which infra validation replays.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
import yaml

from fracture.base.errors import GateError
from fracture.infravalidate.version import InfraData
from fracture.registry.aliases import run_promote
from fracture.registry.register import run_register
from fracture.serving.deploy import run_deploy
from tests.integration.conftest import write_eval_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _eval_dir(root: Path, demo_eval: Path, model_dir: Path) -> Path:
    """Passing headline metrics (registry gate) + the demo evaluation's real predictions.parquet.

    test.auroc is the demo's own: registration checks that the test predictions reproduce it.
    """
    threshold = json.loads((model_dir / "config.json").read_text())["threshold"]
    auroc = json.loads((demo_eval / "metrics.json").read_text())["test.auroc"]
    out = write_eval_dir(root / "eval", auroc=auroc, sensitivity=0.85, passed=True, threshold=threshold)
    shutil.copy2(demo_eval / "predictions.parquet", out / "predictions.parquet")
    return out


def _broken_copy(model_dir: Path, dst: Path) -> Path:
    """The demo model with its output bias shifted: same architecture and threshold, different probabilities."""
    shutil.copytree(model_dir, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias] = state[last_bias] + 1.5
    torch.save(state, dst / "model.pt")
    return dst


def _mlflow_children() -> list[psutil.Process]:
    kids = psutil.Process().children(recursive=True)
    return [p for p in kids if p.is_running() and "models" in " ".join(p.cmdline() if p.is_running() else [])]


@pytest.fixture(scope="module")
def demo_versions(mlflow_server, params, demo_model, demo_eval, tmp_path_factory):  # noqa: ANN001, ANN201
    """The demo model and a broken copy, registered under a fresh name (both with the demo's predictions)."""
    name, root = f"iv-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("infravalidate")
    broken = _broken_copy(demo_model, root / "broken-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        good = run_register(params, demo_model, _eval_dir(root / "good", demo_eval, demo_model), name=name)
        bad = run_register(params, broken, _eval_dir(root / "bad", demo_eval, broken), name=name)
        mlflow.set_tracking_uri(None)
    return name, good["version"], bad["version"]


def test_demo_model_passes_and_broken_candidate_is_refused(registry_env, params, demo_versions, demo_manifest, capsys):
    name, good_v, bad_v = demo_versions
    infra = InfraData(demo_manifest, Path("."))
    record = run_promote(params, name, version=good_v, reason="infra validation test", infra=infra)
    result = record["infra_validation"]
    assert record["promoted"] and result["passed"], result["reasons"]
    assert set(result["kinds"]) >= {"png8", "png16", "jpeg", "dicom"}
    assert result["max_abs_diff"] <= params.register_.infra_validation.tolerance
    assert result["p95_latency_s"] <= params.register_.infra_validation.max_p95_latency_s
    assert {c["check"] for c in result["checks"] if c["passed"]} >= {
        "every request answered", "probabilities equal offline", "decision at the frozen threshold",
        "bad inputs refused clearly", "serving after bad inputs", "p95 latency",
    }  # fmt: skip
    with capsys.disabled():
        print(
            f"\ninfra validation of the demo model: {result['n_requests']} requests, kinds {result['kinds']}, "
            f"max |served - offline| {result['max_abs_diff']:.2e}, p50 {result['p50_latency_s']:.3f} s, "
            f"p95 {result['p95_latency_s']:.3f} s"
        )
    client = mlflow.MlflowClient(registry_env)
    assert client.get_model_version(name, str(good_v)).tags["infra_validation.passed"] == "true"

    with pytest.raises(GateError, match="infra validation failed: probabilities equal offline"):
        run_promote(params, name, version=bad_v, reason="must be refused", infra=infra)
    tags = client.get_model_version(name, str(bad_v)).tags
    assert tags["infra_validation.passed"] == "false"
    assert "probabilities equal offline" in tags["infra_validation.reasons"]
    assert float(tags["infra_validation.max_abs_diff"]) > params.register_.infra_validation.tolerance
    assert client.get_registered_model(name).aliases["champion"] == str(good_v)  # not moved
    assert not _mlflow_children(), "a scoring server outlived infra validation"
    assert result["server_stopped"]

    # deploy renders the champion (pinned by number) and refuses the version that failed infra validation
    manifest = yaml.safe_load(run_deploy(params, name, alias="champion", namespace="serving-test", dry_run=True))
    assert manifest["metadata"]["namespace"] == "serving-test"
    assert f"models:/{name}/{good_v}" in manifest["spec"]["predictor"]["containers"][0]["args"]
    with pytest.raises(GateError, match="has not passed infra validation"):
        run_deploy(params, name, version=bad_v, dry_run=True)
