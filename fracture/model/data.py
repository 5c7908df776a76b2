"""The training dataset over the preprocess cache, and the batched train-time augmentation for radiographs.

The cache (written by `fracture preprocess`) is a memory-mapped uint8 array `[N, S, S]` plus an index
`image_id -> row`; nothing is decoded here. The loader moves uint8 pixels only: `UnifiedFractureDataset` reads a
whole batch with one fancy-index of the memmap (`__getitems__`) and hands over each sample's augmentation
seed; `BatchPrep` then scales, augments (one batched affine warp plus brightness/contrast) and normalises the batch
on the training device inside the train step. A sample's augmentation is drawn from a generator seeded with its own
seed, a function of (seed, epoch, index) from `SeededSampler`, so it is the same with 0 or 8 workers, persistent or
not, in whatever batch it lands, and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from fracture.config import AugmentParams

NO_SEED = -1  # a sample without augmentation (eval, or indexed without a seed)
N_DRAWS = 7  # angle, tx, ty, scale, contrast, brightness, flip


def normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Map intensities in [0, 1] to the model's input scale."""
    return (x - mean) / std


def draw_augmentation(aug: AugmentParams, generator: torch.Generator) -> list[float]:
    """One sample's random augmentation parameters, all drawn from `generator` (seeded per sample).

    Returns:
        [angle (radians), tx, ty (grid units, which span 2), scale, contrast, brightness, flip (0/1)].
    """
    u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    flip = aug.hflip and torch.rand(1, generator=generator).item() < 0.5
    return [
        math.radians((2 * u[0] - 1) * aug.degrees),
        (2 * u[1] - 1) * aug.translate * 2,
        (2 * u[2] - 1) * aug.translate * 2,
        aug.scale[0] + u[3] * (aug.scale[1] - aug.scale[0]),
        1 + (2 * u[4] - 1) * aug.contrast,
        (2 * u[5] - 1) * aug.brightness,
        float(flip),
    ]


def affine_grid(theta: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """`F.affine_grid(theta.view(B, 2, 3), [B, 1, H, W], align_corners=False)` built by broadcasting.

    Same sampling grid, without the batched matmul over every pixel that makes `F.affine_grid` slow on a CPU.

    Args:
        theta: `[B, 6]` rows (a, b, c, d, e, f): x' = a x + b y + c, y' = d x + e y + f, in [-1, 1] grid units.
        size: (H, W).

    Returns:
        `[B, H, W, 2]` sampling grid for `F.grid_sample`.
    """
    h, w = size
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    grid = torch.empty(theta.shape[0], h, w, 2, device=theta.device, dtype=theta.dtype)
    for k in range(2):  # x' then y': a row term plus a column term, written straight into the grid
        row = theta[:, 3 * k : 3 * k + 3]
        torch.add((row[:, 0:1] * xs + row[:, 2:3])[:, None, :], (row[:, 1:2] * ys)[:, :, None], out=grid[..., k])
    return grid


def apply_augmentation(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Warp, brightness/contrast and flip a batch, each sample with its own parameters, in one pass.

    Args:
        x: `[B, 1, S, S]` float in [0, 1], on any device.
        draws: `[B, 7]` float64 on the CPU, rows from `draw_augmentation`.

    Returns:
        `[B, 1, S, S]` float in [0, 1], on x's device.
    """
    angle, tx, ty, scale, contrast, brightness, flip = draws.T
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([cos, -sin, tx, sin, cos, ty], 1).to(x.device, x.dtype, non_blocking=True)
    x = F.grid_sample(x, affine_grid(theta, x.shape[-2:]), mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = contrast.to(x.device, x.dtype, non_blocking=True)[:, None, None, None]
    shift = brightness.to(x.device, x.dtype, non_blocking=True)[:, None, None, None]
    centre = x.mean(dim=(1, 2, 3), keepdim=True)
    x = x.mul_(gain).add_(centre * (1 - gain) + shift)  # (x - centre) * contrast + centre + brightness
    if bool((flip > 0).any()):
        x = torch.where(flip.to(x.device, non_blocking=True)[:, None, None, None] > 0, x.flip(-1), x)
    return x.clamp_(0, 1)


def augment_batch(x: torch.Tensor, seeds: Sequence[int] | torch.Tensor, aug: AugmentParams) -> torch.Tensor:
    """Augment `[B, 1, S, S]` floats in [0, 1]; sample b's randomness comes from a generator seeded with seeds[b]."""
    seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    draws = [draw_augmentation(aug, torch.Generator().manual_seed(int(s))) for s in seeds]
    return apply_augmentation(x, torch.tensor(draws, dtype=torch.float64).reshape(len(seeds), N_DRAWS))


def augment_image(x: torch.Tensor, aug: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Random small affine warp, brightness and contrast (and a flip if enabled) for one radiograph.

    Args:
        x: `[1, S, S]` float in [0, 1].
        aug: augmentation ranges.
        generator: the only source of randomness (seeded per sample).

    Returns:
        `[1, S, S]` float in [0, 1].
    """
    draws = torch.tensor([draw_augmentation(aug, generator)], dtype=torch.float64)
    return apply_augmentation(x[None], draws)[0]


class Batch(NamedTuple):
    """What the loader yields: uint8 pixels, labels and augmentation seeds (one item: no batch dimension)."""

    images: torch.Tensor  # uint8 [B, S, S]
    labels: torch.Tensor  # float32 [B], 0/1
    seeds: torch.Tensor  # int64 [B]; NO_SEED = not augmented


def collate_batch(data: Batch | list[Batch]) -> Batch:
    """DataLoader collate_fn: a batch read whole by `__getitems__` passes through; single items are stacked."""
    if isinstance(data, Batch):
        return data
    return Batch(*(torch.stack(field) for field in zip(*data, strict=True)))


@dataclass(frozen=True)
class BatchPrep:
    """The device half of the loader: uint8 batch -> (augmented) normalised float `[B, 1, S, S]` and labels."""

    mean: float
    std: float
    augment: AugmentParams | None = None

    def __call__(self, batch: Batch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the batch to `device` as uint8 (4x fewer bytes than float), then scale, augment and normalise there."""
        x = batch.images[:, None].to(device, non_blocking=True).float().div_(255.0)
        y = batch.labels.to(device, non_blocking=True)
        if self.augment is not None:
            seeds = batch.seeds
            keep = seeds != NO_SEED
            if bool(keep.all()):
                x = augment_batch(x, seeds, self.augment)
            elif bool(keep.any()):
                rows = keep.nonzero()[:, 0]
                x[rows.to(x.device)] = augment_batch(x[rows.to(x.device)], seeds[rows], self.augment)
        return x.sub_(self.mean).div_(self.std), y


class UnifiedFractureDataset(Dataset):
    """Cache rows of one split with their labels, read as uint8; augmented (in `prep`) only when `augment` is given.

    Index with an int (no augmentation) or with `(i, sample_seed)` from `SeededSampler`. Items and batches are
    `Batch(images uint8, labels float, seeds int64)`; a DataLoader reads a whole batch at once through
    `__getitems__` and must use `collate_fn=collate_batch`. `prep` turns a batch into the model's input on the
    training device.
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
        # Plain ndarray view of a memmap: same mapped pages, without np.memmap's Python-level __getitem__.
        self.pixels = images.view(np.ndarray) if isinstance(images, np.memmap) else images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.mean, self.std = mean, std
        self.augment = augment if augment is not None and augment.enabled else None
        self.prep = BatchPrep(mean, std, self.augment)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> Batch:
        return Batch(*(field[0] for field in self.__getitems__([key])))

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> Batch:
        """One batch in the order of `keys`, read with one fancy-index of the memmap.

        Rows are read in the order asked, not sorted: from the page cache the order costs nothing, while putting a
        sorted read back in order would copy the batch again (and reordering it would change the run).
        """
        try:
            arr = np.asarray(keys, dtype=np.int64)  # [B] indices, or [B, 2] (index, seed) pairs
        except ValueError:  # indices with and without seeds mixed
            arr = np.array([k if isinstance(k, tuple) else (k, NO_SEED) for k in keys], dtype=np.int64)
        idx = arr[:, 0] if arr.ndim == 2 else arr
        if arr.ndim == 2 and self.augment is not None:
            seeds = np.ascontiguousarray(arr[:, 1])
        else:
            seeds = np.full(len(idx), NO_SEED, dtype=np.int64)
        pixels = self._read(self.rows[idx])
        return Batch(torch.from_numpy(pixels), torch.from_numpy(self.labels[idx]), torch.from_numpy(seeds))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 `[B, S, S]` for cache rows `rows`."""
        if isinstance(self.pixels, np.ndarray):
            return self.pixels[rows]
        return np.stack([np.asarray(self.pixels[r], dtype=np.uint8) for r in rows])  # sources read row by row


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
