"""`run_tune`: a Ray Tune search with ASHA over the training recipe; the best recipe as a complete params file.

Layout of `out_dir`: `search/` (Ray Tune's experiment state, what `--resume` restores), `trials/<id>/checkpoints`
(an unfinished trial's last epoch; removed when the trial ends), `trials.csv` (one row per trial),
`best_params.yaml` (the base params with the best trial's recipe: `fracture train --params` and, copied to
params.yaml, `dvc exp run` take it as is), `best.json` (the best trial, its val AUROC and the `dvc exp run -S`
arguments of its recipe).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.base.errors import GateError, InputError
from fracture.base.io import write_json
from fracture.config import Params, dump_params
from fracture.tracking import GIT_COMMIT_TAG, Tracker, flatten, git_commit, params_hash, run_name
from fracture.train.loader import load_training_data
from fracture.tune.runs import SEARCH_TAG, TrialRuns, error_line, stopped_early
from fracture.tune.space import SearchSpace, dvc_overrides, load_space, ray_param_space, trial_params
from fracture.tune.trial import train_trial

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
METRIC = "val_auroc"  # selection on val only: the trials never read the test split
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


def search_tag(out_dir: Path) -> str:
    """Which search a parent run records: its search dir's absolute path, hashed."""
    return hashlib.sha256(str((out_dir / SEARCH_DIR).resolve()).encode()).hexdigest()[:16]


def init_ray() -> bool:
    """Join the cluster at RAY_ADDRESS, else start a local Ray; return whether this call started it."""
    import ray

    # Ray Tune saves the experiment state every `TUNE_GLOBAL_CHECKPOINT_S`, 10 s or more by default: a killed
    # search would lose the trials of its last seconds. Its state is a few kB, so save it at every change.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING)
    log.info("Ray: %s (%s)", address or "a local instance", ray.cluster_resources())
    return True


def trial_resources(space: SearchSpace) -> dict[str, float]:
    """CPU and GPU one trial declares; `gpu: auto` takes one GPU when the cluster has any."""
    import ray

    gpu = space.resources_per_trial.gpu
    if gpu == "auto":
        gpu = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"cpu": space.resources_per_trial.cpu, "gpu": float(gpu)}


def _tuner(params: Params, space: SearchSpace, trainable: Any, callback: TrialRuns, out_dir: Path, trials: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    scheduler = ASHAScheduler(
        time_attr="epoch",  # the loop's epoch, also after a restored trial continues from its checkpoint
        max_t=params.train.epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode="max",
        scheduler=scheduler,
        num_samples=trials,
        search_alg=BasicVariantGenerator(max_concurrent=space.max_concurrent_trials, random_state=params.base.seed),
    )
    run_config = tune.RunConfig(
        name=SEARCH_DIR,
        storage_path=str(out_dir),
        callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),  # a failed trial: recorded, search on
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=ray_param_space(space), tune_config=tune_config, run_config=run_config)


def trial_row(trial: Any, history: pd.DataFrame | None) -> dict[str, Any]:
    """One trial as a row: id, status, epochs run, best val AUROC and its epoch, whether ASHA stopped it, recipe."""
    failed = trial.status == "ERROR"
    last = trial.last_result or {}
    history = history if history is not None and METRIC in history else pd.DataFrame({METRIC: [], "epoch": []})
    scored = history.dropna(subset=[METRIC])
    best = scored.loc[scored[METRIC].idxmax()] if len(scored) else None
    return {
        "trial_id": trial.trial_id,
        "status": "error" if failed else "finished",
        "epochs": int(last.get("epoch", 0)),
        "best_val_auroc": float(best[METRIC]) if best is not None else float("nan"),
        "best_epoch": int(best["epoch"]) if best is not None else 0,
        "stopped_early": not failed and stopped_early(last),
        "error": error_line(trial) if failed else "",
        **{f"config.{k}": v for k, v in trial.config.items()},
    }


def summarise(state_dir: Path) -> pd.DataFrame:
    """One row per trial of the search in `state_dir`, sorted by trial id (Ray's experiment state, read back)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(state_dir))
    rows = [trial_row(t, analysis.trial_dataframes.get(t.trial_id)) for t in analysis.trials]
    return pd.DataFrame(rows).sort_values("trial_id", kind="stable").reset_index(drop=True)


def best_trial(table: pd.DataFrame) -> pd.Series:
    """The trial with the highest val AUROC at any epoch (what `fracture train` would select)."""
    scored = table.dropna(subset=["best_val_auroc"])
    if scored.empty:
        raise GateError(f"no trial produced a val AUROC ({len(table)} trial(s); see trials.csv for their errors)")
    return scored.loc[scored["best_val_auroc"].idxmax()]


def _start_parent(params: Params, space: SearchSpace, space_path: Path, out_dir: Path, resume: bool) -> Tracker:
    tracker = Tracker()
    tag = search_tag(out_dir)
    experiment = params.train.experiment
    resume_id = tracker.find_run(experiment, {SEARCH_TAG: tag}, UNFINISHED) if resume else None
    tags = {"fracture.step": "tune", SEARCH_TAG: tag, GIT_COMMIT_TAG: git_commit() or "unknown"}
    tracker.start(experiment, run_name("tune", params_hash(params)), tags, resume_run_id=resume_id)
    if not tracker.resumed:
        tracker.log_params({f"space.{k}": v for k, v in flatten(space.model_dump(mode="json")).items()})
        tracker.log_artifacts([space_path])
    return tracker


def _experiment_id(parent: Tracker) -> str:
    from mlflow import MlflowClient

    try:
        return MlflowClient(parent.uri).get_run(parent.run_id).info.experiment_id if parent.run_id else ""
    except Exception as err:  # tracking is best effort, as in train
        log.warning("MLflow: cannot read the parent run (%s); trials are not recorded", err)
        return ""


def _write_best(params: Params, table: pd.DataFrame, out_dir: Path) -> dict:
    best = best_trial(table)
    config = {k.removeprefix("config."): v for k, v in best.items() if k.startswith("config.")}
    config = {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}
    dump_params(trial_params(params.to_dict(), config, f"trial {best['trial_id']}"), out_dir / "best_params.yaml")
    summary = {
        "trial_id": best["trial_id"],
        "val_auroc": float(best["best_val_auroc"]),
        "best_epoch": int(best["best_epoch"]),
        "config": config,
        "dvc_exp_run": ["dvc", "exp", "run", *[a for kv in dvc_overrides(config) for a in ("-S", kv)]],
        "n_trials": len(table),
        "n_errored": int((table["status"] == "error").sum()),
        "n_stopped_early": int(table["stopped_early"].sum()),
    }
    table.to_csv(out_dir / "trials.csv", index=False)
    write_json(out_dir / "best.json", summary)
    return summary


def run_tune(
    params: Params,
    space_path: Path,
    manifest_path: Path,
    splits_path: Path,
    cache_dir: Path,
    out_dir: Path,
    trials: int,
    resume: bool = False,
) -> dict:
    """Search the training recipe with Ray Tune and ASHA, record it in MLflow, write the best params file.

    Args:
        params: base params (everything the space does not search stays as here).
        space_path: the search-space file.
        manifest_path: manifest.parquet from ingest.
        splits_path: splits.parquet from split (trials read its train and val rows only).
        cache_dir: the preprocess cache, shared by every trial (never rebuilt).
        out_dir: the search dir (see the module docstring); on a Ray cluster, storage every node sees.
        trials: samples of the space (Ray's num_samples; a `grid` rule multiplies them).
        resume: restore the interrupted search in out_dir (Ray's Tuner.restore) instead of starting afresh.

    Returns:
        best.json's content, plus `mlflow_run_id` (the parent run).
    """
    space = load_space(space_path, params)
    if trials < 1:
        raise InputError(f"--trials: need at least 1, got {trials}")
    out_dir, data = Path(out_dir).resolve(), resolve_inputs(params, manifest_path, splits_path, cache_dir)
    state = out_dir / SEARCH_DIR
    if state.exists() and not resume:
        raise InputError(f"{state}: holds a search already; pass --resume to continue it, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = init_ray()
    try:
        parent = _start_parent(params, space, Path(space_path), out_dir, resume)
        tuner = _restore_or_create(params, space, parent, data, out_dir, trials, resume)
        try:
            tuner.fit()
            summary = _write_best(params, summarise(state), out_dir)
        except Exception:
            parent.end("FAILED")
            raise
        except BaseException:  # Ctrl-C, SIGTERM
            parent.end("KILLED")
            raise
        _finish_parent(parent, summary, out_dir)
        return {**summary, "mlflow_run_id": parent.run_id}
    finally:
        if started:
            import ray

            ray.shutdown()


def resolve_inputs(params: Params, manifest_path: Path, splits_path: Path, cache_dir: Path) -> dict[str, str]:
    """Absolute input paths (a trial runs in Ray's working directory), checked by loading them once, here."""
    data = {"manifest": manifest_path, "splits": splits_path, "cache": cache_dir}
    data = {k: str(Path(p).resolve()) for k, p in data.items()}
    load_training_data(params, Path(data["manifest"]), Path(data["splits"]), Path(data["cache"]))  # fail fast
    return data


def _restore_or_create(
    params: Params, space: SearchSpace, parent: Tracker, data: dict, out_dir: Path, trials: int, resume: bool
) -> Any:
    from ray import tune

    state = out_dir / SEARCH_DIR
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, base=params.to_dict(), data=data, out_dir=str(out_dir)),
        trial_resources(space),
    )
    if resume and tune.Tuner.can_restore(str(state)):
        log.info("restoring the search in %s", state)
        return tune.Tuner.restore(str(state), trainable, resume_unfinished=True, resume_errored=False)
    if resume:
        log.warning("--resume: no search to restore in %s; starting afresh", state)
    callback = TrialRuns(parent.uri, _experiment_id(parent), parent.run_id or "", str(out_dir))
    return _tuner(params, space, trainable, callback, out_dir, trials)


def _finish_parent(parent: Tracker, summary: dict, out_dir: Path) -> None:
    parent.log_metrics({"best/val_auroc": summary["val_auroc"]}, step=summary["best_epoch"])
    parent.set_tags(
        {
            "best.trial_id": summary["trial_id"],
            "n_trials": summary["n_trials"],
            "n_errored": summary["n_errored"],
            "n_stopped_early": summary["n_stopped_early"],
        }
        | {f"best.{k}": v for k, v in flatten(summary["config"]).items()}
    )
    parent.log_artifacts([out_dir / n for n in ("best_params.yaml", "best.json", "trials.csv")])
    parent.end("FINISHED")
    log.info(
        "best trial %s: val AUROC %.4f -> %s", summary["trial_id"], summary["val_auroc"], out_dir / "best_params.yaml"
    )
