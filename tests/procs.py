"""Kill-point helpers for the tests that SIGKILL a running step (a lost node, a `kill -9`) and resume it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_until(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    kill: Callable[[subprocess.Popen], None],
    timeout: float = 300,
    poll_s: float = 0.02,
) -> None:
    """Poll `ready()` while `proc` runs; fail with its stderr tail if it exits first, or `kill` it after `timeout`."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            pytest.fail(f"exited ({proc.returncode}) before the kill point:\n{stderr}")
        if time.monotonic() > deadline:
            kill(proc)
            pytest.fail(f"kill point not reached within {timeout:.0f} s")
        time.sleep(poll_s)


def kill_at_first_checkpoint(
    cmd: list[str], env: dict[str, str], out: Path, kill: Callable[[subprocess.Popen], None], timeout: float = 300
) -> None:
    """Start a training command; `kill` it (a `kill -9`, a lost node) once `out/checkpoints/last.pt` exists."""
    last = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(proc, last.exists, kill, timeout)
    kill(proc)
    proc.stderr.close()


def sigkill(proc: subprocess.Popen) -> None:
    """`kill -9` the process and reap it."""
    proc.kill()
    proc.wait()
