"""The cache reader, the dataset and its augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fracture.config import AugmentParams
from fracture.data import SeededSampler, UnifiedFractureDataset, augment_image, load_cache
from fracture.errors import InputError
from tests.unit.test_train import tiny_images, write_cache

SIZE = 32
AUG = AugmentParams(degrees=8.0, translate=0.05, scale=(0.92, 1.08), brightness=0.1, contrast=0.1)


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


def test_eval_items_are_normalised_pixels_and_float_labels(cache):
    _, images, labels = cache
    ds = UnifiedFractureDataset(images, np.array([4, 7]), labels[[4, 7]], mean=0.5, std=0.25)
    x, y = ds[1]
    assert x.shape == (1, SIZE, SIZE) and x.dtype == torch.float32
    assert y.dtype == torch.float32 and y.item() == labels[7]
    torch.testing.assert_close(x[0], (torch.from_numpy(images[7]).float() / 255 - 0.5) / 0.25)
    assert torch.equal(ds[(1, 123)][0], x)  # no augmentation without AugmentParams


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


def test_horizontal_flip_only_when_enabled(cache):
    _, images, _ = cache
    x = torch.from_numpy(images[1]).float()[None] / 255
    still = AugmentParams(degrees=0, translate=0, scale=(1, 1), brightness=0, contrast=0)
    assert not AugmentParams().hflip  # laterality is kept by default
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
    assert torch.equal(ds[(2, 99)][0], ds[2][0])


def _batches(ds, sampler, workers: int) -> list[torch.Tensor]:
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
    return [x for x, _ in loader]


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
