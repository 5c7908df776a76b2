"""Multi-GPU launcher: re-run `fracture train` under torchrun when more than one GPU is asked for and visible.

`train.devices` is `auto` (one process per visible GPU) or a count. With more than one process the current
command line is executed again as `torchrun --standalone --nproc_per_node=N -m fracture.cli <same arguments>`;
each rank then finds torchrun's `WORLD_SIZE` / `RANK` / `LOCAL_RANK` and `fracture.train.setup_runtime` joins the
process group. Inside torchrun (those variables set) nothing is re-launched, so the launch never recurses.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from fracture.base.errors import ConfigError

log = logging.getLogger(__name__)

TORCHRUN_ENV = ("WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def processes_wanted(devices: str | int, visible_gpus: int) -> int:
    """Training processes for `train.devices` given the GPUs this machine shows (0 on a CPU-only machine).

    Raises:
        ConfigError: a count larger than the visible GPUs (more than 1 process needs that many GPUs).
    """
    if devices == "auto":
        return max(visible_gpus, 1)
    if devices > 1 and devices > visible_gpus:
        raise ConfigError(f"train.devices: {devices} processes asked for, but only {visible_gpus} GPU(s) are visible")
    return int(devices)


def under_torchrun(env: Mapping[str, str]) -> bool:
    """Whether this process was started by torchrun (it sets these variables for every rank)."""
    return any(key in env for key in TORCHRUN_ENV)


def torchrun_command(nproc: int, argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command that re-runs this CLI invocation (`argv` without the program name) under torchrun."""
    launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "fracture.cli", *argv]


def plan_launch(devices: str | int, visible_gpus: int, env: Mapping[str, str], argv: Sequence[str]) -> list[str] | None:
    """The torchrun command to run instead of training in this process, or None to train here."""
    if under_torchrun(env):
        return None
    nproc = processes_wanted(devices, visible_gpus)
    return torchrun_command(nproc, argv) if nproc > 1 else None


def visible_gpu_count() -> int:
    """CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def maybe_relaunch(devices: str | int) -> int | None:
    """Run training under torchrun when `devices` asks for several processes; returns its exit code.

    Returns:
        None when training should run in this process (one device, or already a torchrun rank).
    """
    cmd = plan_launch(devices, visible_gpu_count(), os.environ, sys.argv[1:])
    if cmd is None:
        return None
    log.info("train.devices=%s: launching %s", devices, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
