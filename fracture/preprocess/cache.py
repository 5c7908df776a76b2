"""The preprocess cache contract: its files, its meta.json, and the checks every reader applies.

`fracture preprocess` writes a cache dir; training, evaluation and explanation open it with `load_cache`:

- `images.npy`: uint8 `[N, S, S]`, memory-mappable (windowed, letterboxed radiographs);
- `index.parquet`: `image_id`, `row` (into images.npy), `sha256` (of the source file, for incremental rebuilds);
- `meta.json`: `image_size` S, `count` N, `window_percentiles`, `format`, `decoder` (see `cache_meta`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import read_json, read_parquet
from fracture.contracts.artifacts import CACHE_IMAGES, CACHE_INDEX, CACHE_META

CACHE_FORMAT = 1
IMAGES_FILE = CACHE_IMAGES
INDEX_FILE = CACHE_INDEX
META_FILE = CACHE_META
INDEX_COLUMNS = ("image_id", "row")


def cache_meta(size: int, window: tuple[float, float], count: int, decoder: str) -> dict:
    """meta.json content; `decoder` fingerprints the decoding code that made the rows."""
    return {
        "image_size": size,
        "count": count,
        "window_percentiles": [float(w) for w in window],
        "format": CACHE_FORMAT,
        "decoder": decoder,
    }


def read_cache_meta(cache_dir: Path) -> dict:
    """meta.json of a cache (what it was built with: image size, window percentiles, decoder).

    Raises:
        InputError: missing or unreadable.
    """
    path = Path(cache_dir) / META_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; run `fracture preprocess` to build the cache")
    return read_json(path)


def load_cache(cache_dir: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Open the preprocess cache without reading its pixels.

    Args:
        cache_dir: dir holding images.npy, index.parquet and meta.json.

    Returns:
        (images, index): a read-only memmap `[N, S, S]` uint8 and the index table (image_id, row, sha256).

    Raises:
        InputError: a file is missing or unreadable, or the three files disagree with each other.
    """
    cache_dir = Path(cache_dir)
    for name in (IMAGES_FILE, INDEX_FILE, META_FILE):
        if not (cache_dir / name).is_file():
            raise InputError(f"{cache_dir / name}: missing; run `fracture preprocess` to build the cache")
    meta = read_json(cache_dir / META_FILE)
    try:
        images = np.load(cache_dir / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"{cache_dir / IMAGES_FILE}: cannot memory-map the cache ({err})") from None
    index = read_parquet(cache_dir / INDEX_FILE)
    _check_cache(cache_dir, meta, images, index)
    return images, index


def _check_cache(cache_dir: Path, meta: dict, images: np.ndarray, index: pd.DataFrame) -> None:
    """Raise InputError naming the file when images.npy, index.parquet and meta.json disagree."""
    size = meta.get("image_size")
    if meta.get("format") != CACHE_FORMAT:
        raise InputError(f"{cache_dir / META_FILE}: cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise InputError(
            f"{cache_dir / IMAGES_FILE}: {images.dtype} {list(images.shape)} does not match meta.json "
            f"(uint8 [N, {size}, {size}])"
        )
    if meta.get("count") != images.shape[0]:
        raise InputError(f"{cache_dir / META_FILE}: count {meta.get('count')} but images.npy has {images.shape[0]}")
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise InputError(f"{cache_dir / INDEX_FILE}: missing columns {', '.join(missing)}")
    rows = index["row"].to_numpy()
    if len(rows) and (rows.min() < 0 or rows.max() >= images.shape[0]):
        raise InputError(f"{cache_dir / INDEX_FILE}: rows outside images.npy's {images.shape[0]} images")
    if index["image_id"].duplicated().any():
        raise InputError(f"{cache_dir / INDEX_FILE}: duplicate image_id values")
