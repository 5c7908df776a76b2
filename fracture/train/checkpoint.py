"""Checkpoints: the loop's progress, every RNG, and the atomic last.pt / best.pt that resume reads."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fracture.base.errors import InputError
from fracture.base.io import save_torch
from fracture.config import Params
from fracture.train.optim import Optimisation

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the epoch loop has achieved so far (saved in the checkpoint)."""

    epoch: int = 0  # epochs completed
    best_score: float = float("-inf")  # val AUROC; -val loss when val holds one class (AUROC undefined)
    best_auroc: float = float("nan")
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # no wall times: the model dir is reproducible

    def record(self, row: dict[str, float]) -> bool:
        """Append an epoch's row; return whether it is the new best on val."""
        self.history.append(row)
        score = row["val_auroc"] if math.isfinite(row["val_auroc"]) else -row["val_loss"]
        if self.best_epoch and not score > self.best_score:
            return False
        self.best_score, self.best_auroc, self.best_epoch = score, row["val_auroc"], int(row["epoch"])
        return True

    def should_stop(self, patience: int) -> bool:
        """`patience` epochs without a better val AUROC."""
        return self.epoch - self.best_epoch >= patience


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what rng_state saved."""
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["loader"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    save_torch(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True, on CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: many exception types
        raise InputError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None


def resume_key(params: Params) -> str:
    """Hash of the params sections that shape the training run; resuming under different ones is refused."""
    shaping = {k: v for k, v in params.to_dict().items() if k in ("base", "preprocess", "model", "train")}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_payload(
    model: nn.Module, opt: Optimisation, prog: LoopState, generator: torch.Generator, key: str
) -> dict[str, Any]:
    """The full training state after an epoch."""
    return {
        "model": model.state_dict(),
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict(),
        "epoch": prog.epoch,
        "best_score": prog.best_score,
        "best_auroc": prog.best_auroc,
        "best_epoch": prog.best_epoch,
        "history": prog.history,
        "rng": rng_state(generator),
        "params_key": key,
    }


def restore_checkpoint(
    path: Path, model: nn.Module, opt: Optimisation, generator: torch.Generator, key: str
) -> LoopState:
    """Load last.pt into the model, optimizer, scheduler, scaler and RNGs; return the loop's progress."""
    ckpt = load_checkpoint(path)
    if ckpt.get("params_key") != key:
        raise InputError(
            f"{path}: written with different model/train/data params; resume with the same params.yaml "
            "or start afresh without --resume (move the checkpoints away)"
        )
    model.load_state_dict(ckpt["model"])
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    opt.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"], generator)
    log.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return LoopState(
        ckpt["epoch"],
        ckpt["best_score"],
        ckpt["best_auroc"],
        ckpt["best_epoch"],
        [{k: v for k, v in row.items() if k != "seconds"} for row in ckpt["history"]],  # older checkpoints
    )
