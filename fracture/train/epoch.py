"""One epoch: the train pass with gradient accumulation, and the val pass that scores the val split."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from fracture.base.parallel import progress
from fracture.config import TrainParams
from fracture.model.data import BatchPrep
from fracture.train.optim import Optimisation, grad_accumulation
from fracture.train.runtime import Runtime, autocast


def _to_device(batch: Any, rt: Runtime, prep: BatchPrep | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input and labels on the device: `prep` (scale, augment, normalise there) or ready `(x, y)` batches."""
    if prep is not None:
        return prep(batch, rt.device)
    x, y = batch
    return x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)


def train_one_epoch(
    net: nn.Module, loader: DataLoader, opt: Optimisation, rt: Runtime, tp: TrainParams, prep: BatchPrep | None = None
) -> float:
    """One pass over the train shard with gradient accumulation; returns the mean train loss (all ranks).

    Each optimizer step averages the gradient over `train.effective_batch_size` images: the micro-batches of this
    process (each loss divided by their count) and, under DDP, the processes (DDP averages across ranks).

    Batches are uint8 `Batch`es turned into input on the device by `prep` (the train dataset's), or, without
    `prep`, ready `(x, y)` pairs of normalised float images and labels. The loss is summed on the device and read
    once at the end (no host sync per step).
    """
    net.train()
    total, count = torch.zeros((), device=rt.device), 0
    n, accum = len(loader), grad_accumulation(tp, rt.world_size)
    params = [p for p in net.parameters() if p.requires_grad]
    for i, batch in enumerate(progress(loader, total=n, desc="train")):
        x, y = _to_device(batch, rt, prep)
        window = min(accum, n - (i // accum) * accum)  # micro-batches in this accumulation window
        step_now = (i + 1) % accum == 0 or i + 1 == n
        sync = nullcontext() if step_now or not rt.distributed else net.no_sync()
        with sync:
            with autocast(rt):
                loss = opt.loss_fn(net(x).float(), y)
            opt.scaler.scale(loss / window).backward()
        total += loss.detach() * y.shape[0]
        count += y.shape[0]
        if step_now:
            if tp.grad_clip > 0:
                opt.scaler.unscale_(opt.optimizer)
                nn.utils.clip_grad_norm_(params, tp.grad_clip)
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scheduler.step()
    stats = torch.stack([total, torch.tensor(float(count), device=rt.device)])
    if rt.distributed:
        dist.all_reduce(stats)
    return (stats[0] / stats[1].clamp(min=1)).item()


def score_val(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, rt: Runtime, prep: BatchPrep | None = None
) -> tuple[float, float]:
    """Val loss and AUROC over the whole val split (every rank computes the same numbers); batches as in training."""
    model.eval()
    logits, labels = [], []
    with torch.inference_mode(), autocast(rt):
        for batch in progress(loader, total=len(loader), desc="val"):
            x, y = _to_device(batch, rt, prep)
            logits.append(model(x).float())
            labels.append(y)
    z, y = torch.cat(logits), torch.cat(labels)
    loss = loss_fn(z, y).item()
    return loss, auroc(y.cpu().numpy(), torch.sigmoid(z).cpu().numpy())


def auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC, NaN when `y` holds one class only."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, probs))
