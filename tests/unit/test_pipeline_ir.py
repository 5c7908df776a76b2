"""The compiled Kubeflow pipeline: every step, the GPU request, shm, secrets, node selector, the gate."""

from pathlib import Path

import pytest
import yaml

from fracture.kubeflow.runner import run_compile

STEPS = [
    "ingest", "validate", "split", "preprocess", "train", "evaluate", "explain", "report", "infravalidate", "register",
]  # fmt: skip


@pytest.fixture(scope="module")
def ir(tmp_path_factory, params) -> tuple[dict, dict, str]:
    path = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    run_compile(params, path)
    text = path.read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text


def test_every_step_runs_the_project_image(ir, params):
    spec, _, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STEPS)
    for name, executor in executors.items():
        assert executor["container"]["image"] == params.pipeline.image, name
        # lightweight components that do not pip-install kfp at start-up
        assert "pip install" not in " ".join(executor["container"]["command"]), name


def test_train_requests_gpu_cpu_memory(ir):
    spec, _, _ = ir
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert resources["resourceCpuLimit"] == "8"
    assert resources["resourceMemoryLimit"] == "64G"


def test_train_has_shm_node_selector_toleration_and_secrets(ir):
    _, k8s, _ = ir
    train = k8s["exec-train"]
    assert train["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert train["emptyDirMounts"][0]["medium"] == "Memory"
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu"
    secrets = {s["secretName"] for s in train["secretAsEnv"]}
    assert secrets == {"fracture-s3", "fracture-mlflow"}
    envs = {e["envVar"] for s in train["secretAsEnv"] for e in s["keyToEnv"]}
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= envs


def test_register_runs_only_when_the_gate_and_infra_validation_pass(ir):
    spec, k8s, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    assert "register" not in tasks
    (cond_name,) = [n for n, t in tasks.items() if "triggerPolicy" in t]
    assert "evaluate-Output" in tasks[cond_name]["triggerPolicy"]["condition"]  # the gate result
    inner = spec["components"][tasks[cond_name]["componentRef"]["name"]]["dag"]["tasks"]
    assert "infravalidate" in inner and "register" not in inner
    (infra_cond,) = [n for n, t in inner.items() if "triggerPolicy" in t]
    assert "infravalidate-Output" in inner[infra_cond]["triggerPolicy"]["condition"]  # infra validation passed
    innermost = spec["components"][inner[infra_cond]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(innermost) == ["register"]
    assert "infra_validation" in innermost["register"]["inputs"]["artifacts"]  # its result becomes version tags
    assert "secretAsEnv" in k8s["exec-register"]


def test_train_and_evaluate_cache_keys_include_the_data_revision(ir):
    spec, _, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("train", "evaluate"):
        params = tasks[name]["inputs"]["parameters"]
        assert params["data_revision"]["componentInputParameter"] == "data_revision"


def test_dag_order(ir):
    spec, _, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    assert "validate" in tasks["split"]["dependentTasks"]
    assert {"split", "preprocess"} <= set(tasks["train"]["dependentTasks"])


def test_no_secret_values_in_the_compiled_pipeline(tmp_path, params, monkeypatch):
    planted = {"AWS_SECRET_ACCESS_KEY": "planted-s3-secret-9f2c", "MLFLOW_TRACKING_TOKEN": "planted-token-77ab"}
    for key, value in planted.items():
        monkeypatch.setenv(key, value)
    text = Path(run_compile(params, tmp_path / "p.yaml")).read_text()
    for value in planted.values():
        assert value not in text
