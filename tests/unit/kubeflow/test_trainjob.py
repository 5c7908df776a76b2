"""The Kubeflow Trainer launcher without a cluster: the TrainJob against the CRD's schema, the follow loop
against a fake API (created, running, succeeded, failed, timed out, cancelled), staging, and the whole launch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fracture.base.errors import ConfigError
from fracture.kubeflow import trainjob as tj
from fracture.kubeflow.trainjob_node import train_command
from fracture.kubeflow.trainjob_stage import get_dir, input_paths, put_dir, put_inputs, remove, stage_root

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "data" / "trainer" / "trainjob.schema.json"


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists the fields (the API server would prune them)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def assert_valid(body: dict, schema: dict) -> None:
    jsonschema.Draft7Validator(strict(schema)).validate(body)
    # the CRD's own CEL rules on the name, read from the schema: an RFC 1035 label of at most 63 characters
    rules = " ".join(r["rule"] for r in schema["x-kubernetes-validations"])
    (pattern,) = re.findall(r"matches\('([^']+)'\)", rules)
    assert re.match(pattern, body["metadata"]["name"]) and len(body["metadata"]["name"]) <= 63


def trainjob_params(make_params, train: dict | None = None, **trainjob):
    base = {"data_transfer": "volume", "volume_claim": "rwx", "volume_mount": "/mnt/stage"}
    return make_params({"train": train or {}, "pipeline": {"train_mode": "trainjob", "trainjob": {**base, **trainjob}}})


# ------------------------------------------------------------------------------------------------ manifest


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_nodes": 2, "gpus_per_node": 4},
        {"num_nodes": 3, "gpus_per_node": 0},
        {"data_transfer": "s3", "staging_url": "s3://bucket/stage", "volume_claim": ""},
    ],
)
def test_the_trainjob_is_valid_against_the_trainer_crd_schema(make_params, schema, overrides):
    params = trainjob_params(make_params, **overrides)
    body = tj.build_trainjob("fracture-train-0a1b2c3d4e", "ml", params.pipeline, tj.node_command("/mnt/stage/x"))
    assert_valid(body, schema)


def test_the_strict_schema_catches_a_misspelt_field(make_params, schema):
    body = tj.build_trainjob("fracture-train-1", "ml", trainjob_params(make_params).pipeline, ["true"])
    body["spec"]["trainer"]["numNode"] = body["spec"]["trainer"].pop("numNodes")
    with pytest.raises(jsonschema.ValidationError, match="numNode"):
        assert_valid(body, schema)


def test_the_trainjob_runs_the_image_on_the_torch_runtime_with_nodes_and_gpus_from_params(make_params):
    params = trainjob_params(make_params, num_nodes=2, gpus_per_node=4)
    body = tj.build_trainjob("fracture-train-1", "ml", params.pipeline, tj.node_command("/mnt/stage/fracture-train-1"))
    spec = body["spec"]
    assert (body["apiVersion"], body["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime", "apiGroup": tj.GROUP}
    trainer = spec["trainer"]
    assert trainer["image"] == params.pipeline.image
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert trainer["command"] == ["python", "-m", "fracture.kubeflow.trainjob_node", "/mnt/stage/fracture-train-1"]
    (patch,) = spec["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert {"name": "stage", "persistentVolumeClaim": {"claimName": "rwx"}} in pod["volumes"]
    assert {"name": "stage", "mountPath": "/mnt/stage"} in pod["containers"][0]["volumeMounts"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_nodes_get_the_secrets_by_reference_only_and_s3_mode_mounts_no_claim(make_params, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-5e1f")
    params = trainjob_params(make_params, data_transfer="s3", staging_url="s3://b/p", volume_claim="", gpus_per_node=0)
    body = tj.build_trainjob("fracture-train-1", "ml", params.pipeline, ["true"])
    assert "planted-secret-5e1f" not in json.dumps(body)
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in body["spec"]["trainer"]["env"] if "valueFrom" in e
    }
    assert refs["MLFLOW_TRACKING_URI"] == "fracture-mlflow" and refs["AWS_SECRET_ACCESS_KEY"] == "fracture-s3"
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    volumes = pod["template"]["spec"]["template"]["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["dshm"]
    assert body["spec"]["trainer"]["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in body["spec"]["trainer"]["resourcesPerNode"]["limits"]


def test_node_pods_run_as_the_image_user_locked_down(make_params):
    """Noted in an earlier stop: the TrainJob nodes ran with the runtime's defaults (root, capabilities)."""

    from fracture.contracts.image import IMAGE_UID

    body = tj.build_trainjob("fracture-train-1", "ml", trainjob_params(make_params).pipeline, ["true"])
    job = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == IMAGE_UID
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsUser"] == IMAGE_UID and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    dockerfile = (Path(__file__).resolve().parents[3] / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^USER {IMAGE_UID}:{IMAGE_UID}$", dockerfile, re.M), "IMAGE_UID is not the image's user"


def test_a_world_size_the_effective_batch_cannot_split_over_is_refused_before_launch(make_params):
    params = trainjob_params(make_params, {"batch_size": 16, "effective_batch_size": 32}, num_nodes=3, gpus_per_node=1)
    with pytest.raises(ConfigError, match=r"train\.effective_batch_size: 32 .* 3 process\(es\)"):
        tj.check_world(params)


def test_the_transfer_mode_needs_its_location(make_params):
    with pytest.raises(ConfigError, match=r"pipeline\.trainjob\.volume_claim: needed"):
        trainjob_params(make_params, volume_claim="")
    with pytest.raises(ConfigError, match=r"pipeline\.trainjob\.staging_url: '/tmp/x' is not an s3:// URL"):
        trainjob_params(make_params, data_transfer="s3", staging_url="/tmp/x")


# ------------------------------------------------------------------------------------------------ follow loop


def status(*conds: tuple[str, str], active: int = 0) -> dict:
    conditions = [{"type": t, "status": "True", "reason": r, "message": f"{t} {r}"} for t, r in conds]
    return {"status": {"conditions": conditions, "jobsStatus": [{"name": "node", "active": active}]}}


class FakeApi:
    """A TrainJob API whose object walks through `states`, one per `get`; records every call."""

    def __init__(self, states: list[dict], logs: list[str] | None = None, on_get: Any = None) -> None:
        self.states, self.logs, self.on_get = list(states), list(logs or []), on_get
        self.calls: list[tuple[str, Any]] = []
        self.created: dict | None = None

    def create(self, body: dict) -> dict:
        self.calls.append(("create", body["metadata"]["name"]))
        self.created = body
        return body

    def get(self, name: str) -> dict:
        self.calls.append(("get", name))
        if self.on_get:
            self.on_get(self)
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def delete(self, name: str) -> None:
        self.calls.append(("delete", name))

    def node_log(self, name: str, since_seconds: int) -> str:
        return self.logs.pop(0) if self.logs else ""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def body(name: str = "fracture-train-1") -> dict:
    return {"metadata": {"name": name, "namespace": "ml"}}


def follow(api: FakeApi, timeout_s: float = 100) -> dict:
    clock = Clock()
    return tj.follow(api, body(), tj.Follow(timeout_s, 10, clock, clock.sleep))


def test_created_running_succeeded_streams_status_and_new_log_lines_once(caplog):
    states = [{}, status(active=2), status(active=2), status(("Complete", "JobsCompleted"))]
    logs = ["2026-12-01T10:00:01Z epoch 1\n", "2026-12-01T10:00:01Z epoch 1\n2026-12-01T10:00:09Z epoch 2\n"]
    api = FakeApi(states, logs)
    with caplog.at_level(logging.INFO, logger="fracture.kubeflow.trainjob"):
        done = follow(api)
    assert tj.condition(done, "Complete")
    assert [c for c, _ in api.calls] == ["create", "get", "get", "get", "get"]  # never deleted
    text = caplog.text
    assert text.count("epoch 1") == 1 and text.count("epoch 2") == 1
    assert "created, no condition yet" in text
    assert text.count("node: active 2") == 1  # an unchanged status is not repeated
    assert "Complete(JobsCompleted)" in text


def test_failed_raises_with_the_reason_and_deletes_the_trainjob():
    api = FakeApi([status(active=2), status(("Failed", "BackoffLimitExceeded"))])
    with pytest.raises(tj.TrainJobFailed, match="BackoffLimitExceeded: Failed BackoffLimitExceeded"):
        follow(api)
    assert api.calls[-1] == ("delete", "fracture-train-1")


def test_timed_out_deletes_the_trainjob():
    api = FakeApi([status(active=2)])
    with pytest.raises(tj.TrainJobTimeout, match="not complete after 30 s"):
        follow(api, timeout_s=30)
    assert api.calls[-1] == ("delete", "fracture-train-1")
    assert sum(c == "get" for c, _ in api.calls) == 4  # polls at 0, 10, 20, 30 s


def test_sigterm_cancels_and_deletes_the_trainjob():
    def terminate_on_second_poll(api: FakeApi) -> None:
        if sum(c == "get" for c, _ in api.calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    api = FakeApi([status(active=2)], on_get=terminate_on_second_poll)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(tj.Cancelled), tj.sigterm_cancels():
        follow(api)
    assert api.calls[-1] == ("delete", "fracture-train-1")
    assert signal.getsignal(signal.SIGTERM) == before


def test_new_lines_keeps_only_lines_after_the_last_timestamp():
    text = "2026-12-01T10:00:01.5Z a\n2026-12-01T10:00:02Z b c\n"
    assert tj.new_lines(text, "2026-12-01T10:00:01.5Z") == (["b c"], "2026-12-01T10:00:02Z")


# ------------------------------------------------------------------------------------------------ staging + launch


def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "cache" / "sub").mkdir(parents=True)
    (tmp_path / "cache" / "images.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "cache" / "sub" / "index.parquet").write_bytes(b"PAR1")
    (tmp_path / "manifest.parquet").write_bytes(b"m")
    (tmp_path / "splits.parquet").write_bytes(b"s")
    return tmp_path / "manifest.parquet", tmp_path / "splits.parquet", tmp_path / "cache"


@pytest.mark.parametrize("root", ["memory://stage/fracture-train-1", "local"])
def test_staging_round_trip_on_a_remote_store_and_a_mounted_volume(tmp_path, params, root):
    root = str(tmp_path / "vol" / "fracture-train-1") if root == "local" else root
    manifest, splits, cache = inputs(tmp_path / "in")
    put_inputs(root, manifest, splits, cache, params)
    get_dir(root, "inputs", tmp_path / "node")
    got = input_paths(tmp_path / "node")
    assert got["manifest"].read_bytes() == b"m" and (got["cache"] / "sub" / "index.parquet").read_bytes() == b"PAR1"
    assert yaml.safe_load(got["params"].read_text())["train"]["epochs"] == params.train.epochs
    put_dir(tmp_path / "node" / "cache", root, "model")
    get_dir(root, "model", tmp_path / "back")
    assert (tmp_path / "back" / "images.npy").is_file()
    remove(root)
    with pytest.raises(FileNotFoundError, match="not in the staging area"):
        get_dir(root, "model", tmp_path / "again")


def test_the_launcher_stages_runs_and_hands_back_the_model_dir(tmp_path, make_params):
    train = {"epochs": 5, "batch_size": 16, "effective_batch_size": 32}
    params = trainjob_params(make_params, train, volume_mount=str(tmp_path / "vol"), num_nodes=2, gpus_per_node=1)
    root = stage_root(params.pipeline.trainjob, "fracture-train-1")
    seen = {}

    def node_zero_trains(api: FakeApi) -> None:  # the second poll finds node 0's model dir written
        if sum(c == "get" for c, _ in api.calls) == 2:
            staged = input_paths(Path(root) / "inputs")
            seen["epochs"] = yaml.safe_load(staged["params"].read_text())["train"]["epochs"]
            seen["cache"] = (staged["cache"] / "images.npy").is_file()
            (Path(root) / "model").mkdir()
            for name in tj.MODEL_FILES:
                (Path(root) / "model" / name).write_text(name)

    api = FakeApi([status(active=2), status(("Complete", "JobsCompleted"))], on_get=node_zero_trains)
    out = tmp_path / "out" / "model"
    out.mkdir(parents=True)  # KFP may create the output folder beforehand
    result = tj.run_trainjob(params, *inputs(tmp_path / "in"), out, api, "fracture-train-1", "ml")
    assert seen == {"epochs": 5, "cache": True}
    assert sorted(p.name for p in out.iterdir()) == sorted(tj.MODEL_FILES)
    assert result["processes"] == 2
    assert api.created["spec"]["trainer"]["command"][-1] == root
    assert not Path(root).exists(), "the staging area is removed"


def test_a_complete_trainjob_without_a_model_dir_fails_and_the_stage_is_removed(tmp_path, make_params):
    params = trainjob_params(make_params, volume_mount=str(tmp_path / "vol"), num_nodes=1)
    api = FakeApi([status(("Complete", "JobsCompleted"))])
    with pytest.raises(FileNotFoundError, match="model: not in the staging area"):
        tj.run_trainjob(params, *inputs(tmp_path / "in"), tmp_path / "out", api, "fracture-train-2", "ml")
    assert not (tmp_path / "vol" / "fracture-train-2").exists()


def test_each_node_runs_torchrun_over_fracture_train_on_the_staged_inputs(tmp_path):
    cmd = train_command(tmp_path / "inputs", tmp_path / "model", python="python")
    assert cmd[:6] == ["python", "-m", "torch.distributed.run", "-m", "fracture.cli", "train"]
    assert "--standalone" not in cmd  # nodes, processes and rendezvous come from the runtime's PET_* variables
    assert cmd[cmd.index("--params") + 1] == str(tmp_path / "inputs" / "params.yaml")
    assert cmd[-1] == "--resume"


# ------------------------------------------------------------------------------------------------ Kubernetes client


class Recorder:
    """Stands in for CustomObjectsApi / CoreV1Api: records calls, answers from `answers` (an exception is raised)."""

    def __init__(self, **answers: Any) -> None:
        self.answers, self.calls = answers, []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            answer = self.answers.get(method)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


def test_the_kubernetes_api_addresses_trainjobs_and_node_zero_and_tolerates_gone_objects():
    from types import SimpleNamespace

    from kubernetes.client.exceptions import ApiException

    from fracture.kubeflow.trainjob_api import KubeTrainJobApi

    pod = SimpleNamespace(metadata=SimpleNamespace(name="job-node-0-0-abc", creation_timestamp=1))
    custom = Recorder(delete_namespaced_custom_object=ApiException(status=404))
    core = Recorder(list_namespaced_pod=SimpleNamespace(items=[pod]), read_namespaced_pod_log=ApiException(status=400))
    api = KubeTrainJobApi("ml", custom=custom, core=core)
    api.create({"metadata": {"name": "job"}})
    api.get("job")
    api.delete("job")  # already gone: no error
    assert api.node_log("job", 45) == ""  # container not started yet
    assert [c[1][:4] for c in custom.calls] == [("trainer.kubeflow.org", "v1alpha1", "ml", "trainjobs")] * 3
    selector = core.calls[0][2]["label_selector"]
    assert selector == "jobset.sigs.k8s.io/jobset-name=job,batch.kubernetes.io/job-completion-index=0"
    assert core.calls[1][1][:2] == ("job-node-0-0-abc", "ml")
    assert core.calls[1][2] == {"container": "node", "timestamps": True, "since_seconds": 45}
    custom.answers["delete_namespaced_custom_object"] = ApiException(status=403)
    with pytest.raises(ApiException):
        api.delete("job")
