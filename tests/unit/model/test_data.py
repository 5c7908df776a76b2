"""The cache reader, the dataset and its augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fracture.base.errors import InputError
from fracture.config import AugmentParams, load_params
from fracture.model.data import (
    NO_SEED,
    BatchPrep,
    SeededSampler,
    UnifiedFractureDataset,
    augment_batch,
    augment_image,
    collate_batch,
)
from fracture.preprocess.cache import load_cache
from tests.unit.train.test_train import tiny_images, write_cache

SIZE = 32
REPO = Path(__file__).resolve().parents[3]
AUG = AugmentParams(
    enabled=True, degrees=8.0, translate=0.05, scale=(0.92, 1.08), brightness=0.1, contrast=0.1, hflip=False
)


@pytest.fixture
def cache(tmp_path):
    labels = np.arange(12) % 2
    images = tiny_images(labels, SIZE, seed=0)
    write_cache(tmp_path, images, [f"id{i:02d}" for i in range(12)])
    return tmp_path, images, labels


def test_load_cache_memory_maps_images_and_reads_index(cache):
    cache_dir, images, _ = cache
    arr, index = load_cache(cache_dir)
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint8 and arr.shape == (12, SIZE, SIZE)
    np.testing.assert_array_equal(arr[index["row"].to_numpy()], images)
    assert index["image_id"].iloc[3] == "id03"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": 13}, "count 13 but images.npy has 12"),
        ({"image_size": 64}, r"does not match meta.json \(uint8 \[N, 64, 64\]\)"),
        ({"format": 2}, "cache format 2"),
    ],
)
def test_load_cache_refuses_a_meta_that_does_not_match(cache, change, message):
    cache_dir, _, _ = cache
    meta = json.loads((cache_dir / "meta.json").read_text())
    (cache_dir / "meta.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(InputError, match=message):
        load_cache(cache_dir)


def test_load_cache_names_the_missing_file(cache):
    cache_dir, _, _ = cache
    (cache_dir / "meta.json").unlink()
    with pytest.raises(InputError, match=r"meta\.json: missing"):
        load_cache(cache_dir)


def test_eval_items_are_cache_pixels_and_prep_normalises_them(cache):
    _, images, labels = cache
    ds = UnifiedFractureDataset(images, np.array([4, 7]), labels[[4, 7]], mean=0.5, std=0.25)
    item = ds[1]
    assert item.images.dtype == torch.uint8 and torch.equal(item.images, torch.from_numpy(images[7]))
    assert item.labels.dtype == torch.float32 and item.labels.item() == labels[7]
    assert item.seeds.item() == NO_SEED
    x, y = ds.prep(collate_batch([item]), "cpu")
    assert x.shape == (1, 1, SIZE, SIZE) and x.dtype == torch.float32
    assert y.dtype == torch.float32 and y.tolist() == [labels[7]]
    torch.testing.assert_close(x[0, 0], (torch.from_numpy(images[7]).float() / 255 - 0.5) / 0.25)
    seeded = ds[(1, 123)]
    assert seeded.seeds.item() == NO_SEED  # no augmentation without AugmentParams
    assert torch.equal(ds.prep(collate_batch([seeded]), "cpu")[0], x)


def test_a_batch_is_read_at_once_in_the_order_asked(cache):
    _, images, labels = cache
    rows = np.array([11, 3, 8, 0, 5])
    ds = UnifiedFractureDataset(images, rows, labels[rows], 0.5, 0.5, AUG)
    batch = ds.__getitems__([(2, 30), (0, 10), (4, 50), (1, 20)])  # cache rows 8, 11, 5, 3
    np.testing.assert_array_equal(batch.images.numpy(), images[[8, 11, 5, 3]])
    assert batch.labels.tolist() == labels[[8, 11, 5, 3]].tolist()
    assert batch.seeds.tolist() == [30, 10, 50, 20]
    singles = collate_batch([ds[(2, 30)], ds[(0, 10)], ds[(4, 50)], ds[(1, 20)]])
    assert all(torch.equal(a, b) for a, b in zip(batch, singles, strict=True))
    unseeded = ds.__getitems__([2, 0])
    assert unseeded.seeds.tolist() == [NO_SEED, NO_SEED]
    np.testing.assert_array_equal(unseeded.images.numpy(), images[[8, 11]])


def test_augmentation_is_seeded_small_and_keeps_the_range(cache):
    _, images, _ = cache
    x = torch.from_numpy(images[1]).float()[None] / 255
    a = augment_image(x, AUG, torch.Generator().manual_seed(5))
    b = augment_image(x, AUG, torch.Generator().manual_seed(5))
    c = augment_image(x, AUG, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # Small: the warped image still lines up with the original (the bright bar stays where it was, roughly).
    corr = torch.corrcoef(torch.stack([a.flatten(), x.flatten()]))[0, 1]
    assert corr > 0.5


def test_batched_augmentation_is_each_samples_own_seeded_augmentation(cache):
    """One warp per batch, yet sample b is augmented exactly as alone with its seed (batch-mates do not matter)."""
    _, images, _ = cache
    x = torch.from_numpy(images[:6]).float()[:, None] / 255
    seeds = [5, 91, 7, 5, 1234567, 2**62]
    out = augment_batch(x, seeds, AUG)
    alone = torch.stack([augment_image(x[b], AUG, torch.Generator().manual_seed(s)) for b, s in enumerate(seeds)])
    torch.testing.assert_close(out, alone, rtol=0, atol=1e-6)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(augment_batch(x[[3, 0]], [5, 5], AUG), out[[3, 0]], rtol=0, atol=1e-6)
    assert not torch.allclose(out[1], augment_batch(x[1:2], [92], AUG)[0])


def test_prep_augments_only_samples_with_a_seed(cache):
    _, images, labels = cache
    ds = UnifiedFractureDataset(images, np.arange(12), labels, 0.5, 0.25, AUG)
    batch = collate_batch([ds[(0, 3)], ds[1], ds[(2, 4)]])
    assert batch.seeds.tolist() == [3, NO_SEED, 4]
    x, _ = ds.prep(batch, "cpu")
    plain = (torch.from_numpy(images[:3]).float()[:, None] / 255 - 0.5) / 0.25
    assert torch.equal(x[1], plain[1])
    want = (augment_batch(plain[[0, 2]] * 0.25 + 0.5, [3, 4], AUG) - 0.5) / 0.25
    torch.testing.assert_close(x[[0, 2]], want, rtol=0, atol=1e-5)
    assert not torch.allclose(x[0], plain[0], atol=1e-3)
    assert torch.equal(BatchPrep(0.5, 0.25)(batch, "cpu")[0], plain)  # no ranges (eval): normalisation only


def test_horizontal_flip_only_when_enabled(cache):
    _, images, _ = cache
    x = torch.from_numpy(images[1]).float()[None] / 255
    still = AUG.model_copy(update={"degrees": 0, "translate": 0, "scale": (1, 1), "brightness": 0, "contrast": 0})
    assert not load_params(REPO / "params.yaml").train.augment.hflip  # laterality is kept by default
    outs = [
        augment_image(x, still.model_copy(update={"hflip": flip}), torch.Generator().manual_seed(s))
        for flip in (False, True)
        for s in range(12)
    ]
    flipped = [torch.allclose(o, x.flip(-1), atol=1e-5) for o in outs]
    assert all(torch.allclose(o, x, atol=1e-5) for o in outs[:12])
    assert 0 < sum(flipped[12:]) < 12


def test_disabled_augmentation_changes_nothing(cache):
    _, images, labels = cache
    ds = UnifiedFractureDataset(images, np.arange(12), labels, 0.5, 0.5, AUG.model_copy(update={"enabled": False}))
    assert ds.prep.augment is None and ds[(2, 99)].seeds.item() == NO_SEED
    x = ds.prep(collate_batch([ds[(2, 99)]]), "cpu")[0]
    assert torch.equal(x, ds.prep(collate_batch([ds[2]]), "cpu")[0])
    assert torch.equal(x[0, 0], (torch.from_numpy(images[2]).float() / 255 - 0.5) / 0.5)


def _batches(ds, sampler, workers: int) -> list[torch.Tensor]:
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_batch)
    return [ds.prep(batch, "cpu")[0] for batch in loader]


def test_epoch_batches_depend_on_seed_and_epoch_only_not_on_workers(cache):
    _, images, labels = cache
    ds = UnifiedFractureDataset(images, np.arange(12), labels, 0.5, 0.5, AUG)

    def sampler(epoch: int) -> SeededSampler:
        s = SeededSampler(DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=7), seed=7)
        s.set_epoch(epoch)
        return s

    first = _batches(ds, sampler(0), workers=0)
    assert all(torch.equal(a, b) for a, b in zip(first, _batches(ds, sampler(0), workers=0), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first, _batches(ds, sampler(0), workers=2), strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(_batches(ds, sampler(1), workers=0)))
