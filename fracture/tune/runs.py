"""MLflow for a search: one parent run (the space, the best result) and one child run per trial.

The driver records the children from Ray Tune's callbacks, not the trials themselves: a trial that ASHA stops is
ended by Ray without running any more of its code, and one that crashes may never reach an `except`; the driver
sees both. A child is found again by its trial id on a restored search, so a resumed trial keeps one run. Like
`fracture train`, tracking failures are logged and never stop the search.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ray.tune import Callback

from fracture.tracking import flatten, redact
from fracture.train.loop import epoch_metrics

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the child under the parent
TRIAL_TAG = "fracture.tune.trial_id"
SEARCH_TAG = "fracture.tune.search"  # on the parent: which search dir it records (found again on --resume)
STOPPED_EARLY_TAG = "fracture.tune.stopped_early"
RESUMED_TAG = "fracture.tune.resumed_from_epoch"  # a restored search continued the trial from this checkpoint


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A trial's epoch report as the same MLflow metrics `fracture train` logs (`val/auroc`, ...)."""
    row = {k: result[k] for k in ("train_loss", "val_loss", "val_auroc", "lr")}
    return {**epoch_metrics(row, result["epoch_seconds"]), "train/images_per_s": result["images_per_s"]}


def stopped_early(result: dict[str, Any]) -> bool:
    """Whether a trial that reported epochs ended before its loop would have (ASHA's decision, not the loop's)."""
    return "epoch" in result and not result.get("loop_done", False)


def error_line(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message), as far as Ray kept it."""
    text = ""
    if trial.error_file and Path(trial.error_file).is_file():  # written before the callbacks run
        text = Path(trial.error_file).read_text(errors="replace")
    text = text or str(trial.get_error() or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "unknown error (see the trial's error.txt)"


class TrialRuns(Callback):
    """Ray Tune callback: every trial an MLflow child run of `parent_run_id`, ended with the trial's outcome."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, out_dir: str) -> None:
        """Record the trials of one search (`out_dir`: the search dir, whose ended trials' checkpoints go)."""
        self.uri, self.experiment_id, self.parent_run_id, self.out_dir = uri, experiment_id, parent_run_id, out_dir
        self._client: Any = None
        self._ids: dict[str, str] = {}

    def __getstate__(self) -> dict:
        # Ray pickles the run config (and its callbacks) into the experiment state: no client, no cache.
        return {**self.__dict__, "_client": None, "_ids": {}}

    def _safe(self, what: str, fn: Any) -> Any:
        try:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri)
            return fn()
        except Exception as err:  # a tracking outage must not stop the search
            log.warning("MLflow %s failed at %s (%s); the search goes on", what, redact(self.uri), err)
            return None

    def _run_id(self, trial: Any) -> str | None:
        if trial.trial_id not in self._ids:
            found = self._safe("search", lambda: self._find(trial.trial_id))
            self._ids[trial.trial_id] = found or self._safe("create", lambda: self._create(trial))
        return self._ids[trial.trial_id]

    def _find(self, trial_id: str) -> str | None:
        where = f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
        runs = self._client.search_runs([self.experiment_id], where)
        return runs[0].info.run_id if runs else None

    def _create(self, trial: Any) -> str:
        from mlflow.entities import Param

        tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id, "fracture.step": "tune-trial"}
        run = self._client.create_run(self.experiment_id, run_name=f"trial-{trial.trial_id}", tags=tags)
        params = [Param(k, v) for k, v in flatten(trial.config).items()]
        self._client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Create (or, on a restored search, reopen) the trial's child run."""
        run_id = self._run_id(trial)
        if run_id:
            self._safe("update", lambda: self._client.update_run(run_id, status="RUNNING"))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log an epoch's metrics at step = epoch (and, on a continued trial, the epoch it continued from)."""
        from mlflow.entities import Metric, RunTag

        run_id = self._run_id(trial)
        if not run_id or "val_auroc" not in result:
            return
        stamp = int(result.get("timestamp", 0) * 1000)
        items = [Metric(k, float(v), stamp, int(result["epoch"])) for k, v in trial_metrics(result).items() if v == v]
        tags = [RunTag(RESUMED_TAG, str(result["resumed_from"]))] if result.get("resumed_from") else []
        self._safe("log_metrics", lambda: self._client.log_batch(run_id, metrics=items, tags=tags))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """FINISHED; tagged with whether ASHA stopped it and after how many epochs."""
        result = trial.last_result or {}
        early = stopped_early(result)
        tags = {STOPPED_EARLY_TAG: str(early).lower(), "fracture.tune.epochs": str(result.get("epoch", 0))}
        self._end(trial, "FINISHED", tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """FAILED, with the first line of the trial's error as a tag."""
        reason = redact(error_line(trial))
        self._end(trial, "FAILED", {"fracture.tune.error": reason})

    def _end(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        run_id = self._run_id(trial)
        if run_id:
            items = [RunTag(k, v) for k, v in tags.items()]
            self._safe("end", lambda: self._client.log_batch(run_id, tags=items))
            self._safe("end", lambda: self._client.set_terminated(run_id, status=status))
        # An ended trial is never resumed: its checkpoints (full model and optimizer state) only take space.
        shutil.rmtree(Path(self.out_dir) / "trials" / trial.trial_id / "checkpoints", ignore_errors=True)
