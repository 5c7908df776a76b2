"""params.yaml's cluster-side sections, and the base every section shares.

The Kubeflow pipeline, Kubeflow Trainer, serving, the review app and KServe deploy; fracture.config assembles them
with the step sections into `Params`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    """Base for every section: frozen, unknown keys are errors, and numbers must be written as numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `lr: .inf` is not a number

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: object) -> object:
        # pydantic's lax mode would read `epochs: true` as 1 and `lr: "3"` as 3.0; a typo like that is refused.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                value = data.get(key)
                if field.annotation in (int, float) and isinstance(value, bool | str):
                    raise ValueError(f"{key}: expected a number, got {value!r}")
        return data


class TrainJobParams(_Section):
    """The Kubeflow Trainer `TrainJob` the train task launches when `pipeline.train_mode` is `trainjob`."""

    runtime: str = Field(min_length=1, description="ClusterTrainingRuntime to run on (torch-distributed).")
    num_nodes: int = Field(ge=1, description="Training nodes (pods); torchrun spans them.")
    gpus_per_node: int = Field(ge=0, description="GPUs per node, one training process each (0: one CPU process).")
    cpu_per_node: str = Field(min_length=1)
    memory_per_node: str = Field(min_length=1)
    data_transfer: Literal["volume", "s3"] = Field(
        description="How inputs reach the nodes and the model dir comes back: a ReadWriteMany volume or S3 / MinIO."
    )
    volume_claim: str = Field(description="ReadWriteMany PersistentVolumeClaim (data_transfer: volume).")
    volume_mount: str = Field(min_length=1, description="Where the launcher and the nodes mount that claim.")
    staging_url: str = Field(description="s3://bucket/prefix the launcher stages inputs under (data_transfer: s3).")
    namespace: str = Field(description="Namespace of the TrainJob; empty: the launcher pod's own namespace.")
    timeout_s: int = Field(gt=0, description="Give up (and delete the TrainJob) after this many seconds.")
    poll_s: float = Field(gt=0, description="Seconds between status and log polls.")

    @model_validator(mode="after")
    def _transfer_is_configured(self) -> TrainJobParams:
        if self.data_transfer == "volume" and not self.volume_claim:
            raise ValueError("pipeline.trainjob.volume_claim: needed when data_transfer is volume (a RWX PVC name)")
        if self.data_transfer == "s3" and not self.staging_url.startswith("s3://"):
            raise ValueError(f"pipeline.trainjob.staging_url: {self.staging_url!r} is not an s3:// URL")
        return self


class PipelineParams(_Section):
    """Kubeflow Pipelines settings (no secrets here)."""

    image: str
    data_source: Literal["dvc", "volume"]
    data_location: str = Field(min_length=1, description="The data volume's mount path, or the DVC repo URL.")
    data_revision: str
    gpu_type: str
    gpu_limit: int = Field(ge=0)
    cpu_limit: str
    memory_limit: str
    task_cpu_limit: str = Field(description="CPU limit of every task but train (KFP sets requests = limits).")
    task_memory_limit: str = Field(description="Memory limit of every task but train.")
    shm_size: str
    node_selector: dict[str, str]
    train_mode: Literal["pod", "trainjob"] = Field(
        description="pod: train inside the KFP task (torchrun over its GPUs); trainjob: a Kubeflow Trainer TrainJob."
    )
    trainjob: TrainJobParams
    max_parallel_folds: int = Field(ge=1, description="Cross-validation folds trained at once (dsl.ParallelFor).")


class ServeParams(_Section):
    """`fracture serve`: the MLflow scoring server (loopback unless --host says otherwise)."""

    host: str
    port: int = Field(gt=0, lt=65536)
    workers: int = Field(gt=0, le=64, description="uvicorn worker processes.")
    timeout_s: int = Field(gt=0, description="Request timeout of the scoring server, s.")
    allowed_path_roots: tuple[str, ...] = Field(
        description="Folders a request's `path` column may read under (symlinks resolved); [] switches `path` off."
    )


class ReviewParams(_Section):
    """`fracture review serve`: the clinical review app (loopback unless --host says otherwise)."""

    host: str
    port: int = Field(gt=0, lt=65536)
    page_size: int = Field(gt=0, le=500, description="Cases per page of the case list.")
    session_hours: float = Field(gt=0, description="A login lasts this long, h.")
    upload_retention_hours: float = Field(gt=0, description="Uploaded images are deleted after this many hours.")


class DeployParams(_Section):
    """`fracture deploy`: the KServe InferenceService serving a registry version (no secrets here)."""

    namespace: str
    service_name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$")
    image: str | None = Field(description="Predictor image; default: pipeline.image.")
    params_in_image: str = Field(description="Params file inside the image (`serve` section used).")
    port: int = Field(gt=0, lt=65536)
    canary_traffic_percent: int = Field(ge=0, le=100, description="Traffic to a new version while it is canary.")
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu_limit: int = Field(ge=0)
    service_account: str | None = Field(description="ServiceAccount of the predictor pods (None: default).")

    @model_validator(mode="after")
    def _replicas_ordered(self) -> DeployParams:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self
