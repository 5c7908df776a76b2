import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fracture import sources
from fracture.base.errors import InputError
from fracture.base.io import read_manifest
from fracture.cli import app
from fracture.contracts.schema import MANIFEST_COLUMNS
from fracture.images import header as ih
from fracture.ingest import inherit_group_identity, run_ingest
from fracture.sources import image_id_for
from fracture.sources.privacy import KEY_ENV
from tests.unit.images.test_imageheader import crafted_png, png_bytes
from tests.unit.sources.test_dicom import PHI, make_dicom
from tests.unit.sources.test_sources_kaggle import STEM_A, STEM_B, kaggle_record, write_kaggle

OUTPUTS = ("manifest.parquet", "quarantine.csv", "summary.json", "params.yaml")


@pytest.fixture
def serial(make_params):
    return make_params({"base": {"num_workers": 1}})


def put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bad_hospital(root: Path, outside: Path) -> dict[str, str]:
    """A hospital root with one file per quarantine reason; returns relative path -> expected reason code."""
    good = png_bytes(np.full((24, 20), 77, np.uint8))
    truncated = png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))[:-40]
    put(root, "radius/negative/good.png", good)
    expected = {
        "radius/negative/empty.png": (b"", ih.ZERO_BYTES),
        "radius/negative/note.png": (b"patient notes, not an image\n", ih.NOT_IMAGE),
        "radius/negative/truncated.png": (truncated, ih.TRUNCATED),
        "radius/negative/bomb.png": (crafted_png(100_000, 100_000), ih.TOO_LARGE),
        "radius/negative/tiny.png": (png_bytes(np.zeros((1, 1), np.uint8)), ih.TOO_SMALL),
        "radius/positive/broken.dcm": (b"\x00" * 128 + b"DICM" + PHI["PatientName"].encode() * 3, ih.UNREADABLE_DICOM),
        "radius/positive/nopixels.dcm": (make_dicom(pixels=False), ih.NO_PIXEL_DATA),
        "radius/positive/phi.dcm": (make_dicom(rows=40, cols=30), None),
    }
    for rel, (data, _) in expected.items():
        put(root, rel, data)
    put(outside, "secret.png", good)
    os.symlink(outside / "secret.png", root / "radius/positive/link.png")
    os.symlink(root / "radius/negative/good.png", root / "radius/positive/inner_link.png")  # inside: fine
    (root / "metadata.csv").write_text(
        "path,patient_id,age,sex\n../outside/secret.png,P9,40,F\nradius/negative/gone.png,P9,40,F\n"
    )
    codes = {rel: code for rel, (_, code) in expected.items() if code}
    codes.update(
        {
            "radius/positive/link.png": sources.SYMLINK_OUTSIDE,
            "../outside/secret.png": sources.PATH_ESCAPE,
            "radius/negative/gone.png": ih.FILE_MISSING,
        }
    )
    return codes


def test_every_quarantine_reason_and_counts_add_up(tmp_path, serial):
    codes = bad_hospital(tmp_path / "h", tmp_path / "outside")
    summary = run_ingest(serial, tmp_path / "out", hospital_dir=tmp_path / "h")
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv", keep_default_na=False)
    got = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    assert set(got) == set(codes)
    for rel, code in codes.items():
        assert got[rel].startswith(code.split(" ")[0]), (rel, got[rel])
    assert got["radius/negative/bomb.png"].startswith("dimensions 100000x100000 exceed limit")
    assert got["radius/negative/tiny.png"].startswith("image too small")
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert sorted(df["path"]) == [
        "radius/negative/good.png",
        "radius/positive/inner_link.png",
        "radius/positive/phi.dcm",
    ]
    entry = summary["sources"]["hospital"]
    assert entry["candidates"] == entry["total"] + entry["quarantined"] == 3 + len(codes)
    assert sum(entry["quarantine_reasons"].values()) == entry["quarantined"]
    assert entry["quarantine_reasons"][ih.ZERO_BYTES] == 1
    assert summary["totals"]["candidates"] == entry["candidates"]


def test_no_phi_reaches_any_output_or_log(tmp_path, serial, caplog, capsys):
    bad_hospital(tmp_path / "h", tmp_path / "outside")
    make_dicom(tmp_path / "h" / "scaphoid" / "positive" / "IM0002", photometric="MONOCHROME2")
    caplog.set_level(logging.DEBUG)
    run_ingest(serial, tmp_path / "out", hospital_dir=tmp_path / "h")
    captured = capsys.readouterr()
    blobs = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")}
    assert set(OUTPUTS) <= set(blobs)
    blobs["log"] = (caplog.text + captured.out + captured.err).encode()
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    blobs["manifest-as-text"] = df.to_csv().encode()
    for value in PHI.values():
        for name, blob in blobs.items():
            assert value.encode() not in blob, f"PHI {value!r} leaked into {name}"
    # sanity: the DICOMs were accepted, so the PHI was really read
    assert {"radius/positive/phi.dcm", "scaphoid/positive/IM0002"} <= set(df["path"])


def test_hospital_without_key_is_refused(tmp_path, serial, monkeypatch):
    bad_hospital(tmp_path / "h", tmp_path / "outside")
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(InputError, match=KEY_ENV):
        run_ingest(serial, tmp_path / "out", hospital_dir=tmp_path / "h")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(InputError, match=KEY_ENV):
        run_ingest(serial, tmp_path / "out", hospital_dir=tmp_path / "h")


def test_dicom_in_kaggle_without_key_is_refused(tmp_path, serial, monkeypatch):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)], {STEM_A: "images_part1/x.png"})
    make_dicom(root / "images_part1" / f"{STEM_A}.dcm")
    (root / "images_part1" / "x.png").unlink()
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(InputError, match=KEY_ENV):
        run_ingest(serial, tmp_path / "out", kaggle_dir=root)


def test_kaggle_without_key_needs_none(tmp_path, serial, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    assert run_ingest(serial, tmp_path / "out", kaggle_dir=root)["totals"]["total"] == 1


def test_outputs_schema_ids_roots_and_params(tmp_path, serial):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A, fracture_visible="1"), kaggle_record(STEM_B)])
    summary = run_ingest(serial, tmp_path / "out", kaggle_dir=root)
    out = tmp_path / "out"
    assert all((out / name).is_file() for name in OUTPUTS)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    df, roots = read_manifest(out / "manifest.parquet")
    assert roots == {"kaggle": str(root)}
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == MANIFEST_COLUMNS
    row = df[df["path"].str.contains(STEM_A)].iloc[0]
    assert row["image_id"] == image_id_for("kaggle", row["path"]) == row["group_id"]
    assert (row["label"], row["bit_depth"], row["width"], row["height"]) == (1, 16, 20, 16)
    assert row["sha256"] == hashlib.sha256((root / row["path"]).read_bytes()).hexdigest()
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (summary["totals"]["fracture"], summary["totals"]["normal"]) == (1, 1)
    assert yaml.safe_load((out / "params.yaml").read_text())["ingest"]["max_side"] == serial.ingest.max_side


def test_params_are_written_before_the_manifest(tmp_path, make_params, monkeypatch):
    # Regression: params.yaml used to be written after manifest.parquet, so a kill between the two left a new
    # manifest beside the previous run's params. The manifest is the last file written.
    import fracture.ingest as ingest_module

    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    out = tmp_path / "out"
    run_ingest(make_params({"base": {"num_workers": 1}, "ingest": {"max_side": 30000}}), out, kaggle_dir=root)
    seen = {}
    real_write = ingest_module.write_manifest

    def spy(df, path, roots):
        seen["max_side"] = yaml.safe_load((out / "params.yaml").read_text())["ingest"]["max_side"]
        real_write(df, path, roots)

    monkeypatch.setattr(ingest_module, "write_manifest", spy)
    run_ingest(make_params({"base": {"num_workers": 1}, "ingest": {"max_side": 20000}}), out, kaggle_dir=root)
    assert seen == {"max_side": 20000}


def test_ao_columns_and_counts_reach_the_manifest_and_summary(tmp_path, serial):
    stems = [f"{p:04d}_0354485735_01_WRI-R1_M011" for p in range(1, 6)]
    cells = [("23r-E/2.1; 23r-M/3.1", "1"), ("23r-E/2.1", ""), ("", "1"), ("72B(b)", "1"), ("23r-E/9.9", "1")]
    records = [
        kaggle_record(stem, ao_classification=cell, fracture_visible=visible)
        for stem, (cell, visible) in zip(stems, cells, strict=True)
    ]
    summary = run_ingest(serial, tmp_path / "out", kaggle_dir=write_kaggle(tmp_path / "k", records))
    df = read_manifest(tmp_path / "out" / "manifest.parquet")[0].set_index("patient_id")
    assert df["ao_status"].tolist() == ["ok", "ok", "none", "not_pccf", "malformed"]
    assert df["physeal"].tolist() == [True, pd.NA, pd.NA, pd.NA, pd.NA]
    assert df.loc["kaggle:0001", "salter_harris"] == "II"
    ao = summary["sources"]["kaggle"]["ao"]
    assert ao["row_status"] == {"none": 1, "ok": 2, "not_pccf": 1, "malformed": 1}
    assert (ao["coded_not_visible"], ao["visible_without_code"], ao["visible_code_unusable"]) == (1, 1, 2)
    assert [m["ao_code"] for m in ao["malformed"]] == ["23r-E/9.9"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["sources"]["kaggle"]["ao"] == ao


def test_hash_contents_off_leaves_sha256_null(tmp_path, make_params):
    params = make_params({"base": {"num_workers": 1}, "ingest": {"hash_contents": False}})
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    run_ingest(params, tmp_path / "out", kaggle_dir=root)
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert df["sha256"].isna().all()


def test_everything_quarantined_still_writes_a_typed_empty_manifest(tmp_path, serial):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    next((root / "images_part1").rglob("*.png")).write_bytes(b"not a png")
    summary = run_ingest(serial, tmp_path / "out", kaggle_dir=root)
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert len(df) == 0 and list(df.columns) == list(MANIFEST_COLUMNS)
    assert summary["totals"]["quarantine_reasons"] == {ih.NOT_IMAGE: 1}


def test_defaults_come_from_params_paths(tmp_path, make_params):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    paths = {"kaggle": str(root), "mura": str(tmp_path / "no-mura"), "hospital": str(tmp_path / "no-hospital")}
    params = make_params({"base": {"num_workers": 1}, "paths": paths})
    with pytest.raises(InputError, match=r"params paths\.mura .*no-mura: not a directory"):
        run_ingest(params, tmp_path / "out")


def test_source_that_is_not_a_directory(tmp_path, serial):
    with pytest.raises(InputError, match="--mura"):
        run_ingest(serial, tmp_path / "out", mura_dir=tmp_path / "nope")


def test_parallel_and_serial_agree(tmp_path, make_params):
    stems = [f"{i:04d}_1000_01_WRI-L1_M010" for i in range(12)]
    root = write_kaggle(tmp_path / "k", [kaggle_record(s) for s in stems])
    (root / "images_part1" / "images_part1" / f"{stems[3]}.png").write_bytes(b"")
    one = run_ingest(make_params({"base": {"num_workers": 1}}), tmp_path / "o1", kaggle_dir=root)
    two = run_ingest(make_params({"base": {"num_workers": 2}}), tmp_path / "o2", kaggle_dir=root)
    assert one == two
    a, _ = read_manifest(tmp_path / "o1" / "manifest.parquet")
    b, _ = read_manifest(tmp_path / "o2" / "manifest.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert one["sources"]["kaggle"]["quarantine_reasons"] == {ih.ZERO_BYTES: 1}


def test_all_three_sources_together(tmp_path, serial):
    from tests.unit.sources.test_sources_hospital import hospital_tree
    from tests.unit.sources.test_sources_mura import standard_mura

    kaggle = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    mura = standard_mura(tmp_path / "MURA-v1.1")
    hospital = hospital_tree(tmp_path / "h")
    summary = run_ingest(serial, tmp_path / "out", kaggle, mura, hospital)
    df, roots = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert set(roots) == {"kaggle", "mura", "hospital"}
    assert not df["image_id"].duplicated().any()
    assert {s: e["total"] for s, e in summary["sources"].items()} == {"kaggle": 1, "mura": 4, "hospital": 5}
    for entry in [*summary["sources"].values(), summary["totals"]]:
        assert entry["candidates"] == entry["total"] + entry["quarantined"]
        assert entry["total"] == entry["fracture"] + entry["normal"]


def test_cli_missing_column_exits_2_with_a_clear_message(tmp_path, params_file):
    root = tmp_path / "k"
    root.mkdir()
    (root / "dataset.csv").write_text("filestem,patient_id,age\nx,1,3\n")
    result = CliRunner().invoke(
        app, ["ingest", "--kaggle", str(root), "--out", str(tmp_path / "out"), "--params", str(params_file)]
    )
    assert result.exit_code == 2
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "dataset.csv" in text and "fracture_visible" in text and "missing required column" in text
    assert "Traceback" not in text


def test_cli_ingest_succeeds(tmp_path, params_file):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    result = CliRunner().invoke(
        app, ["ingest", "--kaggle", str(root), "--out", str(tmp_path / "out"), "--params", str(params_file)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "manifest.parquet").is_file()


def test_fallback_rows_inherit_the_one_patient_known_in_their_group() -> None:
    def row(group, patient, age=None, sex=None, study=None):
        return {"group_id": group, "patient_id": patient, "age": age, "sex": sex, "study_id": study}

    rows = [
        row("g1", "hospital:dicom", 45.0, "M", "hospital:study"),  # a DICOM original: identity from its header
        row("g1", "hospital:fallback-g1"),  # its PNG copy, in no table
        row("g2", "hospital:a"),
        row("g2", "hospital:b"),  # a group filed under two patients: ambiguous, the copy keeps its fallback
        row("g2", "hospital:fallback-g2"),
        row("g3", "hospital:fallback-g3"),  # nobody in the group knows the patient
    ]
    still = inherit_group_identity(rows, [False, True, False, False, True, True])
    assert still == [False, False, False, False, True, True]
    assert rows[1] == {**rows[0], "group_id": "g1"}
    assert rows[4]["patient_id"] == "hospital:fallback-g2" and rows[5]["patient_id"] == "hospital:fallback-g3"


def test_kaggle_boxes_land_upright_in_boxes_parquet_and_bad_lines_are_quarantined(tmp_path, serial, caplog):
    from PIL import Image

    from fracture.base.io import read_manifest, read_parquet

    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A), kaggle_record(STEM_B)])
    im = Image.fromarray(np.zeros((100, 300), np.uint8))  # stored 300 wide, 100 tall, shown rotated 90 clockwise
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / f"images_part1/images_part1/{STEM_B}.png", exif=exif.tobytes())
    labels = tmp_path / "folder_structure" / "yolov5" / "labels"
    labels.mkdir(parents=True)
    (labels / f"{STEM_A}.txt").write_text("3 0.25 0.5 0.1 0.2\r\n8 0.9 0.1 0.05 0.05 \r\n")
    (labels / f"{STEM_B}.txt").write_text("3 0.2 0.1 0.1 0.2\n12 0.5 0.5 0.1 0.1\n")
    (labels / "0099_0000000000_01_WRI-L1_M011.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    summary = run_ingest(serial, tmp_path / "out", kaggle_dir=root, boxes_dir=labels)
    manifest, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    ids = dict(zip(manifest["path"].map(lambda p: Path(p).stem), manifest["image_id"], strict=True))
    boxes = read_parquet(tmp_path / "out" / "boxes.parquet")
    b = boxes[boxes["image_id"] == ids[STEM_B]].iloc[0]
    assert b["class"] == "fracture" and (b["x"], b["y"], b["w"], b["h"]) == pytest.approx((0.9, 0.2, 0.2, 0.1))
    assert (b["image_width"], b["image_height"]) == (100, 300)
    assert sorted(boxes[boxes["image_id"] == ids[STEM_A]]["class"]) == ["fracture", "text"]
    quarantine = pd.read_csv(tmp_path / "out" / "boxes_quarantine.csv")
    assert sorted(quarantine["reason"]) == ["class 12 out of range 0..8", "no accepted image with this file stem"]
    assert summary["boxes"] == {
        "boxes": 3, "images": 2, "quarantined": 2, "per_class": {"fracture": 2, "text": 1},
        "class_names": "documented order",
    }  # fmt: skip
    caplog.clear()
    with caplog.at_level("INFO", logger="fracture.ingest"):
        summary = run_ingest(serial, tmp_path / "out", kaggle_dir=root, boxes_dir=tmp_path / "missing")
    assert read_parquet(tmp_path / "out" / "boxes.parquet").empty and summary["boxes"]["boxes"] == 0
    assert [r.message for r in caplog.records if r.message.startswith("boxes:")] == [
        f"boxes: none (no label files in {tmp_path / 'missing'})"
    ]
