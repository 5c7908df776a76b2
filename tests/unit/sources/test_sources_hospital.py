import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture import sources
from fracture.base.errors import InputError
from fracture.base.io import read_manifest
from fracture.config import load_params
from fracture.ingest import run_ingest
from fracture.sources.hospital import (
    augmentation_base,
    candidate_paths,
    folder_info,
    hospital_candidates,
    metadata_index,
    parse_metadata,
    scan_hospital,
)
from fracture.sources.privacy import pseudonymise
from tests.conftest import REPO
from tests.unit.sources.test_dicom import PHI, make_dicom

KEY = b"hospital-test-key"
PATTERN = load_params(REPO / "params.yaml").ingest.augmented_copy_pattern  # the params value


def write_image(path: Path, shape=(24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, 100, np.uint8))


def hospital_tree(root: Path) -> Path:
    """radius_set/ with an original and two augmented copies, scaphoid/ with a JPEG in a nested folder."""
    for rel in [
        "radius_set/negative/nega_1000.png",
        "radius_set/negative/nega_1000_0.png",
        "radius_set/negative/nega_1000_1.png",
        "radius_set/positive/posi_7.png",
        "scaphoid/positive/batch2/s_1.jpg",
    ]:
        write_image(root / rel)
    return root


def by_path(scan):
    return {c.path: c for c in scan.candidates}


@pytest.mark.parametrize(
    ("stem", "expected"),
    [("nega_1000_0", "nega_1000"), ("nega_1000", "nega_1000"), ("nega_1000_12", "nega_1000"), ("solo_3", "solo_3")],
)
def test_augmentation_base(stem, expected):
    assert augmentation_base(stem, {"nega_1000", "nega_1000_0", "solo_3"}, re.compile(PATTERN)) == expected


def test_folder_info():
    assert folder_info("radius_set/positive/a.png") == ("radius", 1)
    assert folder_info("Scaphoid/NEGATIVE/x/y/a.png") == ("scaphoid", 0)
    assert folder_info("radius/unsorted/a.png") == ("radius", None)
    assert folder_info("a.png") == (None, None)


def test_layout_labels_parts_and_groups(tmp_path):
    scan = scan_hospital(hospital_tree(tmp_path / "h"), KEY, PATTERN)
    rows = by_path(scan)
    assert len(rows) == 5 and not scan.rejected
    orig = rows["radius_set/negative/nega_1000.png"].fields
    copy = rows["radius_set/negative/nega_1000_1.png"].fields
    assert orig["group_id"] == copy["group_id"] == "hospital:radius/nega_1000"
    assert (orig["label"], orig["label_source"], orig["body_part"]) == (0, "folder", "radius")
    nested = rows["scaphoid/positive/batch2/s_1.jpg"].fields
    assert (nested["label"], nested["body_part"], nested["group_id"]) == (1, "scaphoid", "hospital:scaphoid/s_1")


def test_appledouble_and_hidden_files_never_become_images(tmp_path):
    root = hospital_tree(tmp_path / "h")
    (root / "radius_set/negative/._nega_1000.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (root / "radius_set/negative/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    scan = scan_hospital(root, KEY, PATTERN)
    assert len(scan.candidates) == 5 and not scan.rejected
    assert scan.stats["junk_files"] == 2


def test_no_hard_coded_age_or_sex(tmp_path):
    scan = scan_hospital(hospital_tree(tmp_path / "h"), KEY, PATTERN)
    assert all(c.fields["age"] is None and c.fields["sex"] is None for c in scan.candidates)


def test_without_patient_id_copies_share_a_derived_patient(tmp_path):
    scan = scan_hospital(hospital_tree(tmp_path / "h"), KEY, PATTERN)
    rows = by_path(scan)
    a = rows["radius_set/negative/nega_1000.png"]
    b = rows["radius_set/negative/nega_1000_0.png"]
    assert a.fields["patient_id"] is None
    assert (
        a.fallback_patient_id
        == b.fallback_patient_id
        == pseudonymise("group:hospital:radius/nega_1000", "hospital", KEY)
    )
    assert a.fallback_patient_id != rows["radius_set/positive/posi_7.png"].fallback_patient_id


def test_metadata_overrides_folders(tmp_path):
    root = hospital_tree(tmp_path / "h")
    (root / "metadata.csv").write_text(
        "path,patient_id,age,sex,label,body_part,extra\n"
        "radius_set/negative/nega_1000.png,H-0042,34,female,,,x\n"
        "radius_set/positive/posi_7.png,H-0043,61.5,M,0,styloid_set,x\n"
        "loose/extra.png,H-0044,,,1,ulna,x\n"
    )
    write_image(root / "loose/extra.png")
    scan = scan_hospital(root, KEY, PATTERN)
    rows = by_path(scan)
    a = rows["radius_set/negative/nega_1000.png"].fields
    assert a["patient_id"] == pseudonymise("H-0042", "hospital", KEY)
    assert (a["age"], a["sex"], a["label"], a["label_source"]) == (34.0, "F", 0, "folder")
    b = rows["radius_set/positive/posi_7.png"].fields
    assert (b["label"], b["label_source"], b["body_part"], b["sex"]) == (0, "metadata", "styloid", "M")
    assert b["group_id"] == "hospital:styloid/posi_7"
    loose = rows["loose/extra.png"].fields
    assert (loose["label"], loose["body_part"]) == (1, "ulna")
    assert "H-0042" not in repr(scan)


def test_metadata_bad_rows(tmp_path):
    root = hospital_tree(tmp_path / "h")
    (root / "metadata.csv").write_text(
        "path,patient_id,age,sex,label\n"
        "../../etc/passwd,P1,30,F,1\n"
        "radius_set/positive/posi_7.png,P2,30,F,yes\n"
        "radius_set/positive/posi_7.png,P2,30,F,yes\n"
    )
    scan = scan_hospital(root, KEY, PATTERN)
    reasons = {r.path: r.code for r in scan.rejected}
    assert reasons == {"../../etc/passwd": sources.PATH_ESCAPE, "radius_set/positive/posi_7.png": sources.LABEL_INVALID}
    assert len(scan.candidates) == 4


def test_metadata_missing_column_is_named():
    with pytest.raises(InputError, match=r"metadata\.csv: missing required column\(s\): patient_id, sex"):
        parse_metadata("path,age\nx.png,3\n", "/h/metadata.csv")


def test_files_outside_layout_are_ignored_and_counted():
    files = ["radius/positive/a.png", "radius/notes.txt", "docs/readme.pdf", "README.md"]
    paths, outside = candidate_paths(files, set())
    assert paths == ["radius/notes.txt", "radius/positive/a.png"]
    assert outside == 2
    scan = hospital_candidates(files, {}, KEY, re.compile(PATTERN))
    assert [r.code for r in scan.rejected] == [sources.NO_LABEL]  # inside a part folder, but no label


def test_metadata_index_normalises_paths():
    df = parse_metadata("path,patient_id,age,sex\n./radius\\positive\\a.png,P,1,M\n", "m.csv")
    index, rejected = metadata_index(df)
    assert list(index) == ["radius/positive/a.png"] and not rejected


def test_ingest_hospital_with_dicom_identity_and_warning_once(tmp_path, make_params, caplog):
    root = hospital_tree(tmp_path / "h")
    make_dicom(root / "radius_set" / "positive" / "IM0001", rows=40, cols=30, age="045Y", sex="M")
    caplog.set_level(logging.INFO)
    summary = run_ingest(make_params({"base": {"num_workers": 1}}), tmp_path / "out", hospital_dir=root)
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    dcm = df[df["path"] == "radius_set/positive/IM0001"].iloc[0]
    assert dcm["patient_id"] == pseudonymise(PHI["PatientID"], "hospital")
    assert dcm["study_id"] == pseudonymise("study:" + PHI["StudyInstanceUID"], "hospital")
    assert (dcm["age"], dcm["sex"], dcm["width"], dcm["height"], dcm["bit_depth"]) == (45.0, "M", 30, 40, 16)
    copies = df[df["group_id"] == "hospital:radius/nega_1000"]
    assert len(copies) == 3 and copies["patient_id"].nunique() == 1
    assert df["patient_id"].str.match(r"^hospital:[0-9a-f]{16}$").all()
    assert sum("no patient id" in r.getMessage() for r in caplog.records) == 1
    assert summary["sources"]["hospital"]["total"] == 6


def test_copies_without_their_original_are_grouped_by_name(tmp_path):
    root = hospital_tree(tmp_path / "h")
    for rel in ("radius_set/negative/nega_2000_0.png", "radius_set/negative/nega_2000_1.png"):
        write_image(root / rel)  # nega_2000.png itself is absent
    scan = scan_hospital(root, KEY, PATTERN)
    rows = by_path(scan)
    a, b = rows["radius_set/negative/nega_2000_0.png"], rows["radius_set/negative/nega_2000_1.png"]
    assert a.fields["group_id"] == b.fields["group_id"] == "hospital:radius/nega_2000"
    assert a.fields["augmented_from"] == b.fields["augmented_from"] == "hospital:radius/nega_2000"
    assert a.fallback_patient_id == b.fallback_patient_id
    assert rows["radius_set/negative/nega_1000_0.png"].fields["augmented_from"] == "hospital:radius/nega_1000"
    originals = (
        "radius_set/negative/nega_1000.png",
        "radius_set/positive/posi_7.png",
        "scaphoid/positive/batch2/s_1.jpg",
    )
    assert all(rows[p].fields["augmented_from"] is None for p in originals)
    assert (scan.stats["augmented_copies"], scan.stats["copies_without_original"]) == (4, 2)


def test_without_a_copy_pattern_only_copies_beside_their_original_are_grouped(tmp_path):
    root = hospital_tree(tmp_path / "h")
    write_image(root / "radius_set/negative/nega_2000_0.png")
    rows = by_path(scan_hospital(root, KEY, None))
    assert rows["radius_set/negative/nega_2000_0.png"].fields["augmented_from"] is None
    assert rows["radius_set/negative/nega_1000_1.png"].fields["augmented_from"] == "hospital:radius/nega_1000"


def test_a_copy_missing_from_metadata_takes_its_originals_patient(tmp_path, make_params):
    root = hospital_tree(tmp_path / "h")
    write_image(root / "radius_set/negative/nega_3000_0.png")
    write_image(root / "radius_set/negative/nega_3000_1.png")
    (root / "metadata.csv").write_text(
        "path,patient_id,age,sex\n"
        "radius_set/negative/nega_1000.png,H-0042,34,F\n"  # its copies nega_1000_0/_1 are not listed
        "radius_set/negative/nega_3000_1.png,H-0050,51,M\n"  # one copy of an absent original is listed
    )
    run_ingest(make_params({"base": {"num_workers": 1}}), tmp_path / "out", hospital_dir=root)
    df, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    group = df[df["group_id"] == "hospital:radius/nega_1000"]
    assert len(group) == 3
    assert set(group["patient_id"]) == {pseudonymise("H-0042", "hospital")}
    assert group["age"].tolist() == [34.0] * 3 and group["sex"].tolist() == ["F"] * 3
    orphans = df[df["group_id"] == "hospital:radius/nega_3000"]
    assert set(orphans["patient_id"]) == {pseudonymise("H-0050", "hospital")}
    assert orphans["augmented_from"].notna().all()
    assert df.loc[df["path"] == "radius_set/positive/posi_7.png", "augmented_from"].isna().all()
