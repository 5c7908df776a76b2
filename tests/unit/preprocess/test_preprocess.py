"""Preprocess step: the cache matches prepare_image row for row, bad images are reported, reruns reuse rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import SecondaryCaptureImageStorage

from fracture.base.io import read_json, write_manifest
from fracture.contracts.schema import coerce_manifest
from fracture.images.decode import prepare_image
from fracture.preprocess.run import load_previous_cache, run_preprocess
from tests.conftest import manifest_row

SIZE = 32
WP = (0.5, 99.5)


@pytest.fixture
def small_params(make_params):
    return make_params({"base": {"image_size": SIZE, "num_workers": 1}})


def radiograph(seed: int, dtype: type = np.uint16, shape: tuple[int, int] = (48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 60000 if dtype == np.uint16 else 230
    img = rng.integers(0, top // 3, shape).astype(dtype)
    img[10:38, 12 + seed % 5 : 26 + seed % 5] = top
    return img


def write_dicom(path: Path, arr: np.ndarray) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.set_pixel_data((4095 - arr // 16).astype(np.uint16), "MONOCHROME1", 12)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def hospital_row(root: Path, rel: str) -> dict:
    full = root / rel
    sha = hashlib.sha256(full.read_bytes()).hexdigest() if full.is_file() else None
    extra = {"study_id": None, "body_part": "radius", "group_id": f"hospital:{rel}", "width": 0, "height": 0}
    return manifest_row("hospital", rel, 0, f"hospital:{rel}", bit_depth=16, sha256=sha, **extra)


def write_test_manifest(root: Path, rels: list[str], path: Path) -> pd.DataFrame:
    df = coerce_manifest(pd.DataFrame([hospital_row(root, rel) for rel in rels]))
    write_manifest(df, path, {"hospital": str(root)})
    return df


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    (root / "radius" / "positive").mkdir(parents=True)
    d = root / "radius" / "positive"
    cv2.imwrite(str(d / "a16.png"), radiograph(1))
    cv2.imwrite(str(d / "b8.png"), radiograph(2, np.uint8, (30, 50)))
    cv2.imwrite(str(d / "c.jpg"), radiograph(3, np.uint8))
    write_dicom(d / "d.dcm", radiograph(4))
    (d / "a16_copy.png").write_bytes((d / "a16.png").read_bytes())  # same content, another image_id
    (d / "broken.png").write_text("not an image")
    return root


GOOD = [
    "radius/positive/a16.png",
    "radius/positive/b8.png",
    "radius/positive/c.jpg",
    "radius/positive/d.dcm",
    "radius/positive/a16_copy.png",
]


def assert_rows_match_prepare_image(out: Path, root: Path, df: pd.DataFrame) -> None:
    images = np.load(out / "images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    index = pd.read_parquet(out / "index.parquet")
    assert images.shape == (len(index), SIZE, SIZE) == (read_json(out / "meta.json")["count"], SIZE, SIZE)
    paths = dict(zip(df["image_id"], df["path"], strict=True))
    for image_id, row in zip(index["image_id"], index["row"], strict=True):
        expected = prepare_image(root / paths[image_id], SIZE, WP)
        np.testing.assert_array_equal(images[row], expected, err_msg=image_id)


def test_cache_rows_match_prepare_image_and_failures_are_reported(tmp_path: Path, raw: Path, small_params) -> None:
    rels = [*GOOD, "radius/positive/broken.png", "radius/positive/missing.png", "../escape.png"]
    df = write_test_manifest(raw, rels, tmp_path / "manifest.parquet")
    out = tmp_path / "cache"
    stats = run_preprocess(small_params, tmp_path / "manifest.parquet", out)

    assert stats["images"] == 5 and stats["failed"] == 3
    assert stats["decoded"] == 4  # a16_copy.png has the same sha256 as a16.png: decoded once
    assert stats["images_per_s"] > 0
    assert_rows_match_prepare_image(out, raw, df)
    index = pd.read_parquet(out / "index.parquet")
    assert list(index["image_id"]) == list(df["image_id"][:5]) and list(index["row"]) == [0, 1, 2, 3, 4]
    assert str(index["row"].dtype) == "int64" and list(index["sha256"]) == list(df["sha256"][:5])
    meta = read_json(out / "meta.json")
    assert meta == {"image_size": SIZE, "count": 5, "window_percentiles": [0.5, 99.5], "format": 1} | {
        "decoder": meta["decoder"]
    }
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["image_id", "path", "reason"]
    reasons = dict(zip(failures["path"], failures["reason"], strict=True))
    assert "not an image" in reasons["radius/positive/broken.png"]
    assert reasons["radius/positive/missing.png"] == "file missing"  # the words ingest uses
    assert "escapes" in reasons["../escape.png"]
    assert (out / "params.yaml").is_file()
    assert not list(out.glob(".*tmp*"))


def test_dicom_row_is_bone_bright(tmp_path: Path, raw: Path, small_params) -> None:
    write_test_manifest(raw, ["radius/positive/d.dcm"], tmp_path / "m.parquet")
    run_preprocess(small_params, tmp_path / "m.parquet", tmp_path / "cache")
    row = np.load(tmp_path / "cache" / "images.npy")[0]
    # The phantom's bone block (rows 10..38 of 48 -> about 7..25 of 32 after letterboxing) is brighter than the rest.
    assert row[10:22, 12:16].mean() > row[:, :4].mean() + 100


def test_incremental_rerun_reuses_unchanged_rows(tmp_path: Path, raw: Path, small_params, make_params) -> None:
    out, manifest = tmp_path / "cache", tmp_path / "m.parquet"
    write_test_manifest(raw, GOOD[:3], manifest)
    first = run_preprocess(small_params, manifest, out)
    assert (first["decoded"], first["reused"]) == (3, 0)

    cv2.imwrite(str(raw / "radius/positive/b8.png"), radiograph(9, np.uint8))  # changed content -> new sha256
    cv2.imwrite(str(raw / "radius/positive/e.png"), radiograph(5))
    df = write_test_manifest(raw, [*GOOD[:3], "radius/positive/e.png"], manifest)
    second = run_preprocess(small_params, manifest, out)
    assert (second["images"], second["reused"], second["decoded"]) == (4, 2, 2)
    assert_rows_match_prepare_image(out, raw, df)

    other_window = make_params(
        {"base": {"image_size": SIZE, "num_workers": 1}, "preprocess": {"window_percentiles": [1, 99]}}
    )
    third = run_preprocess(other_window, manifest, out)
    assert (third["reused"], third["decoded"]) == (0, 4)  # settings changed: nothing reused


def test_rows_from_another_decoder_version_are_not_reused(tmp_path: Path, raw: Path, small_params, monkeypatch) -> None:
    import fracture.preprocess.run as pp

    out, manifest = tmp_path / "cache", tmp_path / "m.parquet"
    write_test_manifest(raw, GOOD[:2], manifest)
    run_preprocess(small_params, manifest, out)
    monkeypatch.setattr(pp, "decoder_id", lambda: "imaging.py changed")
    stats = run_preprocess(small_params, manifest, out)
    assert (stats["reused"], stats["decoded"]) == (0, 2)


def test_crash_never_leaves_a_cache_that_reads_as_valid(tmp_path: Path, raw: Path, small_params, monkeypatch) -> None:
    import fracture.preprocess.run as pp

    out, manifest = tmp_path / "cache", tmp_path / "m.parquet"
    write_test_manifest(raw, GOOD[:2], manifest)
    run_preprocess(small_params, manifest, out)
    write_test_manifest(raw, GOOD[:4], manifest)

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill mid-decode

    monkeypatch.setattr(pp, "prepare_image", boom)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(small_params, manifest, out)
    assert load_previous_cache(out, SIZE, WP) is not None  # killed while decoding: the old cache is intact
    assert read_json(out / "meta.json")["count"] == 2 and not list(out.glob(".images.npy*"))

    monkeypatch.undo()
    monkeypatch.setattr(pp, "_write_tables", boom)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(small_params, manifest, out)
    assert not (out / "meta.json").exists()  # killed after the array was swapped in: no meta.json, not valid
    assert load_previous_cache(out, SIZE, WP) is None


def test_parallel_workers_give_the_same_cache(tmp_path: Path, raw: Path, make_params) -> None:
    df = write_test_manifest(raw, GOOD, tmp_path / "m.parquet")
    params = make_params({"base": {"image_size": SIZE, "num_workers": 2}})
    stats = run_preprocess(params, tmp_path / "m.parquet", tmp_path / "cache")
    assert stats["images"] == 5 and stats["failed"] == 0
    assert_rows_match_prepare_image(tmp_path / "cache", raw, df)


def test_nothing_decodable_is_an_input_error(tmp_path: Path, raw: Path, small_params) -> None:
    from fracture.base.errors import InputError

    write_test_manifest(raw, ["radius/positive/broken.png"], tmp_path / "m.parquet")
    with pytest.raises(InputError, match="no image could be decoded"):
        run_preprocess(small_params, tmp_path / "m.parquet", tmp_path / "cache")
    assert not (tmp_path / "cache" / "meta.json").exists()


def test_demo_cache_matches_prepare_image_for_every_source(demo_cache: Path, demo_manifest: Path, params) -> None:
    """The session's real chain (synth -> ingest -> preprocess): every format the demo writes lands in the cache."""
    from fracture.base.io import read_manifest, resolve_image_path

    manifest, roots = read_manifest(demo_manifest)
    index = pd.read_parquet(demo_cache / "index.parquet")
    assert len(index) == len(manifest) and pd.read_csv(demo_cache / "failures.csv").empty
    images = np.load(demo_cache / "images.npy", mmap_mode="r")
    rows = dict(zip(index["image_id"], index["row"], strict=True))
    suffixes = manifest["path"].str.rsplit(".", n=1).str[-1].str.lower()
    sample = manifest.groupby(["source", suffixes]).head(2)  # two of each source x file type (png, jpg, dcm)
    assert len(sample) >= 6
    for image_id, source, rel in zip(sample["image_id"], sample["source"], sample["path"], strict=True):
        expected = prepare_image(
            resolve_image_path(roots, source, rel, Path(".")),
            params.base.image_size,
            params.preprocess.window_percentiles,
        )
        np.testing.assert_array_equal(images[rows[image_id]], expected, err_msg=f"{source}:{rel}")
