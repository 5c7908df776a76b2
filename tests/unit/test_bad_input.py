"""Bad input through the user-facing CLI: a clear message naming the file and the reason, never a traceback.

Every case goes through `fracture.cli.app` (typer's CliRunner): unusable input exits 2 with the file and the
reason in the output, or (ingest, preprocess, batch predict) becomes a quarantine / failure / error row while
everything usable in the same run is kept. Module-level unit tests of the same readers live beside each module
(test_imageheader, test_imaging, test_sources_*, test_ingest, test_config); this file proves the end-to-end
behaviour a user sees.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from fracture.base.errors import InputError
from fracture.base.io import read_manifest
from fracture.cli import app
from fracture.config import dump_params
from fracture.images.decode import prepare_image
from tests.conftest import write_model_dir

SIZE = 32
RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------------ image makers
def encode(ext: str, arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


def texture(h: int = 40, w: int = 36, dtype=np.uint8) -> np.ndarray:
    """A non-constant image (gradient + noise) so a decoded result can be told from a blank one."""
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, 0.8, w)[None, :] + 0.2 * RNG.random((h, w))
    return (ramp * top).astype(dtype)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def header_only_png(width: int, height: int) -> bytes:
    """A decompression bomb's header: tiny file, huge claimed dimensions."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def palette_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(texture()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buf, format="PNG")
    return buf.getvalue()


def dicom_bytes(pixels: bool = True, compressed: bool = False) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGLSLossless if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 40, 36, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if compressed:
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS \xff\xd9"])
        ds["PixelData"].VR = "OB"
    elif pixels:
        ds.PixelData = (texture(dtype=np.uint16) >> 4).tobytes()  # 12-bit values
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_ls_decoder_available() -> bool:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    return get_decoder(JPEGLSLossless).is_available


# Files that are usable although odd: accepted by ingest, decoded with their contrast by preprocess and predict.
ODD_BUT_USABLE = {
    "palette.png": palette_png,
    "rgba.png": lambda: encode(".png", np.dstack([texture(), texture(), texture(), np.full((40, 36), 128, np.uint8)])),
    "gray16.png": lambda: encode(".png", texture(dtype=np.uint16)),
    "gray16.tif": lambda: encode(".tiff", texture(dtype=np.uint16)),
    "jpeg_named.png": lambda: encode(".jpg", texture()),
    "png_named.dcm": lambda: encode(".png", texture()),
    "slim.png": lambda: encode(".png", texture(400, 12)),
}

# Unusable files: (bytes maker, the one reason: ingest's quarantine.csv and predict's error say the same).
UNUSABLE = {
    "empty.png": (lambda: b"", "zero bytes"),
    "notes.png": (lambda: b"referral letter, not an image\n" * 3, "not an image"),
    "cut.png": (lambda: encode(".png", texture())[:150], "truncated or corrupt"),
    "one_pixel.png": (lambda: encode(".png", np.zeros((1, 1), np.uint8)), "image too small"),
    "wide.png": (lambda: encode(".png", np.zeros((2, 100_000), np.uint8)), "dimensions 100000x2"),
    "bomb.png": (lambda: header_only_png(60_000, 60_000), "dimensions 60000x60000"),
    "report.dcm": (lambda: dicom_bytes(pixels=False), "DICOM without pixel data"),
    "jpegls.dcm": (lambda: dicom_bytes(compressed=True), "unsupported DICOM"),
}


def write_files(folder: Path, names: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    makers = {**ODD_BUT_USABLE, **{k: v[0] for k, v in UNUSABLE.items()}}
    out = {}
    for name in names:
        out[name] = folder / name
        out[name].write_bytes(makers[name]())
    return out


def assert_clean_failure(result, *needles: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def small_params_file(tmp_path_factory, make_params) -> Path:
    params = make_params({"base": {"image_size": SIZE, "num_workers": 1}})
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    dump_params(params, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_params) -> Path:
    """An untrained model dir in the contract format (predict only needs a loadable model)."""
    return write_model_dir(tmp_path_factory.mktemp("model"), make_params({"base": {"image_size": SIZE}}))


# ------------------------------------------------------------------------------------- images: ingest -> cache
@pytest.fixture(scope="module")
def ingested(tmp_path_factory, small_params_file) -> dict:
    """A hospital tree holding every odd and every unusable file (plus an outside symlink), run through the CLI."""
    tmp = tmp_path_factory.mktemp("images")
    root = tmp / "hospital"
    names = list(ODD_BUT_USABLE) + list(UNUSABLE)
    files = write_files(root / "radius" / "negative", names)
    write_files(root / "scaphoid" / "positive", ["gray16.png", "jpeg_named.png"])
    (tmp / "outside").mkdir()
    (tmp / "outside" / "elsewhere.png").write_bytes(encode(".png", texture()))
    (root / "radius" / "positive").mkdir(parents=True)
    (root / "radius" / "positive" / "link.png").symlink_to(tmp / "outside" / "elsewhere.png")
    out = tmp / "ingest"
    result = invoke("ingest", "--hospital", root, "--out", out, "--params", small_params_file)
    return {"root": root, "files": files, "out": out, "result": result, "tmp": tmp}


def test_ingest_quarantines_every_unusable_image_and_keeps_the_rest(ingested):
    result = ingested["result"]
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    quarantine = pd.read_csv(ingested["out"] / "quarantine.csv", keep_default_na=False)
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    for name, (_, reason) in UNUSABLE.items():
        if name == "jpegls.dcm" and jpeg_ls_decoder_available():
            continue
        assert reasons.get(f"radius/negative/{name}", "").startswith(reason), (name, reasons.get(name))
    assert reasons["radius/positive/link.png"].startswith("symlink outside dataset root")
    assert reasons["radius/negative/jpegls.dcm"].count("plugin") == 1 or jpeg_ls_decoder_available()
    manifest, _ = read_manifest(ingested["out"] / "manifest.parquet")
    accepted = set(manifest["path"])
    assert {f"radius/negative/{n}" for n in ODD_BUT_USABLE} <= accepted
    # Nothing disappears: every file is either a manifest row or a quarantine row, and the log says how many.
    on_disk = {p.relative_to(ingested["root"]).as_posix() for p in ingested["root"].rglob("*") if not p.is_dir()}
    assert accepted | set(reasons) == on_disk
    assert not accepted & set(reasons)
    assert f"{len(reasons)} quarantined" in result.output


def test_preprocess_caches_the_odd_images_with_their_contrast(ingested, small_params_file):
    cache = ingested["tmp"] / "cache"
    result = invoke("preprocess", "--manifest", ingested["out"] / "manifest.parquet", "--out", cache,
                    "--params", small_params_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    manifest, _ = read_manifest(ingested["out"] / "manifest.parquet")
    index = pd.read_parquet(cache / "index.parquet")
    failures = pd.read_csv(cache / "failures.csv", keep_default_na=False)
    assert len(index) + len(failures) == len(manifest), "every manifest row is cached or reported"
    assert failures.empty, failures.to_dict("records")  # ingest let through only what decodes
    images = np.load(cache / "images.npy", mmap_mode="r")
    rows = dict(zip(index["image_id"], index["row"], strict=True))
    for image_id, path in zip(manifest["image_id"], manifest["path"], strict=True):
        img = images[rows[image_id]]
        assert img.std() > 10, f"{path}: decoded to a near-constant image (contrast lost)"


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_predict_refuses_an_unusable_image_by_name(tmp_path, model_dir, small_params_file, name):
    if name == "jpegls.dcm" and jpeg_ls_decoder_available():
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_files(tmp_path, [name])[name]
    result = invoke("predict", "--img", path, "--weight", model_dir, "--out", tmp_path / "out",
                    "--params", small_params_file)  # fmt: skip
    assert_clean_failure(result, str(path), UNUSABLE[name][1])
    assert not (tmp_path / "out" / f"{path.stem}.json").exists()


@pytest.mark.parametrize("name", [*sorted(ODD_BUT_USABLE), "float.tif"])
def test_predict_scores_odd_but_usable_images(tmp_path, model_dir, small_params_file, name):
    if name == "float.tif":  # ingest quarantines it (32-bit samples); the decoder still windows it sanely
        path = tmp_path / name
        path.write_bytes(encode(".tiff", texture().astype(np.float32) / 255.0))
    else:
        path = write_files(tmp_path, [name])[name]
    result = invoke("predict", "--img", path, "--weight", model_dir, "--out", tmp_path / "out",
                    "--params", small_params_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
    assert 0.0 <= record["prob"] <= 1.0
    assert record["decision"] in ("fracture", "normal")


def test_batch_predict_keeps_every_row_and_names_each_error(tmp_path, model_dir, small_params_file):
    names = ["gray16.png", "palette.png", "jpeg_named.png", "empty.png", "notes.png", "cut.png", "report.dcm"]
    write_files(tmp_path / "batch", names)
    (tmp_path / "batch" / "._gray16.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # junk, not an image
    out = tmp_path / "out"
    result = invoke("predict", "--img", tmp_path / "batch", "--weight", model_dir, "--out", out,
                    "--params", small_params_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rows = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(Path(p).name for p in rows["path"]) == sorted(names)
    by_name = {Path(p).name: r for p, r in zip(rows["path"], rows.to_dict("records"), strict=True)}
    for name in ("gray16.png", "palette.png", "jpeg_named.png"):
        assert by_name[name]["error"] == "" and by_name[name]["decision"] in ("fracture", "normal")
    for name in ("empty.png", "notes.png", "cut.png", "report.dcm"):
        assert name in by_name[name]["error"] and by_name[name]["prob"] == "", by_name[name]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == len(names)


@pytest.mark.parametrize(
    ("name", "needle"),
    [("missing.png", "no such file"), ("empty_dir", "no files found"), ("list.csv", "'path' column")],
)
def test_predict_refuses_unusable_batch_inputs(tmp_path, model_dir, small_params_file, name, needle):
    target = tmp_path / name
    if name == "empty_dir":
        target.mkdir()
        (target / ".DS_Store").write_text("finder junk")  # hidden and AppleDouble files get no row
        (target / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    elif name == "list.csv":
        target.write_text("file\nx.png\n")
    result = invoke("predict", "--img", target, "--weight", model_dir, "--params", small_params_file,
                    "--out", tmp_path / "out")  # fmt: skip
    assert_clean_failure(result, str(target), needle)


def test_predict_refuses_unusable_weights(tmp_path, small_params_file):
    img = write_files(tmp_path, ["gray16.png"])["gray16.png"]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.pt").write_bytes(b"PK\x03\x04 half a zip")
    for weight, needle in ((tmp_path / "nope", "no such model dir"), (tmp_path / "m", "missing keys")):
        result = invoke("predict", "--img", img, "--weight", weight, "--params", small_params_file)
        assert_clean_failure(result, str(weight), needle)


# ------------------------------------------------------------------------------------------------------ tables
KAGGLE_COLUMNS = (
    "filestem,patient_id,study_number,timehash,gender,age,laterality,projection,initial_exam,ao_classification,"
    "cast,diagnosis_uncertain,osteopenia,fracture_visible,metal,pixel_spacing,device_manufacturer"
).split(",")
STEMS = ["0002_0354485735_01_WRI-R1_M011", "0002_0354485735_01_WRI-R2_M011", "0015_0667547500_02_WRI-L1_F007"]


def kaggle_row(stem: str, **values: str) -> dict[str, str]:
    patient, timehash, study = stem.split("_")[:3]
    row = dict.fromkeys(KAGGLE_COLUMNS, "")
    side, projection, sex = stem[-7], stem[-6], stem[-4]
    row.update(filestem=stem, patient_id=patient, study_number=study, timehash=timehash, gender=sex, age="11")
    row.update(laterality=side, projection=projection, pixel_spacing="0.1", device_manufacturer="x")
    row.update(values)
    return row


def write_kaggle_root(root: Path, rows: list[dict[str, str]], columns=KAGGLE_COLUMNS, sep=",", encoding="utf-8"):
    """dataset.csv (with a BOM) and one 16-bit PNG per listed stem under images_part1/."""
    lines = [sep.join(columns)] + [sep.join(r.get(c, "") for c in columns) for r in rows]
    (root / "images_part1").mkdir(parents=True, exist_ok=True)
    (root / "dataset.csv").write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode(encoding))
    for stem in {r["filestem"] for r in rows} & set(STEMS):
        (root / "images_part1" / f"{stem}.png").write_bytes(encode(".png", texture(dtype=np.uint16)))
    return root


def good_rows() -> list[dict[str, str]]:
    return [kaggle_row(STEMS[0], fracture_visible="1"), kaggle_row(STEMS[1]), kaggle_row(STEMS[2])]


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ("missing_column", ["fracture_visible"]),
        ("renamed_column", ["gender"]),
        ("semicolons", ["semicolons"]),
        ("tabs", ["tabs"]),
        ("latin1", ["UTF-8"]),
    ],
)
def test_unusable_tables_exit_2_naming_the_file(tmp_path, params_file, change, needles):
    columns, sep, encoding, rows = list(KAGGLE_COLUMNS), ",", "utf-8", good_rows()
    if change == "missing_column":
        columns.remove("fracture_visible")
    elif change == "renamed_column":
        columns[columns.index("gender")] = "sex"
        rows = [{**r, "sex": r["gender"]} for r in rows]
    elif change in ("semicolons", "tabs"):
        sep = {"semicolons": ";", "tabs": "\t"}[change]
    else:
        rows[0]["device_manufacturer"], encoding = "Siémens Röntgen", "latin-1"
    root = write_kaggle_root(tmp_path / "kaggle", rows, columns, sep, encoding)
    out = tmp_path / "out"
    result = invoke("ingest", "--kaggle", root, "--out", out, "--params", params_file)
    assert_clean_failure(result, str(root / "dataset.csv"), *needles)
    assert not (out / "manifest.parquet").exists()


def test_odd_table_rows_are_quarantined_or_counted_not_lost(tmp_path, params_file):
    rows = good_rows()
    rows[2]["fracture_visible"] = "2"  # label outside {0, 1}
    rows.append(dict(rows[1]))  # an exact duplicate row
    rows.append(kaggle_row("../../outside/0099_0000000000_01_WRI-L1_M010"))  # escapes the dataset root
    root = write_kaggle_root(tmp_path / "kaggle", rows, [*KAGGLE_COLUMNS, "comment"])  # an extra column is fine
    out = tmp_path / "out"
    result = invoke("ingest", "--kaggle", root, "--out", out, "--params", params_file)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    assert any(r.startswith("label not in {0,1}") for r in reasons.values()), reasons
    assert any(r.startswith("path escapes dataset root") for r in reasons.values()), reasons
    manifest, _ = read_manifest(out / "manifest.parquet")
    assert sorted(manifest["path"].map(lambda p: Path(p).stem)) == sorted(STEMS[:2])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["kaggle"]["duplicate_rows"] == 1
    assert "duplicate" in result.output


def test_hospital_metadata_without_a_required_column_exits_2(tmp_path, params_file):
    root = tmp_path / "hospital"
    write_files(root / "radius" / "positive", ["gray16.png"])
    (root / "metadata.csv").write_text("path,patient_id,age\nradius/positive/gray16.png,P1,40\n")
    result = invoke("ingest", "--hospital", root, "--out", tmp_path / "out", "--params", params_file)
    assert_clean_failure(result, "metadata.csv", "sex")


@pytest.mark.parametrize("step", ["validate", "split", "preprocess"])
@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_a_damaged_manifest_is_refused_by_every_reader(tmp_path, ingested, small_params_file, step, damage):
    # What a killed writer or a stray file would leave: readers refuse it by name instead of using it.
    bad = tmp_path / "manifest.parquet"
    data = (ingested["out"] / "manifest.parquet").read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"image_id,path\nabc,x.png\n")
    out = tmp_path / ("splits.parquet" if step == "split" else "out")
    result = invoke(step, "--manifest", bad, "--out", out, "--params", small_params_file)
    assert_clean_failure(result, str(bad))
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------------------ config
def _params_yaml(tmp_path: Path, base: dict, section: str, key: str, value) -> Path:
    data = json.loads(json.dumps(base))
    node = data
    *parents, leaf = [section, *key.split(".")]
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("train", "epochz", 3, "train.epochz"),  # unknown key (typo)
        ("train", "augment.rotate", 5, "train.augment.rotate"),  # unknown nested key
        ("train", "epochs", "three", "train.epochs"),  # wrong type
        ("train", "lr", [0.1], "train.lr"),  # wrong type
        ("split", "exclude", "metal", "split.exclude"),  # a scalar where a section belongs
        ("train", "epochs", -2, "train.epochs"),  # impossible value
        ("train", "batch_size", 0, "train.batch_size"),
        ("evaluate", "ci_level", 1.5, "evaluate.ci_level"),
        ("preprocess", "window_percentiles", [99, 1], "preprocess.window_percentiles"),
        ("base", "image_size", 100, "base.image_size"),  # not divisible by Swin's patch x 2^merges
        ("base", "image_size", 96, "base.image_size"),  # divisible, but breaks the window arithmetic
    ],
)
def test_bad_config_is_refused_at_load_time_naming_the_key(tmp_path, demo_params_dict, section, key, value, named):
    path = _params_yaml(tmp_path, demo_params_dict, section, key, value)
    out = tmp_path / "out"
    for args in (["synth", "--out", out], ["ingest", "--kaggle", tmp_path / "nowhere", "--out", out]):
        result = invoke(*args, "--params", path)
        assert_clean_failure(result, str(path), named)
        assert not out.exists(), "nothing runs before the params are valid"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("train: [epochs: 3\n", "not valid YAML"), ("- just\n- a list\n", "top level must be a mapping")],
)
def test_malformed_params_file_exits_2(tmp_path, text, needle):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert_clean_failure(invoke("synth", "--out", tmp_path / "o", "--params", path), str(path), needle)


# --------------------------------------------------------------------------------------------- decoder fuzzing
SEEDS = [
    encode(".png", texture(12, 10)),
    encode(".png", texture(12, 10, np.uint16)),
    encode(".jpg", texture(16, 16)),
    encode(".tiff", texture(8, 8, np.uint16)),
    palette_png(),
]


@settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 4000)),
    st.sampled_from([".png", ".jpg", ".tif", ".dcm"]),
)
def test_decoder_on_mutated_images_only_raises_input_error(tmp_path_factory, seed, flips, cut, suffix):
    # The ingest fuzz test covers the header reader and the table parsers; this covers the pixel decoder
    # shared by preprocess and predict: damaged bytes give a uint8 image or an InputError naming the file.
    data = bytearray(SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[:cut] if cut is not None else data)
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        img = prepare_image(path, 16, (0.5, 99.5), max_pixels=100_000, max_side=1024)
    except InputError as err:
        assert str(path) in str(err)
        return
    assert img.shape == (16, 16) and img.dtype == np.uint8


# ------------------------------------------------------------------------------------ regressions (defects fixed)
def test_content_wins_over_a_dicom_suffix(tmp_path):
    # Was: a PNG named .dcm passed ingest (its header reader sniffs content) and then failed in preprocess and
    # predict with a misleading "DICOM file has no pixel data".
    path = tmp_path / "scan.dcm"
    path.write_bytes(encode(".png", texture()))
    assert prepare_image(path, 16, (0.5, 99.5)).std() > 10


def test_prepare_image_refuses_images_below_min_side(tmp_path):
    # Was: predict scored a 1x1 PNG (a blank square after letterboxing) that ingest quarantines as too small.
    path = tmp_path / "dot.png"
    path.write_bytes(encode(".png", np.full((1, 9), 200, np.uint8)))
    with pytest.raises(InputError, match=r"dot\.png: image too small \(9x1, min_side 8\)"):
        prepare_image(path, 16, (0.5, 99.5), min_side=8)
    assert prepare_image(path, 16, (0.5, 99.5)).shape == (16, 16)  # the default stays permissive


@pytest.mark.parametrize("extra", [{"unknown_kw": 3}, {"window_size": "four"}, {"num_heads": [1, 2]}])
def test_backbone_kwargs_timm_cannot_use_exit_2_naming_the_key(tmp_path, demo_params_dict, monkeypatch, extra):
    # Was: a TypeError/IndexError traceback from timm at model build. backbone_kwargs is passed through to timm,
    # so it is checked when the model is built (before any training work), not by the params schema.
    from tests.unit.train.test_train import write_tiny_dataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = write_tiny_dataset(tmp_path / "data", n={"train": 8, "val": 4, "test": 4}, size=64)
    kwargs = {**demo_params_dict["model"]["backbone_kwargs"], **extra}
    path = _params_yaml(tmp_path, demo_params_dict, "model", "backbone_kwargs", kwargs)
    out = tmp_path / "model"
    result = invoke("train", "--manifest", data["manifest"], "--splits", data["splits"], "--cache", data["cache"],
                    "--out", out, "--params", path)  # fmt: skip
    assert_clean_failure(result, "model.backbone_kwargs", next(iter(extra)))
    assert not (out / "model.pt").exists()


def test_rows_disagreeing_on_the_label_quarantine_the_image(tmp_path, params_file):
    # Was: the first of two contradictory dataset.csv rows won silently (an arbitrary label); MURA already
    # quarantines studies listed with different labels.
    rows = [*good_rows(), kaggle_row(STEMS[1], fracture_visible="1")]  # STEMS[1] is also listed as negative
    root = write_kaggle_root(tmp_path / "kaggle", rows)
    out = tmp_path / "out"
    result = invoke("ingest", "--kaggle", root, "--out", out, "--params", params_file)
    assert result.exit_code == 0, result.output
    assert "conflicting labels" in result.output
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    assert quarantine["path"].tolist() == [f"images_part1/{STEMS[1]}.png"]
    assert quarantine["reason"].iloc[0].startswith("conflicting labels")
    manifest, _ = read_manifest(out / "manifest.parquet")
    assert sorted(manifest["path"].map(lambda p: Path(p).stem)) == sorted([STEMS[0], STEMS[2]])
