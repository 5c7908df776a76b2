"""Data: the train and val rows only (test is dropped first), their cache rows, and the DataLoaders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fracture.base.errors import InputError
from fracture.base.io import read_manifest, read_parquet
from fracture.config import Params
from fracture.contracts.tasks import TASK_REASON, apply_task, check_in_task
from fracture.model.core import check_cache_contract, input_contract
from fracture.model.data import SeededSampler, UnifiedFractureDataset, collate_batch
from fracture.preprocess.cache import load_cache, read_cache_meta
from fracture.train.init import check_no_leak, read_init_source
from fracture.train.runtime import Runtime

log = logging.getLogger(__name__)


TRAIN_SPLITS = ("train", "val")  # the only splits training may select; `test` belongs to evaluate


def select_rows(manifest: pd.DataFrame, splits: pd.DataFrame, splits_path: Path) -> pd.DataFrame:
    """Train and val rows with their labels; the test split is dropped first.

    Returns:
        image_id, split, cluster_id, label, source, patient_id; only `train` and `val` rows.
    """
    for col in ("image_id", "split", "cluster_id"):
        if col not in splits.columns:
            raise InputError(f"{splits_path}: missing column {col!r}; rerun `fracture split`")
    rows = splits.loc[splits["split"].isin(TRAIN_SPLITS), ["image_id", "split", "cluster_id"]]
    labels = manifest[
        ["image_id", "label", "source", "patient_id", *([TASK_REASON] if TASK_REASON in manifest else [])]
    ]
    rows = rows.merge(labels, on="image_id", how="left", validate="one_to_one")
    unknown = rows["label"].isna()
    if unknown.any():
        raise InputError(
            f"{splits_path}: {int(unknown.sum())} train/val image_id(s) are not in the manifest "
            f"(e.g. {rows.loc[unknown, 'image_id'].iloc[0]}); rerun `fracture split` on this manifest"
        )
    if not rows["split"].isin(TRAIN_SPLITS).all():
        raise RuntimeError("a non-train/val row reached training")
    if TASK_REASON in rows:
        check_in_task(rows, str(manifest.attrs.get("task", "?")), str(splits_path))
        rows = rows.drop(columns=TASK_REASON)
    # Canonical order: the run does not depend on how the splits file happens to be sorted.
    return rows.astype({"label": "int64"}).sort_values("image_id", kind="stable").reset_index(drop=True)


def attach_cache_rows(rows: pd.DataFrame, index: pd.DataFrame, cache_dir: Path) -> pd.DataFrame:
    """Add each image's row in images.npy; images the cache lacks (failed to decode) are dropped with a warning."""
    out = rows.merge(index[["image_id", "row"]], on="image_id", how="left")
    missing = out["row"].isna()
    if missing.any():
        log.warning(
            "%d train/val images are not in the cache %s (see its failures.csv); training without them",
            int(missing.sum()),
            cache_dir,
        )
    out = out.loc[~missing].astype({"row": "int64"}).reset_index(drop=True)
    for split in TRAIN_SPLITS:
        part = out.loc[out["split"] == split, "label"]
        if part.empty:
            raise InputError(f"{cache_dir}: no cached images for the {split} split")
    if not (out.loc[out["split"] == "train", "label"] == 1).any():
        raise InputError("the train split has no positive images: cannot weight the loss or learn the class")
    return out


def load_training_data(
    params: Params, manifest_path: Path, splits_path: Path, cache_dir: Path
) -> tuple[np.ndarray, pd.DataFrame]:
    """Select train/val rows, then open the cache (memory-mapped; only those rows are ever read)."""
    manifest, _ = read_manifest(manifest_path)
    manifest = apply_task(manifest, params.base.task)
    manifest.attrs["task"] = params.base.task
    splits = read_parquet(splits_path)
    rows = select_rows(manifest, splits, splits_path)
    if params.model.init_from:
        held_out = splits.loc[splits["split"].isin(["val", "test"]), "image_id"]
        source = read_init_source(Path(params.model.init_from), params.model)
        check_no_leak(source, manifest.loc[manifest["image_id"].isin(held_out), "patient_id"], params.model.init_from)
    images, index = load_cache(cache_dir)
    if images.shape[1] != params.base.image_size:
        raise InputError(
            f"{cache_dir}: cache holds {images.shape[1]} px images but base.image_size is {params.base.image_size}; "
            "rerun `fracture preprocess` with these params"
        )
    # The model's config.json records these params' input contract: the pixels it trains on must match it, or
    # predict and serving would decode differently from training.
    contract = input_contract(params, params.base.image_size)
    check_cache_contract(contract, read_cache_meta(cache_dir), cache_dir, against="params preprocess")
    return images, attach_cache_rows(rows, index, cache_dir)


def pos_weight(labels: np.ndarray) -> float:
    """n_neg / n_pos of the train split (BCE weight of the positive class)."""
    n_pos = int((labels == 1).sum())
    return (len(labels) - n_pos) / max(n_pos, 1)


def make_loaders(
    params: Params, images: np.ndarray, rows: pd.DataFrame, rt: Runtime, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """Train loader (sharded, shuffled per epoch, per-sample augmentation seeds) and val loader (full, in order).

    Both yield uint8 `Batch`es read a whole batch at a time; `loader.dataset.prep` turns one into the model's
    (augmented, normalised) float input on the training device.
    """
    tp, mp = params.train, params.model
    train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
    train_ds = UnifiedFractureDataset(images, train["row"], train["label"], mp.mean, mp.std, tp.augment)
    val_ds = UnifiedFractureDataset(images, val["row"], val["label"], mp.mean, mp.std)
    shard = DistributedSampler(train_ds, rt.world_size, rt.rank, shuffle=True, seed=params.base.seed)
    workers = tp.num_workers
    common = {
        "batch_size": tp.batch_size,
        "num_workers": workers,
        "pin_memory": workers > 0 and rt.device.type == "cuda",
        "persistent_workers": workers > 0,
        "collate_fn": collate_batch,
    }
    train_dl = DataLoader(train_ds, sampler=SeededSampler(shard, params.base.seed), generator=generator, **common)
    return train_dl, DataLoader(val_ds, shuffle=False, **common)
