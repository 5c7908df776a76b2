"""The epoch loop: the objects of one run (Session), an epoch with its checkpoint, early stopping, resume."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fracture.base.errors import ConfigError
from fracture.config import Params
from fracture.contracts.artifacts import BEST_CHECKPOINT, LAST_CHECKPOINT
from fracture.model.core import build_model
from fracture.tracking import Tracker
from fracture.train.checkpoint import LoopState, checkpoint_payload, restore_checkpoint, resume_key, save_checkpoint
from fracture.train.epoch import score_val, train_one_epoch
from fracture.train.init import init_backbone, set_backbone_frozen
from fracture.train.loader import make_loaders, pos_weight
from fracture.train.optim import Optimisation, grad_accumulation, make_optimisation
from fracture.train.runtime import Runtime, seed_everything

log = logging.getLogger(__name__)


@dataclass
class Session:
    """The objects one training run works with."""

    params: Params
    rt: Runtime
    model: nn.Module  # the plain module (state_dict keys without DDP/compile prefixes)
    net: nn.Module  # what the train step calls: maybe DDP- and compile-wrapped
    opt: Optimisation
    train_dl: DataLoader
    val_dl: DataLoader
    generator: torch.Generator
    out_dir: Path
    key: str
    tracker: Tracker


def build_session(params: Params, rt: Runtime, images: np.ndarray, rows: pd.DataFrame, out_dir: Path) -> Session:
    """Seed, then build the loaders, the model (DDP- and compile-wrapped when asked) and the optimisation."""
    seed_everything(params.base.seed)
    generator = torch.Generator().manual_seed(params.base.seed)
    train_dl, val_dl = make_loaders(params, images, rows, rt, generator)
    model = build_model(params.model, params.base.image_size)
    if params.model.init_from:
        init_backbone(model, Path(params.model.init_from))
    if params.train.freeze_backbone_epochs and rt.distributed:
        raise ConfigError("train.freeze_backbone_epochs: not supported with several processes (DDP); set it to 0")
    model = model.to(rt.device)
    net: nn.Module = model
    if rt.distributed:
        net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if params.train.compile:
        net = torch.compile(net)
    steps = math.ceil(len(train_dl) / grad_accumulation(params.train, rt.world_size))
    pw = pos_weight(rows.loc[rows["split"] == "train", "label"].to_numpy())
    if rt.is_main:
        log.info(
            "train %d / val %d images, pos_weight %.3f, %d process(es) x batch %d x accumulation %d per step",
            len(train_dl.dataset),
            len(val_dl.dataset),
            pw,
            rt.world_size,
            params.train.batch_size,
            grad_accumulation(params.train, rt.world_size),
        )
    opt = make_optimisation(model, params.train, rt, steps, pw)
    return Session(
        params, rt, model, net, opt, train_dl, val_dl, generator, out_dir, resume_key(params), Tracker(rt.is_main)
    )


def epoch_metrics(row: dict[str, float], seconds: float) -> dict[str, float]:
    """An epoch's history row as MLflow metrics, grouped by split: `train/loss`, `val/auroc`, ..."""
    return {
        "train/loss": row["train_loss"],
        "val/loss": row["val_loss"],
        "val/auroc": row["val_auroc"],
        "train/lr": row["lr"],
        "train/epoch_seconds": seconds,
    }


def _run_epoch(s: Session, prog: LoopState) -> float:
    """Train, validate, record, checkpoint one epoch (rank 0 writes); return its train + val wall time, s."""
    start = time.perf_counter()
    s.train_dl.sampler.set_epoch(prog.epoch)
    set_backbone_frozen(s.model, prog.epoch < s.params.train.freeze_backbone_epochs)
    train_loss = train_one_epoch(s.net, s.train_dl, s.opt, s.rt, s.params.train, s.train_dl.dataset.prep)
    val_loss, val_auc = score_val(s.model, s.val_dl, s.opt.loss_fn, s.rt, s.val_dl.dataset.prep)
    prog.epoch += 1
    seconds = time.perf_counter() - start  # train + val: what MLflow's train/epoch_seconds records
    lr = s.opt.scheduler.get_last_lr()[0]
    row = {"epoch": prog.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_auroc": val_auc, "lr": lr}
    improved = prog.record(row)
    if s.rt.is_main:
        log.info("epoch %(epoch)d: train_loss %(train_loss).4f val_loss %(val_loss).4f val_auroc %(val_auroc).4f", row)
        # Wall time goes to MLflow only: the model dir (history, checkpoints) stays a pure function of the inputs.
        s.tracker.log_metrics(epoch_metrics(row, seconds), step=prog.epoch)
        if improved:
            save_checkpoint(s.out_dir / "checkpoints" / BEST_CHECKPOINT, s.model.state_dict())
        payload = checkpoint_payload(s.model, s.opt, prog, s.generator, s.key)
        save_checkpoint(s.out_dir / "checkpoints" / LAST_CHECKPOINT, payload)
    if s.rt.distributed:
        dist.barrier()
    return seconds


# Called after each epoch's checkpoint with the epoch's history row and its wall time (s): a hyperparameter
# search reports val AUROC to its scheduler this way (fracture.tune), without a loop of its own.
EpochCallback = Callable[[dict[str, float], float], None]


def fit(s: Session, prog: LoopState, on_epoch: EpochCallback | None = None) -> LoopState:
    """Epochs until `train.epochs` or early stopping on val AUROC; `on_epoch` hears of every epoch run."""
    tp = s.params.train
    while prog.epoch < tp.epochs and not prog.should_stop(tp.early_stopping_patience):
        seconds = _run_epoch(s, prog)
        if on_epoch is not None:
            on_epoch(prog.history[-1], seconds)
    if prog.should_stop(tp.early_stopping_patience) and prog.epoch < tp.epochs:
        log.info("early stop after epoch %d (best val AUROC at epoch %d)", prog.epoch, prog.best_epoch)
    return prog


def maybe_resume(s: Session, resume: bool) -> LoopState:
    """The loop's progress: restored from checkpoints/last.pt when `resume` is set and it exists, else fresh."""
    last = s.out_dir / "checkpoints" / LAST_CHECKPOINT
    if not resume:
        return LoopState()
    if not last.is_file():
        log.warning("--resume: no checkpoint at %s; starting from scratch", last)
        return LoopState()
    return restore_checkpoint(last, s.model, s.opt, s.generator, s.key)
