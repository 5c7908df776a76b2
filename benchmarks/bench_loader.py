"""Benchmark 2: the training data loader over the preprocess cache vs a bare memmap read and vs decoding PNGs.

Product: the train DataLoader exactly as training builds it (`fracture.train.loader.make_loaders`:
UnifiedFractureDataset over `fracture.preprocess.cache.load_cache`, SeededSampler, batch 32), one epoch per timed
call, each
uint8 batch then scaled and normalised by the dataset's `BatchPrep` as the train step does on its device (here the
CPU), so both sides end with the same normalised float batches. The train augmentation runs once per batch in the
train step on the training device (`BatchPrep`), not in the loader: its cost on this CPU is measured too
(`product_augmented_cpu_w0`), for CPU training; on a GPU it is a few kernels per batch.
Baselines, same rows, same shuffled order, same batch size, same single core:
  (a) bare read: fancy-index the memmap, `torch.from_numpy`, float, scale, normalise (the upper bound);
  (b) decode each epoch: the same Dataset, DataLoader and normalisation whose image rows are decoded from 16-bit PNGs by
      `fracture.images.decode.prepare_image` instead of read from the cache. The PNGs are 1000 x 800 px to keep the run
      short (said so in the result); full-size (2500 x 2000) decode cost is measured separately on a few images.
The cache is written directly in fracture/preprocess/cache.py's format (images.npy, index.parquet, meta.json) and
opened with
the real `load_cache`. Per-core figures run with one torch thread and num_workers=0; the whole-machine figure at
384 px uses num_workers=2. Targets: >= 0.5 of the bare read; >= 20x faster than decoding each epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    H100_BF16_PEAK,
    SWIN_L_TRAIN_FLOP,
    Target,
    alternate,
    check,
    demo_params,
    make_result,
    median,
    quiet_environment,
    scratch_dir,
    spread,
    torch_threads,
)

NAME = "loader"
BATCH = 32
FULL = {"sizes": {64: 2048, 384: 256}, "decode_images": 96, "decode_hw": (1000, 800), "full_images": 4, "reps": 3}
QUICK = {"sizes": {64: 64, 384: 32}, "decode_images": 32, "decode_hw": (200, 160), "full_images": 1, "reps": 1}
MFU_RANGE = (0.35, 0.40)


class DecodedImages:
    """Stands in for the cache memmap: row i is decoded from its PNG with the product's decode path every time."""

    def __init__(self, paths: list[Path], size: int, window: tuple[float, float]) -> None:
        """Decode `paths[row]` to a `size` px uint8 square on each access."""
        self.paths, self.size, self.window = paths, size, window

    def __getitem__(self, row: int) -> np.ndarray:
        """uint8 [S, S] for one row."""
        from fracture.images.decode import prepare_image

        return prepare_image(self.paths[int(row)], self.size, self.window)


def write_cache(cache_dir: Path, n: int, size: int) -> None:
    """A cache in the preprocess contract format: radiograph-like rows (rendered once, cycled), index, meta."""
    import pandas as pd

    from fracture.base.io import write_json, write_parquet
    from fracture.synth.render import make_radiograph

    bases = [make_radiograph(np.random.default_rng(i), size, size, bool(i % 2)) for i in range(min(n, 16))]
    cache_dir.mkdir(parents=True)
    images = np.lib.format.open_memmap(cache_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    for i in range(n):
        images[i] = np.rint(bases[i % len(bases)] * 255)
    images.flush()
    del images
    ids = [f"{i:016x}" for i in range(n)]
    index = pd.DataFrame(
        {"image_id": ids, "row": np.arange(n, dtype=np.int64), "sha256": [f"{i:064x}" for i in range(n)]}
    )
    write_parquet(index.astype({"image_id": "string", "sha256": "string"}), cache_dir / "index.parquet")
    write_json(
        cache_dir / "meta.json", {"image_size": size, "count": n, "window_percentiles": [0.5, 99.5], "format": 1}
    )


def split_rows(n: int, split: str = "train") -> Any:
    """All cache rows but one in `split`, the last row in the other split (make_loaders wants both)."""
    import pandas as pd

    other = "val" if split == "train" else "train"
    return pd.DataFrame({"split": [split] * (n - 1) + [other], "row": np.arange(n), "label": np.arange(n) % 2})


def product_loaders(images: Any, rows: Any, size: int, workers: int) -> tuple[Any, Any]:
    """The train and val DataLoaders as `fracture.train` builds them (batch 32; augmentation seeds on train only)."""
    import torch

    from fracture.train.loader import make_loaders
    from fracture.train.runtime import Runtime

    params = demo_params({"base": {"image_size": size}, "train": {"batch_size": BATCH, "num_workers": workers}})
    return make_loaders(params, images, rows, Runtime(torch.device("cpu")), torch.Generator().manual_seed(0))


def normalise_only(loader: Any) -> Any:
    """The loader's device half without augmentation: uint8 -> float, scale, normalise (the bare read's work)."""
    from fracture.model.data import BatchPrep

    return BatchPrep(loader.dataset.mean, loader.dataset.std)


def epoch(loader: Any, prep: Any) -> int:
    """Iterate one epoch (new shuffle and seeds each time), `prep` each batch on the CPU; returns the batch count."""
    count = 0
    if hasattr(loader.sampler, "set_epoch"):  # the train loader's SeededSampler; the val loader is sequential
        loader.sampler.set_epoch(getattr(loader, "_bench_epoch", 0))
        loader._bench_epoch = getattr(loader, "_bench_epoch", 0) + 1
    for batch in loader:
        x, _ = prep(batch, "cpu")
        count += 1
        assert x.dtype.is_floating_point and x.ndim == 4
    return count


def bare_batches(images: np.ndarray, rows: np.ndarray, mean: float, std: float, seed: int = 0) -> int:
    """The upper bound: memmap fancy-index + torch.from_numpy + float/255 + normalise, same batches; returns count."""
    import torch

    order = np.random.default_rng(seed).permutation(len(rows))
    count = 0
    for start in range(0, len(order), BATCH):
        idx = rows[np.sort(order[start : start + BATCH])]
        x = torch.from_numpy(images[idx]).float().div_(255.0).sub_(mean).div_(std)[:, None]
        count += int(x.shape[0] > 0)
    return count


def measure_size(work: Path, size: int, n: int, reps: int) -> dict[str, Any]:
    """Interleaved epochs at one size: train and val loaders (0 workers, 1 thread) and the bare read; then 2 workers."""
    from fracture.preprocess.cache import load_cache

    write_cache(work / f"cache{size}", n, size)
    images, index = load_cache(work / f"cache{size}")
    rows = split_rows(len(index))
    train_rows = rows.loc[rows["split"] == "train", "row"].to_numpy()
    train = {w: product_loaders(images, rows, size, w)[0] for w in (0, 2)}
    _, val = product_loaders(images, split_rows(len(index), "val"), size, 0)
    with torch_threads(1):
        times = alternate(
            {
                "product_w0": lambda: epoch(train[0], normalise_only(train[0])),
                "product_val_w0": lambda: epoch(val, val.dataset.prep),
                "bare": lambda: bare_batches(images, train_rows, 0.5, 0.5),
                "product_augmented_cpu_w0": lambda: epoch(train[0], train[0].dataset.prep),
            },
            reps,
        )
    # warm-up starts the workers
    times.update(alternate({"product_w2": lambda: epoch(train[2], normalise_only(train[2]))}, reps))
    batches = len(train[0])
    return {
        "images": len(train_rows),
        "batches": batches,
        "batches_per_s": {k: batches / median(v) for k, v in times.items()},
        "seconds": {k: spread(v) for k, v in times.items()},
    }


def measure_decode(work: Path, cfg: dict[str, Any], reps: int) -> dict[str, Any]:
    """Epochs of the same Dataset/DataLoader decoding 16-bit PNGs each time (0 workers, 1 thread); + full-size ms."""
    from torch.utils.data import DataLoader, DistributedSampler

    from benchmarks.bench_preprocess import write_radiograph
    from fracture.images.decode import prepare_image
    from fracture.model.data import BatchPrep, SeededSampler, UnifiedFractureDataset, collate_batch

    folder = work / "png"
    folder.mkdir()
    (h, w), n = cfg["decode_hw"], cfg["decode_images"]
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, p in enumerate(paths):
        write_radiograph((p, h, w, i))
    full = [work / f"full{i}.png" for i in range(cfg["full_images"])]
    for i, p in enumerate(full):
        write_radiograph((p, 2500, 2000, 1000 + i))
    augment = demo_params().train.augment
    ds = UnifiedFractureDataset(
        DecodedImages(paths, 64, (0.5, 99.5)), np.arange(n), np.arange(n) % 2, 0.5, 0.5, augment
    )
    sampler = SeededSampler(DistributedSampler(ds, 1, 0, shuffle=True, seed=0), 0)
    loader = DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=0, collate_fn=collate_batch)
    with torch_threads(1):
        times = alternate({"decode_w0": lambda: epoch(loader, BatchPrep(0.5, 0.5))}, reps)
        full_ms = alternate({"full": lambda: [prepare_image(p, 64, (0.5, 99.5)) for p in full]}, reps)["full"]
    return {
        "images": n,
        "png_hw": [h, w],
        "batches_per_s": len(loader) / median(times["decode_w0"]),
        "images_per_s": n / median(times["decode_w0"]),
        "seconds": spread(times["decode_w0"]),
        "full_size_decode_ms": 1000 * median(full_ms) / len(full),
        "full_size_images": len(full),
        "mean_png_mb": round(sum(p.stat().st_size for p in paths) / n / 1e6, 3),
    }


def feeding_statement(per_core_384: float) -> dict[str, Any]:
    """Cores needed to feed Swin-L/384 on one H100 at 35-40 % MFU, from the measured per-core rate at 384 px."""
    need = [m * H100_BF16_PEAK / SWIN_L_TRAIN_FLOP for m in MFU_RANGE]
    cores = [math.ceil(r / per_core_384) for r in need]
    span = str(cores[0]) if cores[0] == cores[1] else f"{cores[0]}-{cores[1]}"
    text = (
        f"One loader core delivers {per_core_384:.0f} 384 px images/s (augmented on the GPU); Swin-L/384 on an H100 at "
        f"{MFU_RANGE[0]:.0%}-{MFU_RANGE[1]:.0%} MFU consumes {need[0]:.0f}-{need[1]:.0f} images/s, so "
        f"{span} loader worker cores keep it fed (num_workers >= {cores[1]})."
    )
    return {"h100_images_per_s_needed": [round(r) for r in need], "loader_cores_needed": cores, "statement": text}


def run(quick: bool = False) -> dict[str, Any]:
    """Batches/s of the cache loader vs the bare memmap read and vs decoding PNGs each epoch."""
    cfg = QUICK if quick else FULL
    quiet_environment()
    with scratch_dir(NAME) as work:
        sizes = {s: measure_size(work, s, n, cfg["reps"]) for s, n in cfg["sizes"].items()}
        decode = measure_decode(work, cfg, cfg["reps"])
    small, big = sizes[64]["batches_per_s"], sizes[384]["batches_per_s"]
    per_core = {s: m["batches_per_s"]["product_w0"] * BATCH for s, m in sizes.items()}
    speedup = small["product_w0"] / decode["batches_per_s"]
    full_speedup = per_core[64] / (1000 / (decode["full_size_decode_ms"] + 1000 / per_core[64]))
    checks = [
        check(
            "vs_decode_each_epoch",
            speedup,
            Target(20, text=">= 20x the loader that decodes the PNGs every epoch"),
            png_hw=decode["png_hw"],
            projected_vs_full_size_png=round(full_speedup, 1),
        ),
        check("vs_bare_read_384px", big["product_w0"] / big["bare"], Target(0.5, text=">= 0.5 of the bare read")),
    ]
    details = {
        "batch_size": BATCH,
        "augmentation": "not in the loader: once per batch on the training device in the train step (BatchPrep: "
        "one batched affine warp + brightness/contrast, per-sample seeded); its CPU cost is product_augmented_cpu_w0",
        "per_size": {
            str(s): {**m, "batches_per_s": {k: round(v, 2) for k, v in m["batches_per_s"].items()}}
            for s, m in sizes.items()
        },
        "images_per_s_per_core": {str(s): round(v, 1) for s, v in per_core.items()},
        "ratio_val_loader": {
            str(s): round(m["batches_per_s"]["product_val_w0"] / m["batches_per_s"]["bare"], 3)
            for s, m in sizes.items()
        },
        "ratio_with_augmentation_on_cpu": {
            str(s): round(m["batches_per_s"]["product_augmented_cpu_w0"] / m["batches_per_s"]["bare"], 3)
            for s, m in sizes.items()
        },
        "augmentation_note": "product_augmented_cpu_w0 adds the train step's batched augmentation run on this CPU "
        "(what CPU-only training pays per batch, inside its train step); on CUDA it runs on the GPU",
        "images_per_s_2_workers_384px": round(big["product_w2"] * BATCH, 1),
        "decode_each_epoch": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in decode.items()},
        "decode_note": f"decode baseline uses {decode['png_hw'][0]} x {decode['png_hw'][1]} 16-bit PNGs to keep the "
        "run short; full-size cost is full_size_decode_ms (measured), projected_vs_full_size_png uses it",
        "h100_feeding": feeding_statement(per_core[384]),
    }
    return make_result(
        NAME,
        "batches_per_s_64px_1_core",
        small["product_w0"],
        small["bare"],
        "batches/s",
        Target(0.5, text=">= 0.5 of a bare memmap read (same batches, one core)"),
        details,
        checks=checks,
    )
