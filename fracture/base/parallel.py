"""Parallel map over files with a progress bar (quiet when stderr is not a terminal, e.g. in CI logs)."""

from __future__ import annotations

import multiprocessing
import os
import sys
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from progress(pool.map(fn, items, chunksize=chunksize), total=n, desc=desc)
