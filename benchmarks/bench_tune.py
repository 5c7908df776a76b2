"""Benchmark 8: training throughput inside a Ray Tune trial vs `fracture train`, same recipe, same epochs, one run.

Product: `fracture tune` with a one-trial space (the base recipe itself), on local Ray, the trial declaring one CPU.
Baseline: `fracture train` on the same data and params. Both run as the CLI runs them (subprocesses, one torch
thread each, so that the comparison is per core and stable on a shared machine). Both are timed the same way: the
period from one epoch's end to the next, so everything paid per epoch counts (train, val, checkpoints, MLflow
logging; in the trial also the report to Ray): for `fracture train` the gaps between the MLflow timestamps of
`train/epoch_seconds`, for the trial Ray's `time_this_iter_s` (the gap between its reports). The first epoch has
no period; the median of the others is compared, as train images per second. Ray's start-up and the trial's
process start are reported beside it (`details.wall_s`), not in the ratio: they are paid once per search and per
trial, not per epoch. Target: >= 0.9 of `fracture train`'s throughput.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Target, demo_params, make_result, median, quiet_environment, scratch_dir, spread

NAME = "tune"
FULL = {"n_train": 256, "n_val": 64, "epochs": 5, "size": 64, "reps": 2}
QUICK = {"n_train": 32, "n_val": 16, "epochs": 2, "size": 32, "reps": 1}


def _space(params: Any, epochs: int) -> dict[str, Any]:
    """One trial: the base learning rate as a one-value grid; ASHA cannot stop a lone trial."""
    return {
        "scheduler": {"grace_period": epochs, "reduction_factor": 2},
        "max_concurrent_trials": 1,
        "resources_per_trial": {"cpu": 1, "gpu": 0},
        "space": {"train.lr": {"grid": [params.train.lr]}},
    }


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _train_periods(uri: str, experiment: str) -> list[list[float]]:
    """Seconds between consecutive epoch ends of every `fracture train` run (MLflow timestamps), oldest run first."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`fracture.step` = 'train'", order_by=["start_time ASC"])
    out = []
    for run in runs:
        stamps = [
            m.timestamp
            for m in sorted(client.get_metric_history(run.info.run_id, "train/epoch_seconds"), key=lambda m: m.step)
        ]
        out.append([(b - a) / 1000 for a, b in zip(stamps, stamps[1:], strict=False)])
    return out


def _trial_periods(search_dir: Path) -> list[float]:
    """Seconds between consecutive reports of the search's one trial (Ray's `time_this_iter_s`, epochs 2..)."""
    from ray.tune import ExperimentAnalysis

    (frame,) = ExperimentAnalysis(str(search_dir)).trial_dataframes.values()
    return frame.sort_values("epoch")["time_this_iter_s"].tolist()[1:]


def run(quick: bool = False) -> dict[str, Any]:
    """Images/s of a Ray Tune trial's epochs vs `fracture train`'s, interleaved, same data, params and epochs."""
    from fracture.config import dump_params
    from tests.unit.train.test_train import write_tiny_dataset

    cfg = QUICK if quick else FULL
    quiet_environment()
    overrides = {
        "base": {"image_size": cfg["size"]},
        "train": {"epochs": cfg["epochs"], "batch_size": 16, "effective_batch_size": 16, "num_workers": 0},
    }
    params = demo_params(overrides)
    with scratch_dir(NAME) as work:
        data = write_tiny_dataset(work / "data", {"train": cfg["n_train"], "val": cfg["n_val"], "test": 8}, cfg["size"])
        dump_params(params, work / "params.yaml")
        (work / "space.yaml").write_text(yaml.safe_dump(_space(params, cfg["epochs"])))
        uri = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri}
        inputs = ["--manifest", str(data["manifest"]), "--splits", str(data["splits"]), "--cache", str(data["cache"])]
        cli = [sys.executable, "-m", "fracture.cli"]
        wall: dict[str, list[float]] = {"train": [], "tune": []}
        for rep in range(cfg["reps"]):
            order = ("train", "tune") if rep % 2 == 0 else ("tune", "train")
            for name in order:
                args = ["train", "--out", str(work / f"model-{rep}")] if name == "train" else [
                    "tune", "--space", str(work / "space.yaml"), "--trials", "1", "--out", str(work / f"tune-{rep}")
                ]  # fmt: skip
                wall[name].append(_run([*cli, *args, "--params", str(work / "params.yaml"), *inputs], env))
        periods = {
            "train": _train_periods(uri, params.train.experiment),
            "tune": [_trial_periods(work / f"tune-{rep}" / "search") for rep in range(cfg["reps"])],
        }
    return _result(params, cfg, periods, wall)


def _result(params: Any, cfg: dict[str, Any], periods: dict[str, list[list[float]]], wall: dict) -> dict[str, Any]:
    for name, runs in periods.items():
        if len(runs) != cfg["reps"] or any(len(r) != cfg["epochs"] - 1 for r in runs):
            raise RuntimeError(f"{name}: expected {cfg['reps']} run(s) of {cfg['epochs']} epochs, got {runs}")
    steady = {name: [s for r in runs for s in r] for name, runs in periods.items()}
    rate = {name: cfg["n_train"] / median(s) for name, s in steady.items()}
    details = {
        "model": f"{params.model.backbone} with {dict(params.model.backbone_kwargs)}, {cfg['size']} px",
        "train_images": cfg["n_train"],
        "val_images": cfg["n_val"],
        "epochs": cfg["epochs"],
        "runs_each": cfg["reps"],
        "torch_threads": 1,
        "trial_resources": {"cpu": 1, "gpu": 0},
        "images_per_s": {n: round(v, 2) for n, v in rate.items()},
        "epoch_period_s": {n: spread(s) for n, s in steady.items()},
        "epoch_period_s_per_run": periods,
        "wall_s": {n: spread(v) for n, v in wall.items()},
        "wall_note": "whole command: process start, imports, data, epochs, MLflow; tune adds Ray's start-up, the "
        "trial's worker process and the search's bookkeeping (paid once per search / trial, not per epoch)",
        "baseline": "fracture train, same params, data and epochs (period between its epoch ends)",
    }
    return make_result(
        NAME,
        "trial_train_images_per_s",
        rate["tune"],
        rate["train"],
        "images/s",
        Target(0.9, text=">= 0.9 of fracture train's per-epoch throughput"),
        details,
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
