"""MLflow tracking for train, behind an adapter that never costs us the trained model.

The tracking URI comes from `MLFLOW_TRACKING_URI`, else an embedded sqlite store in the current directory, and is
set explicitly every time. The adapter logs a warning and switches itself off on the first error (server down,
bad URI, full disk): training goes on, the model dir is still written, and its metadata says why there is no run
id, so the model can be registered later. Nothing from the environment is logged, and credentials in URIs are
redacted before they are recorded.
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
from pathlib import Path
from typing import Any

from fracture.config import Params

log = logging.getLogger(__name__)

# Fail fast on an unreachable server instead of mlflow's default of several retries with backoff.
SHORT_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


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
        exp = self._client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self._client.create_experiment(experiment)
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

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        """Upload files to the run's artifact store."""
        for path in paths:
            self._call("log_artifact", lambda p=path: self._client.log_artifact(self.run_id, str(p), artifact_path))

    def end(self, status: str = "FINISHED") -> None:
        """Stop system metrics and close the run."""
        self._stop_monitor()
        self._call("end", lambda: self._client.set_terminated(self.run_id, status=status))
