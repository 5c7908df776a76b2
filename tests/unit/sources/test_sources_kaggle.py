from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture import sources
from fracture.base.errors import InputError
from fracture.images import header as ih
from fracture.sources.kaggle import (
    index_images,
    kaggle_candidates,
    kaggle_row,
    parse_kaggle_table,
    scan_kaggle,
)
from tests.spec import GRAZ_COLUMNS

COLUMNS = GRAZ_COLUMNS  # the documented layout (README, "The datasets")


def kaggle_record(stem: str, **values: str) -> dict[str, str]:
    patient, timehash, study = stem.split("_")[:3]
    rec = dict.fromkeys(COLUMNS, "")
    rec.update(
        filestem=stem,
        patient_id=patient,
        study_number=study,
        timehash=timehash,
        gender="M",
        age="10.5",
        laterality="L",
        projection="1",
        pixel_spacing="0.1",
        device_manufacturer="x",
    )
    rec.update(values)
    return rec


def csv_text(records: list[dict[str, str]], columns: list[str] = COLUMNS, sep: str = ",") -> str:
    lines = [sep.join(columns)] + [sep.join(r.get(c, "") for c in columns) for r in records]
    return "\n".join(lines) + "\n"


def write_kaggle(root: Path, records: list[dict[str, str]], images: dict[str, str] | None = None, bom=True) -> Path:
    """dataset.csv (with a BOM) plus 16-bit PNGs at the given relative paths (default: nested images_part1)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + csv_text(records).encode())
    if images is None:
        images = {r["filestem"]: f"images_part1/images_part1/{r['filestem']}.png" for r in records}
    for rel in images.values():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((16, 20), 30000, np.uint16))
    return root


STEM_A = "0002_0354485735_01_WRI-R1_M011"
STEM_B = "0002_0354485735_01_WRI-R2_M011"
STEM_C = "0015_0667547500_02_WRI-L1_F007"


def table(records):
    return parse_kaggle_table(csv_text(records), "dataset.csv")


def rows_of(scan):
    return {c.path.rsplit("/", 1)[-1].removesuffix(".png"): c for c in scan.candidates}


def test_bom_is_stripped_from_the_first_column(tmp_path):
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A)])
    text = sources.read_text(root / "dataset.csv")
    df = parse_kaggle_table(text, "dataset.csv")
    assert list(df.columns)[0] == "filestem"
    assert df.loc[0, "filestem"] == STEM_A


@pytest.mark.parametrize(
    ("cell", "label"),
    [("1", 1), ("", 0), ("1.0", 1), (" 1 ", 1), ("0", 0), ("0.0", 0)],
)
def test_label_from_fracture_visible(cell, label):
    item = kaggle_row(kaggle_record(STEM_A, fracture_visible=cell), {STEM_A: "a.png"})
    assert item.fields["label"] == label
    assert item.fields["label_source"] == "fracture_visible"


@pytest.mark.parametrize("cell", ["2", "yes", "-1", "0.5"])
def test_label_outside_0_1_is_quarantined(cell):
    item = kaggle_row(kaggle_record(STEM_A, fracture_visible=cell), {STEM_A: "a.png"})
    assert isinstance(item, sources.Rejected)
    assert item.code == sources.LABEL_INVALID and item.reason.startswith("label not in {0,1}")


def test_flags_empty_is_false_one_and_float_one_are_true():
    rec = kaggle_record(STEM_A, initial_exam="1", cast="", metal="1.0", diagnosis_uncertain="", osteopenia="x")
    fields = kaggle_row(rec, {STEM_A: "a.png"}).fields
    assert fields["initial_exam"] is True
    assert fields["cast"] is False
    assert fields["metal"] is True
    assert fields["diagnosis_uncertain"] is False
    assert fields["osteopenia"] is None  # neither empty nor 0/1: unknown, not guessed


def test_metadata_columns_are_mapped():
    rec = kaggle_record(STEM_C, gender="F", age="7.25", projection="2", ao_classification="23r-M/3.1; 23u-E/7")
    fields = kaggle_row(rec, {STEM_C: "x/a.png"}).fields
    assert fields["patient_id"] == "kaggle:0015"
    assert fields["study_id"] == "kaggle:0015_2"
    assert (fields["sex"], fields["age"], fields["projection"]) == ("F", 7.25, "lateral")
    assert fields["ao_code"] == "23r-M/3.1; 23u-E/7"
    assert fields["body_part"] == "wrist"


def test_ao_columns_are_parsed_and_targets_need_a_visible_fracture():
    coded = dict(ao_classification="23R-E/2.1 ;23u-E/7")
    visible = kaggle_row(kaggle_record(STEM_A, fracture_visible="1", **coded), {STEM_A: "a.png"}).fields
    assert (visible["ao_codes"], visible["ao_status"]) == ("23r-E/2.1;23u-E/7", "ok")
    assert (visible["physeal"], visible["salter_harris"]) == (True, "II")
    hidden = kaggle_row(kaggle_record(STEM_B, fracture_visible="", **coded), {STEM_B: "b.png"}).fields
    assert (hidden["ao_codes"], hidden["ao_status"]) == ("23r-E/2.1;23u-E/7", "ok")
    assert hidden["physeal"] is None and hidden["salter_harris"] is None


@pytest.mark.parametrize(("code", "projection"), [("1", "ap_pa"), ("2", "lateral"), ("3", "other"), ("3.0", "other")])
def test_projection_codes(code, projection):
    assert kaggle_row(kaggle_record(STEM_A, projection=code), {STEM_A: "a"}).fields["projection"] == projection


def test_pandas_resaved_ids_are_normalised():
    rec = kaggle_record(STEM_A, patient_id="2.0", study_number="1.0", gender="O")
    fields = kaggle_row(rec, {STEM_A: "a.png"}).fields
    assert fields["patient_id"] == "kaggle:0002"
    assert fields["study_id"] == "kaggle:0002_1"
    assert fields["sex"] == "O"


def test_index_images_prefers_png_under_images_part():
    files = [
        "images_part1/images_part1/a.png",
        "copy/a.png",
        "images_part2/b.jpg",
        "images_part2/b.png",
        "dataset.csv",
        "folder_structure/yolov5/labels/a.txt",
    ]
    by_stem, extra = index_images(files)
    assert by_stem == {"a": "images_part1/images_part1/a.png", "b": "images_part2/b.png"}
    assert extra == 2


def test_scan_finds_nested_images_with_one_walk(tmp_path, monkeypatch):
    images = {STEM_A: f"images_part1/images_part1/{STEM_A}.png", STEM_B: f"images_part3/{STEM_B}.png"}
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A), kaggle_record(STEM_B)], images)

    def no_glob(*args, **kwargs):
        raise AssertionError("images are found from one walk, not a glob per row")

    monkeypatch.setattr(Path, "glob", no_glob)
    monkeypatch.setattr(Path, "rglob", no_glob)
    scan = scan_kaggle(root)
    assert {c.path for c in scan.candidates} == set(images.values())
    assert not scan.rejected


def test_missing_image_and_unlisted_images(tmp_path):
    images = {STEM_A: f"images_part1/{STEM_A}.png", STEM_C: f"images_part1/{STEM_C}.png"}
    root = write_kaggle(tmp_path / "k", [kaggle_record(STEM_A), kaggle_record(STEM_B)], images)
    (root / "images_part1" / f"._{STEM_A}.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    scan = scan_kaggle(root)
    assert [c.path for c in scan.candidates] == [f"images_part1/{STEM_A}.png"]
    assert [(r.path, r.reason) for r in scan.rejected] == [(STEM_B, ih.FILE_MISSING)]
    assert scan.stats["unlisted_images"] == 1  # STEM_C is on disk but not in the table
    assert scan.stats["junk_files"] == 1


def test_duplicate_rows_are_dropped_with_a_warning(caplog):
    records = [kaggle_record(STEM_A), kaggle_record(STEM_A), kaggle_record(STEM_B), kaggle_record(STEM_B)]
    scan = kaggle_candidates(table(records), {STEM_A: "a.png", STEM_B: "b.png"})
    assert [c.path for c in scan.candidates] == ["a.png", "b.png"]
    assert scan.stats["duplicate_rows"] == 2 and not scan.rejected
    assert "duplicate" in caplog.text


def test_filestem_repeated_with_other_metadata_is_quarantined_naming_the_columns(caplog):
    # Before: the first row was kept silently and the other one's age and sex vanished.
    records = [kaggle_record(STEM_A), kaggle_record(STEM_A, age="11", gender="F"), kaggle_record(STEM_B)]
    scan = kaggle_candidates(table(records), {STEM_A: "a.png", STEM_B: "b.png"})
    assert [c.path for c in scan.candidates] == ["b.png"]
    assert [(r.path, r.code) for r in scan.rejected] == [("a.png", sources.CONFLICTING_METADATA)]
    assert "age" in scan.rejected[0].reason and "gender" in scan.rejected[0].reason
    assert "conflicting metadata" in caplog.text


def test_trailing_delimiter_on_data_rows_only_keeps_every_column_in_place(caplog):
    # Before: pandas took `filestem` for the index, shifting every column: 0 rows accepted, exit 0.
    text = csv_text([kaggle_record(STEM_A, fracture_visible="1"), kaggle_record(STEM_B)])
    lines = text.splitlines()
    shifted = "\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n"
    df = parse_kaggle_table(shifted, "dataset.csv")
    assert list(df["filestem"]) == [STEM_A, STEM_B] and list(df["fracture_visible"]) == ["1", ""]
    scan = kaggle_candidates(df, {STEM_A: "a.png", STEM_B: "b.png"})
    assert [(c.path, c.fields["label"]) for c in scan.candidates] == [("a.png", 1), ("b.png", 0)]
    assert "end with a delimiter" in caplog.text


def test_extra_values_beyond_the_header_are_refused_by_line():
    text = csv_text([kaggle_record(STEM_A)])
    lines = text.splitlines()
    with pytest.raises(InputError, match=r"dataset\.csv: line 2: 18 fields but the header has 17 columns"):
        parse_kaggle_table(lines[0] + "\n" + lines[1] + ",surprise\n", "dataset.csv")


@pytest.mark.parametrize("stem", ["../../etc/passwd", "/etc/passwd", "images/../../x"])
def test_filestem_escaping_the_root_is_refused(stem):
    item = kaggle_row(kaggle_record(STEM_A, filestem=stem), {"passwd": "passwd.png", "x": "x.png"})
    assert isinstance(item, sources.Rejected) and item.code == sources.PATH_ESCAPE


def test_missing_columns_are_named():
    columns = [c for c in COLUMNS if c not in ("fracture_visible", "gender")] + ["sex"]
    with pytest.raises(InputError) as info:
        parse_kaggle_table(csv_text([kaggle_record(STEM_A)], columns), "/data/dataset.csv")
    message = str(info.value)
    assert "/data/dataset.csv" in message and "fracture_visible" in message and "gender" in message


def test_extra_columns_are_fine():
    df = parse_kaggle_table(csv_text([kaggle_record(STEM_A)], [*COLUMNS, "extra"]), "dataset.csv")
    assert len(df) == 1


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolons"), ("\t", "tabs")])
def test_wrong_delimiter_is_reported(sep, word):
    with pytest.raises(InputError, match=word):
        parse_kaggle_table(csv_text([kaggle_record(STEM_A)], sep=sep), "dataset.csv")


def test_non_utf8_table_names_the_file(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    (root / "dataset.csv").write_bytes(
        csv_text([kaggle_record(STEM_A, device_manufacturer="Sch\xe4ck")]).encode("latin-1")
    )
    with pytest.raises(InputError, match=r"dataset\.csv: not UTF-8"):
        scan_kaggle(root)


def test_missing_table_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="dataset.csv: file not found"):
        scan_kaggle(tmp_path)


def test_ragged_rows_are_an_input_error():
    text = csv_text([kaggle_record(STEM_A)]) + ",".join(["x"] * 25) + "\n"
    with pytest.raises(InputError, match="line 3: 25 fields but the header has 17 columns"):
        parse_kaggle_table(text, "dataset.csv")


def test_candidates_plus_rejections_cover_every_row():
    records = [kaggle_record(STEM_A), kaggle_record(STEM_B, fracture_visible="7"), kaggle_record(STEM_C)]
    scan = kaggle_candidates(table(records), {STEM_A: "a.png", STEM_B: "b.png"})
    assert len(scan.candidates) + len(scan.rejected) == 3
    assert isinstance(table(records), pd.DataFrame)


def test_nul_bytes_from_the_table_are_escaped_in_quarantine_csv(tmp_path, params):
    from fracture.ingest import run_ingest

    bad = "0009_gh\x00st_01_\x1b[31m"
    images = {STEM_A: f"images_part1/{STEM_A}.png"}
    root = write_kaggle(tmp_path / "kaggle", [kaggle_record(STEM_A), kaggle_record(bad)], images)
    run_ingest(params, tmp_path / "out", kaggle_dir=root)
    raw = (tmp_path / "out" / "quarantine.csv").read_bytes()
    assert b"\x00" not in raw and b"\x1b" not in raw
    assert "0009_gh\\x00st_01_\\x1b[31m" in raw.decode()
