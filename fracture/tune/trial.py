"""One Ray Tune trial: the training loop of `fracture train` on one sampled recipe, reporting after every epoch.

The trial builds the same session (`fracture.train.loop.build_session`) and runs the same epochs (`fit`) as
`fracture train`; the only addition is the per-epoch callback that hands the epoch's val AUROC to Ray, where
ASHA decides whether the trial goes on. Its checkpoints live in `<search dir>/trials/<trial id>/checkpoints`: a
restored search (`fracture tune --resume`) continues an interrupted trial from its last epoch through the loop's
own resume. The trial logs nothing to MLflow itself: the driver records every trial as a child run
(`fracture.tune.runs`), so a trial that ASHA stops, or that dies, is still recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from fracture.tracking import Tracker
from fracture.train.loader import load_training_data
from fracture.train.loop import build_session, fit, maybe_resume
from fracture.train.runtime import deterministic, setup_runtime
from fracture.tune.space import trial_params

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"  # under the search's --out: one checkpoint dir per trial id


def epoch_report(
    row: dict[str, float], seconds: float, n_train: int, loop_done: bool, resumed_from: int
) -> dict[str, Any]:
    """What a trial reports to Ray after an epoch (ASHA reads `val_auroc` at `epoch`).

    `loop_done`: the loop itself ends after this epoch (its last epoch, or early stopping on patience), so a
    trial that ends without it was stopped by ASHA. `resumed_from`: the checkpoint's epoch this process
    continued from (0: a fresh start).
    """
    return {
        **row,
        "epoch": int(row["epoch"]),
        "epoch_seconds": seconds,
        "images_per_s": n_train / max(seconds, 1e-9),
        "loop_done": loop_done,
        "resumed_from": resumed_from,
    }


def train_trial(config: dict[str, Any], base: dict, data: dict[str, str], out_dir: str) -> None:
    """Ray Tune function trainable: train the base params with `config` applied, report every epoch.

    Args:
        config: the sampled recipe, dotted params keys -> values.
        base: the base params mapping (params.yaml's shape).
        data: absolute `manifest`, `splits` and `cache` paths (a trial's working directory is Ray's, not ours).
        out_dir: the search's absolute --out.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    params = trial_params(base, config, f"trial {trial_id}")
    threads = int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))
    torch.set_num_threads(max(threads, 1))  # the CPUs the trial declared, not every core of the node
    rt = setup_runtime(params.train)
    with deterministic(rt.device):
        images, rows = load_training_data(params, Path(data["manifest"]), Path(data["splits"]), Path(data["cache"]))
        s = build_session(params, rt, images, rows, Path(out_dir) / TRIALS_DIR / trial_id)
        s.tracker = Tracker(enabled=False)  # the driver owns the MLflow runs
        prog = maybe_resume(s, resume=True)  # no checkpoint yet: a fresh start
        n_train, resumed_from = len(s.train_dl.dataset), prog.epoch
        reported: list[int] = []

        def done() -> bool:
            return prog.epoch >= params.train.epochs or prog.should_stop(params.train.early_stopping_patience)

        def report(row: dict[str, float], seconds: float) -> None:
            reported.append(int(row["epoch"]))
            tune.report(epoch_report(row, seconds, n_train, done(), resumed_from))

        fit(s, prog, on_epoch=report)
        if not reported and prog.history:  # restored after its last epoch: Ray still needs a result
            tune.report(epoch_report(prog.history[-1], 0.0, n_train, done(), resumed_from))
