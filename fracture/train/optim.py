"""Optimisation: AdamW, linear warmup + cosine per optimizer step, the fp16 loss scaler, weighted BCE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fracture.config import TrainParams
from fracture.train.runtime import Runtime


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
