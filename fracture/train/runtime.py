"""Runtime: the device, DDP under torchrun, autocast precision, seeding and deterministic kernels."""

from __future__ import annotations

import logging
import os
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fracture.config import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where this process trains and with which precision."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # autocast dtype, None = full precision
    use_scaler: bool = False  # fp16 needs loss scaling

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and logs to MLflow."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Running under torchrun with more than one process."""
        return self.world_size > 1


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Autocast dtype and whether to scale the loss: bf16 on CUDA for `auto`/`bf16`, fp16 + scaler, off on CPU."""
    if device.type != "cuda" or amp == "off":
        return None, False
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False


def setup_runtime(tp: TrainParams) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype, use_scaler = resolve_amp(tp.amp, device)
    if device.type == "cpu" and tp.amp in ("bf16", "fp16"):
        log.info("train.amp=%s ignored on CPU (full precision)", tp.amp)
    return Runtime(device, rank, world_size, amp_dtype, use_scaler)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic(device: torch.device) -> Any:
    """Deterministic kernels on CPU for the block (restored afterwards); on CUDA speed wins."""
    if device.type != "cpu":
        yield
        return
    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def autocast(rt: Runtime) -> Any:
    """Autocast to the runtime's dtype, or no-op in full precision."""
    if rt.amp_dtype is None:
        return nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)
