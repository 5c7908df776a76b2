"""Optimisation: AdamW, linear warmup + cosine per optimizer step, the fp16 loss scaler, weighted BCE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fracture.base.errors import ConfigError
from fracture.config import TrainParams
from fracture.train.runtime import Runtime


def grad_accumulation(tp: TrainParams, world_size: int) -> int:
    """Micro-batches per optimizer step that keep `train.effective_batch_size` whatever the number of processes.

    Each step sees effective_batch_size = batch_size x world_size x accumulation images, so 1 process x batch 16 x
    accumulation 2 and 2 processes x batch 16 x accumulation 1 take the same step.

    Raises:
        ConfigError: the effective batch cannot be split evenly over this many processes.
    """
    per_pass = tp.batch_size * world_size
    if tp.effective_batch_size % per_pass:
        raise ConfigError(
            f"train.effective_batch_size: {tp.effective_batch_size} images per step cannot be split over "
            f"{world_size} process(es) x train.batch_size {tp.batch_size}; use a multiple of {per_pass}"
        )
    return tp.effective_batch_size // per_pass


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total_steps` (multiplier of the base lr)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress_, 1.0)))


@dataclass
class Optimisation:
    """Everything that steps: optimizer, per-step schedule, loss scaler, loss."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module


def make_optimisation(model: nn.Module, tp: TrainParams, rt: Runtime, steps_per_epoch: int, pw: float) -> Optimisation:
    """AdamW (fused on CUDA), warmup + cosine per optimizer step, GradScaler for fp16, weighted BCE."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay, fused=True if rt.device.type == "cuda" else None
    )
    total, warmup = tp.epochs * steps_per_epoch, round(tp.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, total))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pw], device=rt.device))
    return Optimisation(opt, sched, scaler, loss_fn)
