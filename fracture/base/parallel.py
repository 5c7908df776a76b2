"""Parallel map over files with a progress bar (quiet when stderr is not a terminal, e.g. in CI logs)."""

from __future__ import annotations

import multiprocessing
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

# Modules whose functions run in worker processes (preloaded by the forkserver).
WORKER_MODULES = ("fracture.ingest", "fracture.preprocess.run")

T = TypeVar("T")
R = TypeVar("R")


def _progress_disabled() -> bool:
    return not sys.stderr.isatty() or os.environ.get("FRACTURE_NO_PROGRESS") == "1"


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Wrap an iterable in a progress bar shown only on an interactive terminal."""
    return iter(tqdm(iterable, total=total, desc=desc, disable=_progress_disabled(), dynamic_ncols=True, leave=False))


def counter(total: int, desc: str, unit: str) -> tqdm:
    """A progress bar advanced by hand (`bar.update(n)`) in `unit`s, e.g. images scored chunk by chunk."""
    return tqdm(total=total, desc=desc, unit=unit, disable=_progress_disabled(), dynamic_ncols=True, leave=False)


def resolve_workers(workers: int) -> int:
    """0 means one per available core."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str = "", chunksize: int | None = None
) -> Iterator[R]:
    """Apply a picklable `fn` to every item, in order, over `workers` processes (1 = in this process).

    Results are yielded as they complete in input order, so the caller can stream them to disk.
    """
    n = len(items)
    workers = min(resolve_workers(workers), max(n, 1))
    if workers <= 1 or n < 2:
        yield from progress(map(fn, items), total=n, desc=desc)
        return
    chunksize = chunksize or max(1, min(256, n // (workers * 8)))
    # forkserver, not fork: a child forked from a parent that already runs threads (torch, OpenCV, MLflow,
    # tqdm) can deadlock on a lock held at fork time; forkserver children start from a clean process.
    context = multiprocessing.get_context("forkserver")
    # The server (started once per process) imports the step modules once; each worker is then a cheap fork of
    # it instead of a fresh interpreter importing pandas, OpenCV and pydicom.
    context.set_forkserver_preload(sorted({*WORKER_MODULES, getattr(fn, "__module__", __name__)}))
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    )
    with pool:
        yield from progress(pool.map(fn, items, chunksize=chunksize), total=n, desc=desc)


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker as soon as the process that made the pool is gone, even by SIGKILL.

    A worker's parent is the forkserver, not the step's process, and every worker holds the forkserver's "alive"
    pipe and its own task queue open: after a SIGKILL of the step (an OOM kill, `kill -9`) nothing ever reached
    EOF, and the forkserver, the resource tracker and the workers ran forever (about 375 MB each time). A daemon
    thread waits on a pidfd of the step's process (polls it once a second where pidfds are missing); once the
    workers exit, the forkserver and the resource tracker see EOF and exit too.
    """
    threading.Thread(target=_wait_then_exit, args=(parent_pid,), name="exit-with-parent", daemon=True).start()


def _wait_then_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll
        while _alive(pid):
            time.sleep(1.0)
        os._exit(1)
    select.select([fd], [], [])  # a pidfd turns readable when its process exits
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
