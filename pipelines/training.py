"""The training DAG as one Kubeflow Pipelines v2 pipeline.

ingest -> validate -> split -> preprocess -> train (GPU, or a TrainJob launcher) -> evaluate -> explain -> report
-> infravalidate (the model served by `mlflow models serve` in the task, its evaluation replayed; "not run" when the
evaluation gate refused it) -> register, which acts on both verdicts and always records its outcome ("not registered,
because ..." on a refusal, as under DVC). Pipeline parameters: the resolved params
as JSON plus the knobs people change (split strategy, epochs, learning rate, data source/location/revision).
Infrastructure settings (image, GPU, node selector, shared memory, secrets, `train_mode`) come from params.yaml
`pipeline:` at compile time: `train_mode: pod` trains in the KFP task, `trainjob` makes that task launch a Kubeflow
Trainer TrainJob.
"""

import json
from collections.abc import Callable

from fracture.kubeflow.components.evaluate.component import evaluate
from fracture.kubeflow.components.explain.component import explain
from fracture.kubeflow.components.infravalidate.component import infravalidate
from fracture.kubeflow.components.ingest.component import ingest
from fracture.kubeflow.components.preprocess.component import preprocess
from fracture.kubeflow.components.register.component import register
from fracture.kubeflow.components.report.component import report
from fracture.kubeflow.components.split.component import split
from fracture.kubeflow.components.train.component import train as train_in_pod
from fracture.kubeflow.components.train_trainjob.component import train as train_trainjob
from fracture.kubeflow.components.validate.component import validate
from kfp import dsl, kubernetes

from fracture.config import Params
from fracture.contracts.image import IMAGE_UID
from fracture.contracts.secrets import MLFLOW_ENV, MLFLOW_SECRET, S3_ENV, S3_SECRET

PIPELINE_NAME = "fracture-training"


def _with_secrets(task: dsl.PipelineTask, mlflow: bool = False) -> dsl.PipelineTask:
    """S3 credentials (and MLflow's) as env vars; `optional` so on-prem volumes work without them."""
    kubernetes.use_secret_as_env(task, S3_SECRET, secret_key_to_env=S3_ENV, optional=True)
    if mlflow:
        kubernetes.use_secret_as_env(task, MLFLOW_SECRET, secret_key_to_env=MLFLOW_ENV, optional=True)
    return task


def _limited(task: dsl.PipelineTask, params: Params) -> dsl.PipelineTask:
    """CPU and memory limits for a task that has none yet (train sets its own in `_on_gpu`)."""
    if task.container_spec is not None and task.container_spec.resources is None:
        task.set_cpu_limit(params.pipeline.task_cpu_limit).set_memory_limit(params.pipeline.task_memory_limit)
    return task


def _locked_down(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Run the task as the image's non-root user.

    kfp-kubernetes 2.17 documents that the KFP backend itself sets allowPrivilegeEscalation false, drops all
    capabilities and uses seccomp RuntimeDefault; it cannot ask for a read-only root file system.
    """
    return kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)


def _on_gpu(task: dsl.PipelineTask, params: Params) -> dsl.PipelineTask:
    """GPU, CPU/memory, node selector, toleration and a memory-backed /dev/shm for loader workers."""
    cfg = params.pipeline
    if cfg.gpu_limit > 0:
        task.set_accelerator_type(cfg.gpu_type).set_accelerator_limit(cfg.gpu_limit)
        kubernetes.add_toleration(task, key=cfg.gpu_type, operator="Exists", effect="NoSchedule")
    task.set_cpu_limit(cfg.cpu_limit).set_memory_limit(cfg.memory_limit)
    for key, value in cfg.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=cfg.shm_size
    )
    return task


def _launcher(task: dsl.PipelineTask, params: Params) -> dsl.PipelineTask:
    """The TrainJob launcher: no GPU, and the staging volume mounted where the nodes mount it (volume transfer)."""
    tj = params.pipeline.trainjob
    task.set_cpu_limit("1").set_memory_limit("4G")
    if tj.data_transfer == "volume":
        kubernetes.mount_pvc(task, pvc_name=tj.volume_claim, mount_path=tj.volume_mount)
    return task


def build_pipeline(params: Params) -> Callable:
    """The @dsl.pipeline function for these params (their values become the parameter defaults).

    `split.strategy` kfold or loso compiles the cross-validation study instead (fracture.kubeflow.pipelines.cv).
    """
    image = params.pipeline.image
    trainjob = params.pipeline.train_mode == "trainjob"
    if params.split.strategy in ("kfold", "loso"):
        from fracture.kubeflow.pipelines.cv import build_cv_pipeline

        def finish(task: dsl.PipelineTask) -> dsl.PipelineTask:
            return _locked_down(_limited(task.set_container_image(image), params))

        def on_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
            return _with_secrets(_launcher(task, params)) if trainjob else _with_secrets(_on_gpu(task, params), True)

        return build_cv_pipeline(params, finish, on_gpu)
    train = train_trainjob if trainjob else train_in_pod
    params_default = json.dumps(params.to_dict(), sort_keys=True)

    @dsl.pipeline(name=PIPELINE_NAME, description="Wrist fracture classifier: data to registered model.")
    def training_pipeline(
        params_json: str = params_default,
        data_source: str = params.pipeline.data_source,
        data_location: str = params.pipeline.data_location,
        data_revision: str = params.pipeline.data_revision,
        split_strategy: str = params.split.strategy,
        epochs: int = params.train.epochs,
        learning_rate: float = params.train.lr,
    ):
        tasks: list[dsl.PipelineTask] = []
        ing = ingest(
            params_json=params_json,
            data_source=data_source,
            data_location=data_location,
            data_revision=data_revision,
        )
        tasks.append(_with_secrets(ing))
        checks = validate(
            params_json=params_json, raw_data=ing.outputs["raw_data"], ingest_dir=ing.outputs["ingest_dir"]
        )
        spl = split(params_json=params_json, strategy=split_strategy, ingest_dir=ing.outputs["ingest_dir"])
        spl.after(checks)  # never split data that failed a blocking expectation
        pre = preprocess(
            params_json=params_json, raw_data=ing.outputs["raw_data"], ingest_dir=ing.outputs["ingest_dir"]
        )
        pre.after(checks)
        tasks += [checks, spl, pre]
        trn = train(
            params_json=params_json,
            epochs=epochs,
            learning_rate=learning_rate,
            data_revision=data_revision,
            ingest_dir=ing.outputs["ingest_dir"],
            splits=spl.outputs["splits"],
            cache=pre.outputs["cache"],
        )
        # The launcher stages through S3 (S3 secret); the nodes get both secrets by reference in the TrainJob.
        tasks.append(_with_secrets(_launcher(trn, params)) if trainjob else _with_secrets(_on_gpu(trn, params), True))
        ev = evaluate(
            params_json=params_json,
            data_revision=data_revision,
            model=trn.outputs["model"],
            ingest_dir=ing.outputs["ingest_dir"],
            splits=spl.outputs["splits"],
            cache=pre.outputs["cache"],
        )
        ex = explain(
            params_json=params_json,
            model=trn.outputs["model"],
            eval_dir=ev.outputs["eval_dir"],
            cache=pre.outputs["cache"],
        )
        rep = report(
            params_json=params_json,
            ingest_dir=ing.outputs["ingest_dir"],
            validation=checks.outputs["validation"],
            splits=spl.outputs["splits"],
            model=trn.outputs["model"],
            eval_dir=ev.outputs["eval_dir"],
            explain_dir=ex.outputs["explain_dir"],
        )
        tasks += [ev, ex, rep]
        # No condition: infravalidate and register always run and act on the verdicts they receive (the eval dir's
        # gate.json, the infra validation result), so a refused model is a recorded outcome, as under DVC.
        iv = infravalidate(
            params_json=params_json,
            raw_data=ing.outputs["raw_data"],
            ingest_dir=ing.outputs["ingest_dir"],
            model=trn.outputs["model"],
            eval_dir=ev.outputs["eval_dir"],
        )
        reg = register(
            params_json=params_json,
            model=trn.outputs["model"],
            eval_dir=ev.outputs["eval_dir"],
            report=rep.outputs["report"],
            validation=checks.outputs["validation"],
            infra_validation=iv.outputs["infra_validation"],
        )
        tasks += [_with_secrets(iv), _with_secrets(reg, mlflow=True)]
        for task in tasks:
            _locked_down(_limited(task.set_container_image(image), params))

    return training_pipeline
