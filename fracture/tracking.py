"""MLflow tracking for train, behind an adapter that never costs us the trained model.

The tracking URI comes from `MLFLOW_TRACKING_URI`, else an embedded sqlite store in the current directory, and is
set explicitly every time. The adapter logs a warning and switches itself off on the first error (server down,
bad URI, full disk): training goes on and the model dir is still written. The model dir holds nothing about the
run (it is a pure function of the step's inputs, so DVC sees the same outputs on every rerun); the run carries the
model's digest as a tag instead (`MODEL_DIGEST_TAG`), and `register` finds the training run by it. Nothing from
the environment is logged, and credentials in URIs are redacted before they are recorded.

Naming, shared by every step that logs to MLflow: metrics grouped by `/` (`train/loss`, `val/auroc`,
`test/auroc`), one-off numbers as tags rounded to 4 significant digits (`sig4`), run names
`<step>-<6 hex of the params hash>-<UTC time>` (`run_name`), and the experiment marked as a model-training one
(`ensure_experiment`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fracture.config import Params
from fracture.contracts.artifacts import MODEL_CONFIG, WEIGHTS

log = logging.getLogger(__name__)

# Fail fast on an unreachable server instead of mlflow's default of several retries with backoff.
SHORT_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
# The experiment tag the MLflow UI reads for an experiment's kind (model training, not GenAI development).
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the run's (markdown) description in the UI
GIT_COMMIT_TAG = "git_commit"  # on the training run, and on the registered version (from that run)
MODEL_DIGEST_TAG = "fracture.model_digest"  # sha256 of model.pt then config.json (`model_digest`)
DIGEST_FILES = (WEIGHTS, MODEL_CONFIG)
# mlflow 3.17's UI lets a global GenAI / machine-learning switch (the `workflowType` URL parameter, else the
# browser's last choice, GenAI by default) override the kind tag on experiment pages: the printed links name it.
ML_WORKFLOW_QUERY = "?workflowType=machine_learning"
UI_PORT = 5000  # `mlflow ui`'s port in printed links (a database store has no UI server of its own)


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def redact(text: str) -> str:
    """Drop `user:password@` from any URI in `text`."""
    return _USERINFO.sub("***@", text)


def git_commit() -> str | None:
    """HEAD of the git checkout in the current directory, or None outside one (e.g. in a container)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def params_hash(params: Params) -> str:
    """sha256 of the resolved params (canonical JSON), for lineage."""
    return hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()


def model_digest(model_dir: Path) -> str:
    """sha256 over model.pt then config.json: the identity of a trained model, whatever its dir is called.

    Raises:
        FileNotFoundError: one of the two files is missing.
    """
    h = hashlib.sha256()
    for name in DIGEST_FILES:
        with open(Path(model_dir) / name, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def sig4(value: float | int | None) -> str:
    """A number as a tag value: 4 significant digits (`0.8123`, `12.35`), `nan` / `None` as such."""
    if value is None:
        return "None"
    return f"{float(value):.4g}"


def run_name(step: str, params_digest: str, when: datetime | None = None) -> str:
    """`<step>-<first 6 hex of the params hash>-<UTC time to the second>`, e.g. `train-3f2a1c-20261202T031245`."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return f"{step}-{params_digest[:6]}-{stamp}"


def ui_base(uri: str) -> str | None:
    """The MLflow UI behind a tracking URI: an http(s) server serves it itself; a database store has none."""
    return redact(uri).rstrip("/") if uri.startswith(("http://", "https://")) else None


def ui_links(ui: str, experiment_id: str | None, model_name: str) -> list[str]:
    """Direct UI links: the experiment's runs (as a model-training experiment) and the registered model."""
    links = [f"runs:   {ui}/#/experiments/{experiment_id}/runs{ML_WORKFLOW_QUERY}"] if experiment_id else []
    return [*links, f"models: {ui}/#/models/{model_name}"]


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment `name`, created when missing; either way marked as a model-training experiment."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp_id


def dataset_input(df: Any, name: str, digest: str, source: str, context: str) -> Any:
    """An MLflow dataset input (the run's Datasets panel): a pandas frame's schema and size, not its values."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():
        # The schema is a description here, never enforced: mlflow's hint about integer columns does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        # mlflow 3.17 registers its local-file source twice and warns that a path "can be interpreted in multiple
        # ways: LocalArtifactDatasetSource, LocalArtifactDatasetSource" (the same class): nothing to resolve.
        warnings.filterwarnings("ignore", message="The specified dataset source can be", category=UserWarning)
        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=digest[:32])  # MLflow: digest <= 36
        entity = dataset._to_mlflow_entity()  # the schema is inferred here
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"train.lr": "0.001", ...} (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple | Mapping) else str(value)
    return out


@contextmanager
def short_http_timeouts() -> Iterator[None]:
    """Set mlflow's HTTP retry/timeout variables for the block (values the user set are kept)."""
    saved = {k: os.environ.get(k) for k in SHORT_HTTP_ENV}
    for key, value in SHORT_HTTP_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Tracker:
    """One MLflow run; every call is a no-op after the first failure, which is recorded in `status`."""

    def __init__(self, enabled: bool = True) -> None:
        """Create a tracker; `enabled=False` (e.g. on DDP ranks > 0) makes every call a no-op."""
        self.uri = tracking_uri()
        self.run_id: str | None = None
        self.resumed = False  # True when start() reopened an earlier run
        self.status = "pending" if enabled else "disabled"
        self._client: Any = None
        self._monitor: Any = None

    @property
    def active(self) -> bool:
        """Whether calls still reach MLflow."""
        return self.status in ("pending", "ok")

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # any MLflow/transport/store error: degrade, never fail training
            reason = redact(f"{type(err).__name__}: {err}").splitlines()[0][:300]
            self.status = f"unreachable: {reason}"
            log.warning("MLflow %s failed at %s; continuing without tracking (%s)", what, redact(self.uri), reason)
            self._stop_monitor()
            return None

    def start(self, experiment: str, run_name: str, tags: dict[str, str], resume_run_id: str | None = None) -> None:
        """Open (or reopen, on resume) a run in `experiment`, with system metrics when psutil is present."""
        self._call("start", self._start, experiment, run_name, tags, resume_run_id)

    def _start(self, experiment: str, run_name: str, tags: dict[str, str], resume_run_id: str | None) -> None:
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(self.uri)
        self._client = MlflowClient(tracking_uri=self.uri)
        exp_id = ensure_experiment(self._client, experiment)
        run_id = None
        if resume_run_id:
            try:
                run_id = self._client.get_run(resume_run_id).info.run_id
                self._client.update_run(run_id, status="RUNNING")
                self.resumed = True
            except Exception as err:  # the old run is gone (other store): start a new one
                log.warning("cannot reopen MLflow run %s (%s); starting a new run", resume_run_id, err)
        if run_id is None:
            run_id = self._client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        self.run_id, self.status = run_id, "ok"
        self._start_monitor()

    def _start_monitor(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, tracking_uri=self.uri)
            self._monitor.start()
        except Exception as err:  # psutil missing or unsupported platform: system metrics are optional
            log.debug("system metrics not logged (%s)", err)
            self._monitor = None

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.finish()
            except Exception as err:  # the run is ending anyway
                log.debug("system metrics monitor did not stop cleanly (%s)", err)

    def log_params(self, params: dict[str, str]) -> None:
        """Log flat params."""
        from mlflow.entities import Param

        self._call(
            "log_params", lambda: self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        )

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (None values skipped)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        self._call("set_tags", lambda: self._client.log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log finite metrics at `step` (NaN, e.g. AUROC of a one-class split, is skipped)."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=items))

    def log_dataset(self, df: Any, name: str, digest: str, source: str, context: str) -> None:
        """Log a pandas frame as the run's dataset input (`context`: "training", "evaluation")."""
        self._call(
            "log_input",
            lambda: self._client.log_inputs(self.run_id, [dataset_input(df, name, digest, source, context)]),
        )

    def find_run(self, experiment: str, tags: dict[str, str], statuses: tuple[str, ...]) -> str | None:
        """The newest run of `experiment` with these tags and one of these statuses (None when there is none)."""
        return self._call("search", self._find_run, experiment, tags, statuses)

    def _find_run(self, experiment: str, tags: dict[str, str], statuses: tuple[str, ...]) -> str | None:
        from mlflow import MlflowClient

        self._client = self._client or MlflowClient(tracking_uri=self.uri)
        exp = self._client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self._client.search_runs([exp.experiment_id], where, order_by=["attributes.start_time DESC"])
        return next((r.info.run_id for r in runs if r.info.status in statuses), None)

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        """Upload files to the run's artifact store."""
        for path in paths:
            self._call("log_artifact", lambda p=path: self._client.log_artifact(self.run_id, str(p), artifact_path))

    def end(self, status: str = "FINISHED") -> None:
        """Stop system metrics and close the run."""
        self._stop_monitor()
        self._call("end", lambda: self._client.set_terminated(self.run_id, status=status))
