"""Preprocess step: decode every manifest image once into a memory-mappable uint8 cache.

Output dir: the cache files of fracture/preprocess/cache.py (`images.npy` uint8 [N, S, S], `index.parquet`,
`meta.json`), plus
`failures.csv` (image_id, path, reason) and the resolved `params.yaml`. Every image goes through
`fracture.images.decode.prepare_image`, the same code path as predict.

The cache is content-addressed: when `out_dir` already holds a valid cache with the same image size and window,
rows whose sha256 is already there are copied instead of decoded, so a grown manifest costs only its new
images. Writes are crash-safe: files are built under temporary names, the old `meta.json` is removed before
the first rename and the new one is written last, so a killed run never leaves a cache that reads as valid.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import (
    atomic_path,
    read_json,
    read_manifest,
    resolve_image_path,
    sha256_file,
    write_json,
    write_parquet,
)
from fracture.base.outputs import out_dir_lock, prepare_out_dir, reserve_file
from fracture.base.parallel import parallel_map
from fracture.config import Params, dump_params
from fracture.contracts.artifacts import CACHE_FAILURES
from fracture.images.decode import prepare_image
from fracture.preprocess.cache import IMAGES_FILE, INDEX_FILE, META_FILE, cache_meta

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("image_id", "path", "reason")
_MAX_LOGGED_FAILURES = 20


@dataclass(frozen=True)
class Item:
    """One manifest row to cache. `key` addresses its content: the sha256, or the path when that is unknown."""

    image_id: str
    rel_path: str
    abs_path: str | None  # None when the path cannot be resolved (its reason is in `error`)
    sha256: str | None
    error: str | None = None

    @property
    def key(self) -> str:
        """Content address used for reuse and de-duplication."""
        return self.sha256 or f"path:{self.abs_path or self.rel_path}"


@dataclass(frozen=True)
class Decoded:
    """A worker's answer for one content key: the cache row, or the reason it could not be made."""

    sha256: str | None
    image: np.ndarray | None
    reason: str | None


@dataclass
class CacheBuild:
    """Rows written so far to the new images array, their index, and the failures."""

    rows: list[tuple[str, int, str | None]]
    failures: list[tuple[str, str, str]]
    key_row: dict[str, int]
    key_failure: dict[str, str]
    decoded: int = 0
    reused: int = 0


# --------------------------------------------------------------------------------------------------------- core
def manifest_items(df: pd.DataFrame, roots: dict[str, str], data_root: Path) -> list[Item]:
    """Manifest rows -> items with absolute paths; rows whose path cannot be resolved carry the reason."""
    missing = [c for c in ("image_id", "source", "path") if c not in df.columns]
    if missing:
        raise InputError(f"manifest is missing columns: {', '.join(missing)}")
    duplicated = df["image_id"][df["image_id"].duplicated()].unique()
    if len(duplicated):
        raise InputError(f"manifest has duplicate image_id values, e.g. {', '.join(map(str, duplicated[:3]))}")
    shas = df["sha256"] if "sha256" in df.columns else pd.Series([None] * len(df), index=df.index)
    items = []
    for image_id, source, rel_path, sha in zip(df["image_id"], df["source"], df["path"], shas, strict=True):
        sha = None if pd.isna(sha) or not str(sha) else str(sha)
        try:
            abs_path, error = str(resolve_image_path(roots, str(source), str(rel_path), data_root)), None
        except InputError as err:
            abs_path, error = None, str(err)
        items.append(Item(str(image_id), str(rel_path), abs_path, sha, error))
    return items


def decode_tasks(items: list[Item], reusable: set[str]) -> list[Item]:
    """The items to decode: one per content key, in first-seen order, skipping reusable and unresolvable ones."""
    seen: set[str] = set()
    tasks = []
    for item in items:
        if item.error is None and item.key not in reusable and item.key not in seen:
            seen.add(item.key)
            tasks.append(item)
    return tasks


def decode_item(item: Item, size: int, window: tuple[float, float], max_pixels: int, max_side: int) -> Decoded:
    """Worker: `prepare_image`, then hash the file if the manifest did not; a bad image becomes a reason."""
    if multiprocessing.parent_process() is not None:
        _single_threaded_cv2()
    path = Path(item.abs_path or item.rel_path)
    sha = item.sha256
    try:
        image = prepare_image(path, size, window, max_pixels=max_pixels, max_side=max_side)
        sha = sha or sha256_file(path)
    except InputError as err:
        return Decoded(sha, None, _strip_path(str(err), path))
    except OSError as err:
        return Decoded(sha, None, f"cannot read ({err.strerror or err})")
    return Decoded(sha, image, None)


def fill_rows(
    out: np.ndarray, items: list[Item], decoded: Iterator[Decoded], previous: tuple[np.ndarray, dict[str, int]] | None
) -> CacheBuild:
    """Stream rows into `out` in manifest order: copy duplicates and reusable rows, take the rest from `decoded`.

    `decoded` must yield one answer per `decode_tasks(items, set(previous_keys))` entry, in that order.
    """
    prev_images, prev_rows = previous if previous is not None else (None, {})
    build = CacheBuild(rows=[], failures=[], key_row={}, key_failure={})
    for item in items:
        key = item.key
        if item.error is not None:
            build.failures.append((item.image_id, item.rel_path, item.error))
            continue
        row = len(build.rows)
        if key in build.key_row:
            out[row] = out[build.key_row[key]]
            sha = build.rows[build.key_row[key]][2]
        elif key in prev_rows:
            out[row], sha = prev_images[prev_rows[key]], item.sha256
            build.reused += 1
        elif key in build.key_failure:
            build.failures.append((item.image_id, item.rel_path, build.key_failure[key]))
            continue
        else:
            result = next(decoded)
            if result.image is None:
                build.key_failure[key] = result.reason or "undecodable"
                build.failures.append((item.image_id, item.rel_path, build.key_failure[key]))
                continue
            out[row], sha = result.image, result.sha256
            build.decoded += 1
        build.key_row[key] = row
        build.rows.append((item.image_id, row, sha))
    return build


@functools.cache
def _single_threaded_cv2() -> None:
    """In a worker process: one process per core already, OpenCV's own threads would oversubscribe."""
    cv2.setNumThreads(1)


def _strip_path(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


# ------------------------------------------------------------------------------------------------- cache files
@functools.cache
def decoder_id() -> str:
    """Fingerprint of the decode path: imaging.py, tiff.py and dicomlut.py sources; OpenCV, pydicom, Pillow versions.

    Rows are reused only from a cache made by the same decoder, so a fix in the decode path or a library upgrade
    re-decodes everything instead of mixing old and new rows.
    """
    import PIL
    import pydicom

    from fracture.images import decode as imaging
    from fracture.images import dicomlut, tiff

    h = hashlib.sha256()
    for module in (imaging, tiff, dicomlut):
        h.update(Path(module.__file__).read_bytes())
    h.update(f"|cv2 {cv2.__version__}|pydicom {pydicom.__version__}|pillow {PIL.__version__}".encode())
    return h.hexdigest()[:16]


def load_previous_cache(
    cache_dir: Path, size: int, window: tuple[float, float]
) -> tuple[np.ndarray, dict[str, int]] | None:
    """A valid earlier cache built with the same settings, as (memmap images, sha256 -> row); else None."""
    meta_path = cache_dir / META_FILE
    if not meta_path.exists():
        return None
    try:
        meta = read_json(meta_path)
        if meta != cache_meta(size, window, meta.get("count", -1), decoder_id()):
            log.info("%s: cache settings changed; decoding every image again", cache_dir)
            return None
        images = np.load(cache_dir / IMAGES_FILE, mmap_mode="r")
        index = pd.read_parquet(cache_dir / INDEX_FILE)
    except (InputError, OSError, ValueError) as err:
        log.warning("%s: earlier cache is unreadable (%s); decoding every image again", cache_dir, err)
        return None
    count = meta.get("count")
    if images.dtype != np.uint8 or images.shape != (count, size, size) or len(index) != count:
        log.warning("%s: earlier cache is inconsistent; decoding every image again", cache_dir)
        return None
    rows = {str(s): int(r) for s, r in zip(index["sha256"], index["row"], strict=True) if not pd.isna(s)}
    return images, rows


def _compact(tmp_path: Path, images: np.ndarray, count: int) -> Path:
    """Copy the first `count` rows of an over-allocated array into a new exactly-sized .npy (failures left gaps)."""
    compact_path = tmp_path.with_name(tmp_path.name + ".compact")
    try:
        out = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8, shape=(count, *images.shape[1:]))
        reserve_file(compact_path)
        step = 1024
        for start in range(0, count, step):
            end = min(start + step, count)
            out[start:end] = images[start:end]
        out.flush()
        del out
    except BaseException:
        compact_path.unlink(missing_ok=True)
        raise
    return compact_path


def _remove_stale_temps(out_dir: Path) -> None:
    """Temporary arrays left by a killed run (they can be gigabytes); names from atomic_path."""
    for stale in out_dir.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)


def _write_tables(out_dir: Path, build: CacheBuild) -> None:
    index = pd.DataFrame(build.rows, columns=["image_id", "row", "sha256"]).astype(
        {"image_id": "string", "row": "int64", "sha256": "string"}
    )
    write_parquet(index, out_dir / INDEX_FILE)
    failures = pd.DataFrame(build.failures, columns=list(FAILURE_COLUMNS))
    with atomic_path(out_dir / CACHE_FAILURES) as tmp:
        failures.to_csv(tmp, index=False)


# ---------------------------------------------------------------------------------------------------------- run
def run_preprocess(params: Params, manifest_path: Path, out_dir: Path, data_root: Path = Path(".")) -> dict:
    """Decode, window and resize every manifest image into the cache dir.

    Args:
        params: resolved params (base.image_size, base.num_workers, preprocess.*, ingest size limits).
        manifest_path: manifest.parquet from ingest (source roots in its metadata).
        out_dir: cache dir; an earlier valid cache there with the same settings is reused by sha256.
        data_root: where the manifest's relative source roots resolve.

    Returns:
        Counts: images (rows cached), decoded, reused, failed; plus seconds and images_per_s (decoding only).

    Raises:
        InputError: the manifest is unreadable or empty, or no image at all could be decoded.
    """
    out_dir = Path(out_dir)
    df, roots = read_manifest(Path(manifest_path))
    if df.empty:
        raise InputError(f"{manifest_path}: manifest has no rows")
    items = manifest_items(df, roots, Path(data_root))
    prepare_out_dir(out_dir, inputs=[Path(data_root) / root for root in roots.values()])
    with out_dir_lock(out_dir):
        return _preprocess_locked(params, manifest_path, out_dir, items)


def _preprocess_locked(params: Params, manifest_path: Path, out_dir: Path, items: list[Item]) -> dict:
    """The body of `run_preprocess`, run while this process holds the cache dir's lock."""
    size, window = params.base.image_size, tuple(params.preprocess.window_percentiles)
    _remove_stale_temps(out_dir)
    previous = load_previous_cache(out_dir, size, window)
    start = time.perf_counter()
    with atomic_path(out_dir / IMAGES_FILE) as tmp:
        build, final_tmp = _build_images(tmp, params, items, previous)
        seconds = time.perf_counter() - start
        (out_dir / META_FILE).unlink(missing_ok=True)  # from here on the dir reads as invalid until meta.json
        os.replace(final_tmp, tmp)
    _write_tables(out_dir, build)
    dump_params(params, out_dir / "params.yaml")
    write_json(out_dir / META_FILE, cache_meta(size, window, len(build.rows), decoder_id()))
    return _summarise(manifest_path, build, seconds)


def _build_images(
    tmp: Path, params: Params, items: list[Item], previous: tuple[np.ndarray, dict[str, int]] | None
) -> tuple[CacheBuild, Path]:
    """Decode into an over-allocated temp .npy, compact it if some images failed; returns the build + its file."""
    size, window = params.base.image_size, tuple(params.preprocess.window_percentiles)
    tasks = decode_tasks(items, set(previous[1]) if previous else set())
    worker = partial(
        decode_item,
        size=size,
        window=window,
        max_pixels=params.ingest.max_pixels,
        max_side=params.ingest.max_side,
    )
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items), size, size))
    reserve_file(tmp)  # a full disk is an error now, not a SIGBUS on the first page written
    decoded = parallel_map(worker, tasks, params.base.num_workers, desc="preprocess")
    build = fill_rows(images, items, decoded, previous)
    if next(decoded, None) is not None:  # also lets parallel_map shut its pool down
        raise RuntimeError("preprocess: more decoded results than rows (decode_tasks and fill_rows disagree)")
    images.flush()
    if not build.rows:
        raise InputError(f"no image could be decoded ({len(build.failures)} failed, first: {build.failures[0][2]})")
    if len(build.rows) == len(items):
        del images
        return build, tmp
    compact = _compact(tmp, images, len(build.rows))
    del images
    return build, compact


def _summarise(manifest_path: Path, build: CacheBuild, seconds: float) -> dict:
    for image_id, rel_path, reason in build.failures[:_MAX_LOGGED_FAILURES]:
        log.warning("preprocess: skipped %s (%s): %s", image_id, rel_path, reason)
    if len(build.failures) > _MAX_LOGGED_FAILURES:
        log.warning("preprocess: ... and %d more failures (failures.csv)", len(build.failures) - _MAX_LOGGED_FAILURES)
    rate = build.decoded / seconds if seconds > 0 else 0.0
    log.info(
        "preprocess %s: %d rows cached (%d decoded at %.1f images/s, %d reused), %d failed",
        manifest_path,
        len(build.rows),
        build.decoded,
        rate,
        build.reused,
        len(build.failures),
    )
    return {
        "images": len(build.rows),
        "decoded": build.decoded,
        "reused": build.reused,
        "failed": len(build.failures),
        "seconds": round(seconds, 3),
        "images_per_s": round(rate, 2),
    }
