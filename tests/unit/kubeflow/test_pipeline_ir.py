"""The compiled Kubeflow pipeline: every step, the GPU request, shm, secrets, node selector, the gate."""

import json
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


def test_register_always_runs_and_receives_both_verdicts(ir):
    """No condition hides register: it acts on the evaluation verdict and the infra validation result it receives."""
    spec, k8s, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    assert not [n for n, t in tasks.items() if "triggerPolicy" in t], "a conditional task hides an outcome"
    assert "condition" not in json.dumps(spec["root"]["dag"])
    register = tasks["register"]["inputs"]["artifacts"]
    assert register["eval_dir"]["taskOutputArtifact"]["producerTask"] == "evaluate"  # gate.json, the verdict
    assert register["infra_validation"]["taskOutputArtifact"]["producerTask"] == "infravalidate"
    assert register["validation"]["taskOutputArtifact"]["producerTask"] == "validate"  # pages beside the report
    assert tasks["infravalidate"]["inputs"]["artifacts"]["eval_dir"]["taskOutputArtifact"]["producerTask"] == "evaluate"
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


# ------------------------------------------------------------------------------------------------ trainjob mode


@pytest.fixture(scope="module")
def ir_trainjob(tmp_path_factory, make_params) -> tuple[dict, dict, object]:
    params = make_params({"train": {"epochs": 2}, "pipeline": {"train_mode": "trainjob"}})
    path = tmp_path_factory.mktemp("kfp-trainjob") / "pipeline.yaml"
    run_compile(params, path)
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], params


def test_trainjob_mode_keeps_every_step_and_the_image_and_launches_instead_of_training(ir_trainjob):
    spec, _, params = ir_trainjob
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STEPS)
    train = executors["exec-train"]["container"]
    assert train["image"] == params.pipeline.image
    body = train["command"][-1]
    assert "train_trainjob_step(" in body and "train_step(" not in body.replace("train_trainjob_step(", "")
    assert "accelerator" not in train["resources"], "the launcher holds no GPU; the TrainJob's nodes do"
    assert train["resources"]["resourceCpuLimit"] == "1"


def test_trainjob_launcher_mounts_the_staging_claim_and_reads_s3_credentials(ir_trainjob):
    _, k8s, params = ir_trainjob
    launcher = k8s["exec-train"]
    tj = params.pipeline.trainjob
    (mount,) = launcher["pvcMount"]
    assert (mount["constant"], mount["mountPath"]) == (tj.volume_claim, tj.volume_mount)
    assert {s["secretName"] for s in launcher["secretAsEnv"]} == {"fracture-s3"}
    assert "nodeSelector" not in launcher and "tolerations" not in launcher


def test_trainjob_mode_hands_the_model_to_evaluate_explain_report_and_register(ir_trainjob):
    spec, _, _ = ir_trainjob
    tasks = spec["root"]["dag"]["tasks"]
    assert {"split", "preprocess"} <= set(tasks["train"]["dependentTasks"])
    for name in ("evaluate", "explain", "report"):
        model = tasks[name]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
        assert model == {"outputArtifactKey": "model", "producerTask": "train"}, name
    assert tasks["train"]["inputs"]["parameters"]["data_revision"]["componentInputParameter"] == "data_revision"
    outputs = spec["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert outputs["model"]["artifactType"]["schemaTitle"] == "system.Model"


# ------------------------------------------------------------------------------------------- cross-validation


@pytest.fixture(scope="module", params=["kfold", "loso"])
def ir_cv(request, tmp_path_factory, make_params) -> tuple[dict, dict, object]:
    cv = {"folds": [0, 1, 2]}
    params = make_params({"split": {"strategy": request.param}, "cv": cv, "pipeline": {"max_parallel_folds": 2}})
    path = tmp_path_factory.mktemp(f"kfp-cv-{request.param}") / "pipeline.yaml"
    run_compile(params, path)
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], params


def _loop(spec: dict) -> tuple[str, dict, dict]:
    tasks = spec["root"]["dag"]["tasks"]
    (name,) = [n for n, t in tasks.items() if "parameterIterator" in t]
    return name, tasks[name], spec["components"][tasks[name]["componentRef"]["name"]]


def test_cv_fans_out_over_the_folds_with_bounded_parallelism(ir_cv):
    spec, _, params = ir_cv
    _, loop, body = _loop(spec)
    assert yaml.safe_load(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2]
    assert loop["iteratorPolicy"]["parallelismLimit"] == params.pipeline.max_parallel_folds
    assert {"ingest", "validate", "preprocess"} <= set(loop["dependentTasks"])  # shared inputs run once
    inner = body["dag"]["tasks"]
    assert set(inner) == {"split-fold", "train", "evaluate"}
    item = inner["split-fold"]["inputs"]["parameters"]
    assert item["fold"]["componentInputParameter"].startswith("pipelinechannel--loop-item")
    assert item["strategy"]["runtimeValue"]["constant"] == params.split.strategy
    for name in ("train", "evaluate"):  # each fold trains and evaluates on the fold's own params
        fold_params = inner[name]["inputs"]["parameters"]["params_json"]["taskOutputParameter"]
        assert fold_params == {"outputParameterKey": "Output", "producerTask": "split-fold"}, name
    assert inner["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"


def test_cv_collects_every_folds_eval_dir_into_one_pool_task(ir_cv):
    spec, k8s, _ = ir_cv
    loop_name, _, body = _loop(spec)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"ingest", "validate", "preprocess", loop_name, "pool"}
    (collected,) = body["dag"]["outputs"]["artifacts"].values()
    assert collected["artifactSelectors"] == [{"outputArtifactKey": "eval_dir", "producerSubtask": "evaluate"}]
    source = tasks["pool"]["inputs"]["artifacts"]["eval_dirs"]["taskOutputArtifact"]
    assert source["producerTask"] == loop_name and source["outputArtifactKey"] in body["dag"]["outputs"]["artifacts"]
    assert spec["components"]["comp-pool"]["inputDefinitions"]["artifacts"]["eval_dirs"]["isArtifactList"] is True
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in (
        "ingest", "validate", "preprocess", "split-fold", "train", "evaluate", "pool"))  # fmt: skip
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert k8s["exec-train"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert "pool_step(" in executors["exec-pool"]["container"]["command"][-1]
