"""The training dataset over the preprocess cache, and the train-time augmentation for radiographs.

The cache (written by `fracture preprocess`) is a memory-mapped uint8 array `[N, S, S]` plus an index
`image_id -> row`; nothing is decoded here. Augmentation is a small affine warp plus brightness/contrast, done
with torch ops on one image at a time. Its randomness comes from a per-sample seed that the sampler hands over
with the index, so a sample's augmentation depends only on (seed, epoch, index): the same with 0 or 8 workers,
persistent or not, and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from fracture.config import AugmentParams
from fracture.errors import InputError
from fracture.io import read_json, read_parquet

CACHE_FORMAT = 1
INDEX_COLUMNS = ("image_id", "row")


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
    for name in ("images.npy", "index.parquet", "meta.json"):
        if not (cache_dir / name).is_file():
            raise InputError(f"{cache_dir / name}: missing; run `fracture preprocess` to build the cache")
    meta = read_json(cache_dir / "meta.json")
    try:
        images = np.load(cache_dir / "images.npy", mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"{cache_dir / 'images.npy'}: cannot memory-map the cache ({err})") from None
    index = read_parquet(cache_dir / "index.parquet")
    _check_cache(cache_dir, meta, images, index)
    return images, index


def _check_cache(cache_dir: Path, meta: dict, images: np.ndarray, index: pd.DataFrame) -> None:
    """Raise InputError naming the file when images.npy, index.parquet and meta.json disagree."""
    size = meta.get("image_size")
    if meta.get("format") != CACHE_FORMAT:
        raise InputError(f"{cache_dir / 'meta.json'}: cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise InputError(
            f"{cache_dir / 'images.npy'}: {images.dtype} {list(images.shape)} does not match meta.json "
            f"(uint8 [N, {size}, {size}])"
        )
    if meta.get("count") != images.shape[0]:
        raise InputError(f"{cache_dir / 'meta.json'}: count {meta.get('count')} but images.npy has {images.shape[0]}")
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise InputError(f"{cache_dir / 'index.parquet'}: missing columns {', '.join(missing)}")
    rows = index["row"].to_numpy()
    if len(rows) and (rows.min() < 0 or rows.max() >= images.shape[0]):
        raise InputError(f"{cache_dir / 'index.parquet'}: rows outside images.npy's {images.shape[0]} images")
    if index["image_id"].duplicated().any():
        raise InputError(f"{cache_dir / 'index.parquet'}: duplicate image_id values")


def normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Map intensities in [0, 1] to the model's input scale."""
    return (x - mean) / std


def augment_image(x: torch.Tensor, aug: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Random small affine warp, brightness and contrast (and a flip if enabled) for one radiograph.

    Args:
        x: `[1, S, S]` float in [0, 1].
        aug: augmentation ranges.
        generator: the only source of randomness (seeded per sample).

    Returns:
        `[1, S, S]` float in [0, 1].
    """
    u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    angle = math.radians((2 * u[0] - 1) * aug.degrees)
    tx, ty = ((2 * u[1] - 1) * aug.translate * 2, (2 * u[2] - 1) * aug.translate * 2)  # grid units span 2
    scale = aug.scale[0] + u[3] * (aug.scale[1] - aug.scale[0])
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=x.dtype)
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    x = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    contrast = 1 + (2 * u[4] - 1) * aug.contrast
    brightness = (2 * u[5] - 1) * aug.brightness
    centre = x.mean()
    x = (x - centre) * contrast + centre + brightness
    if aug.hflip and torch.rand(1, generator=generator).item() < 0.5:
        x = x.flip(-1)
    return x.clamp_(0, 1)


class UnifiedFractureDataset(Dataset):
    """Images from the cache rows of one split, with labels; augmented only when `augment` is given.

    Items are `(x, y)`: x float `[1, S, S]` normalised, y float 0/1. Index with an int (no randomness) or with
    `(i, sample_seed)` from `SeededSampler` (augmentation seeded by `sample_seed`).
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        mean: float,
        std: float,
        augment: AugmentParams | None = None,
    ) -> None:
        """Hold the memmap and the rows of this split only (the other rows are never touched)."""
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.mean, self.std = mean, std
        self.augment = augment if augment is not None and augment.enabled else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, sample_seed = key if isinstance(key, tuple) else (key, None)
        x = torch.from_numpy(np.array(self.images[self.rows[i]], dtype=np.float32))[None] / 255.0  # [1, S, S]
        if self.augment is not None and sample_seed is not None:
            x = augment_image(x, self.augment, torch.Generator().manual_seed(sample_seed))
        return normalise(x, self.mean, self.std), torch.tensor(self.labels[i])


class SeededSampler(Sampler[tuple[int, int]]):
    """Wrap an index sampler so that each index travels with a per-sample augmentation seed.

    The seed is a function of (seed, epoch, index), so it is the same whichever worker process draws it.
    """

    def __init__(self, base: Sampler[int], seed: int) -> None:
        """Wrap `base` (e.g. a DistributedSampler, which also shuffles per epoch from its own seed)."""
        self.base, self.seed, self.epoch = base, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Change the per-sample seeds (and the base sampler's shuffle) for a new epoch."""
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mix = np.random.SeedSequence([self.seed, self.epoch])
        salt = int(mix.generate_state(1, dtype=np.uint64)[0] >> 1)
        for i in self.base:
            yield int(i), (salt + 1_000_003 * int(i)) % (2**63 - 1)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]
