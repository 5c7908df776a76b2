from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture import sources
from fracture.base.errors import InputError
from fracture.base.io import read_manifest
from fracture.ingest import run_ingest
from fracture.sources.mura import (
    mura_candidates,
    mura_relpath,
    parse_image_paths,
    parse_labeled_studies,
    scan_mura,
    study_labels,
)

P = "MURA-v1.1"
WRIST_POS = f"{P}/train/XR_WRIST/patient00001/study1_positive"
WRIST_NEG = f"{P}/train/XR_WRIST/patient00002/study1_negative"
HAND_POS = f"{P}/train/XR_HAND/patient00003/study1_positive"
VALID_NEG = f"{P}/valid/XR_WRIST/patient11186/study2_negative"


def write_mura(root: Path, images: dict[str, list[str]], studies: dict[str, list[str]], header: bool = False) -> Path:
    """A MURA-v1.1 folder: the four CSVs plus the PNGs they list (RGB for `*image2.png`)."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        paths = images.get(split, [])
        rows = studies.get(split, [])
        (root / f"{split}_image_paths.csv").write_text(
            ("Img_Path\n" if header else "") + "".join(p + "\n" for p in paths)
        )
        (root / f"{split}_labeled_studies.csv").write_text(
            ("Img_Path,Label\n" if header else "") + "".join(r + "\n" for r in rows)
        )
        for p in paths:
            rel = p.split("/", 1)[1]
            target = root / rel
            if target.name.startswith("._") or ".." in rel:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shape = (20, 22, 3) if target.name == "image2.png" else (20, 22)
            cv2.imwrite(str(target), np.full(shape, 90, np.uint8))
    return root


def standard_mura(root: Path, header: bool = False) -> Path:
    return write_mura(
        root,
        {
            "train": [
                f"{WRIST_POS}/image1.png",
                f"{WRIST_POS}/image2.png",
                f"{WRIST_NEG}/image1.png",
                f"{HAND_POS}/image1.png",
            ],
            "valid": [f"{VALID_NEG}/image1.png"],
        },
        {"train": [f"{WRIST_POS}/,1", f"{WRIST_NEG}/,0", f"{HAND_POS}/,1"], "valid": [f"{VALID_NEG}/,0"]},
        header=header,
    )


@pytest.mark.parametrize("header", [False, True])
def test_csvs_with_and_without_header(tmp_path, header):
    scan = scan_mura(standard_mura(tmp_path / P, header), ("XR_WRIST",))
    paths = sorted(c.path for c in scan.candidates)
    assert paths == [
        "train/XR_WRIST/patient00001/study1_positive/image1.png",
        "train/XR_WRIST/patient00001/study1_positive/image2.png",
        "train/XR_WRIST/patient00002/study1_negative/image1.png",
        "valid/XR_WRIST/patient11186/study2_negative/image1.png",
    ]
    assert not scan.rejected


def test_study_labels_ids_and_source_split(tmp_path):
    scan = scan_mura(standard_mura(tmp_path / P), ("XR_WRIST",))
    by_path = {c.path: c.fields for c in scan.candidates}
    pos = by_path["train/XR_WRIST/patient00001/study1_positive/image1.png"]
    assert pos["label"] == 1 and pos["label_source"] == "study_abnormal"
    assert pos["patient_id"] == "mura:patient00001" and pos["study_id"] == "mura:XR_WRIST/patient00001/study1"
    assert pos["source_split"] == "train" and pos["body_part"] == "wrist"
    valid = by_path["valid/XR_WRIST/patient11186/study2_negative/image1.png"]
    assert (valid["label"], valid["source_split"], valid["patient_id"]) == (0, "valid", "mura:patient11186")


def test_study_type_filter(tmp_path):
    root = standard_mura(tmp_path / P)
    wrist = scan_mura(root, ("XR_WRIST",))
    assert wrist.stats["other_study_types"] == 1
    both = scan_mura(root, ("XR_WRIST", "XR_HAND"))
    hand = [c for c in both.candidates if "XR_HAND" in c.path]
    assert len(hand) == 1 and hand[0].fields["body_part"] == "hand"


def test_appledouble_files_never_become_images(tmp_path):
    root = standard_mura(tmp_path / P)
    junk = root / "train/XR_WRIST/patient00001/study1_positive/._image1.png"
    junk.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    scan = scan_mura(root, ("XR_WRIST",))
    assert all("._" not in c.path for c in scan.candidates)  # on disk but not in the CSV: ignored
    listed = mura_candidates(
        [("train", f"{WRIST_POS}/._image1.png")], [(f"{WRIST_POS}/", "1")], ("XR_WRIST",)
    )  # listed by a careless CSV: quarantined
    assert [r.code for r in listed.rejected] == [sources.APPLEDOUBLE]


def test_rgb_png_is_accepted_by_ingest(tmp_path, make_params):
    root = standard_mura(tmp_path / P)
    params = make_params({"base": {"num_workers": 1}})
    summary = run_ingest(params, tmp_path / "out", mura_dir=root)
    df, roots = read_manifest(tmp_path / "out" / "manifest.parquet")
    rgb = df[df["path"].str.endswith("image2.png")].iloc[0]
    assert (rgb["width"], rgb["height"], rgb["bit_depth"]) == (22, 20, 8)
    assert roots == {"mura": str(root)}
    entry = summary["sources"]["mura"]
    assert entry["candidates"] == entry["total"] + entry["quarantined"] == 4
    assert (entry["fracture"], entry["normal"]) == (2, 2)


def test_missing_and_bad_study_labels():
    images = [
        ("train", f"{WRIST_POS}/image1.png"),
        ("train", f"{WRIST_NEG}/image1.png"),
        ("train", f"{P}/train/XR_WRIST/patient00009/study1_positive/image1.png"),
    ]
    studies = [(f"{WRIST_POS}/", "2"), (f"{WRIST_NEG}/", "0"), (f"{WRIST_NEG}/", "1")]
    scan = mura_candidates(images, studies, ("XR_WRIST",))
    codes = sorted(r.code for r in scan.rejected)
    assert codes == sorted([sources.LABEL_INVALID, sources.CONFLICTING_LABELS, sources.NO_LABEL])
    assert not scan.candidates


@pytest.mark.parametrize(
    "raw",
    [f"{P}/../../etc/passwd", "/etc/passwd", f"{P}/train/../../outside/x.png", "../MURA-v1.1/train/a.png"],
)
def test_paths_escaping_the_folder_are_refused(raw):
    scan = mura_candidates([("train", raw)], [], ("XR_WRIST",))
    assert [r.code for r in scan.rejected] == [sources.PATH_ESCAPE]


def test_relpath_resolution():
    assert mura_relpath(f"{P}/train/XR_WRIST/p/s/i.png") == "train/XR_WRIST/p/s/i.png"
    assert mura_relpath("./MURA-v1.1/valid/x") == "valid/x"
    assert mura_relpath("train/XR_WRIST/p/s/i.png") == "train/XR_WRIST/p/s/i.png"
    assert mura_relpath(f"{P}/../x") is None
    assert mura_relpath("renamed/train/a", root_name="renamed") == "train/a"


def test_study_join_uses_first_five_parts():
    labels = study_labels([(f"{WRIST_POS}/", "1"), (f"{WRIST_NEG}", "0")])
    assert labels == {
        "train/XR_WRIST/patient00001/study1_positive": "1",
        "train/XR_WRIST/patient00002/study1_negative": "0",
    }


def test_duplicate_image_paths_are_dropped():
    images = [("train", f"{WRIST_POS}/image1.png"), ("train", f"{WRIST_POS}/image1.png")]
    scan = mura_candidates(images, [(f"{WRIST_POS}/", "1")], ("XR_WRIST",))
    assert len(scan.candidates) == 1 and scan.stats["duplicate_rows"] == 1


def test_bad_layout_is_quarantined():
    scan = mura_candidates([("train", f"{P}/train/XR_WRIST/image1.png")], [], ("XR_WRIST",))
    assert [r.code for r in scan.rejected] == [sources.BAD_LAYOUT]


def test_missing_csv_is_named(tmp_path):
    root = standard_mura(tmp_path / P)
    (root / "valid_labeled_studies.csv").unlink()
    with pytest.raises(InputError, match="valid_labeled_studies.csv"):
        scan_mura(root, ("XR_WRIST",))


@pytest.mark.parametrize(("line", "match"), [(f"{WRIST_POS}/;1", "separated by ';'"), (f"{WRIST_POS}/", "expected")])
def test_malformed_studies_csv(line, match):
    with pytest.raises(InputError, match=match):
        parse_labeled_studies(line + "\n", "train_labeled_studies.csv")


def test_image_paths_with_two_values_are_refused():
    with pytest.raises(InputError, match="line 1"):
        parse_image_paths(f"{WRIST_POS}/image1.png,1\n", "train_image_paths.csv")


def test_counts_add_up_on_a_messy_folder(tmp_path, make_params):
    root = write_mura(
        tmp_path / P,
        {"train": [f"{WRIST_POS}/image1.png", f"{WRIST_POS}/image3.png", f"{WRIST_NEG}/image1.png", f"{P}/../x.png"]},
        {"train": [f"{WRIST_POS}/,1"]},
    )
    (root / "train/XR_WRIST/patient00001/study1_positive/image3.png").unlink()
    summary = run_ingest(make_params({"base": {"num_workers": 1}}), tmp_path / "out", mura_dir=root)
    entry = summary["sources"]["mura"]
    assert entry["candidates"] == 4
    assert entry["total"] == 1
    assert entry["quarantine_reasons"] == {"file missing": 1, "no label": 1, "path escapes dataset root": 1}
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert len(quarantine) == entry["quarantined"] == 3


@pytest.mark.parametrize("header", [False, True])
def test_windows_backslash_csvs_lose_no_row(tmp_path, header):
    # Before: the first backslash path was taken for a header (no "/" in it) and vanished without a quarantine
    # row, and the first study of the studies CSV lost its label.
    root = standard_mura(tmp_path / P, header)
    for name in ("train_image_paths.csv", "train_labeled_studies.csv"):
        (root / name).write_text((root / name).read_text().replace("/", "\\"))
    scan = scan_mura(root, ("XR_WRIST",))
    assert sorted(c.path for c in scan.candidates) == [
        "train/XR_WRIST/patient00001/study1_positive/image1.png",
        "train/XR_WRIST/patient00001/study1_positive/image2.png",
        "train/XR_WRIST/patient00002/study1_negative/image1.png",
        "valid/XR_WRIST/patient11186/study2_negative/image1.png",
    ]
    assert not scan.rejected
    assert {c.path.split("/")[3]: c.fields["label"] for c in scan.candidates} == {
        "study1_positive": 1,
        "study1_negative": 0,
        "study2_negative": 0,
    }


@pytest.mark.parametrize(
    ("fields", "header"),
    [
        (["Img_Path"], True),
        (["Study_Path", "Label"], True),
        (["MURA-v1.1\\train\\XR_WRIST\\patient00001\\study1_positive\\image1.png"], False),
        (["MURA-v1.1\\train\\XR_WRIST\\patient00001\\study1_positive\\", "1"], False),
        (["image1.png", "1"], False),  # a 0/1 second cell is a label, never a header
    ],
)
def test_header_is_decided_by_content(fields, header):
    from fracture.sources.mura import is_header

    assert is_header(fields) is header


def test_two_study_types_of_one_patient_are_two_studies(tmp_path):
    """XR_WRIST/patient00001/study1 and XR_HAND/patient00001/study1 are different studies of one patient."""
    hand = f"{P}/train/XR_HAND/patient00001/study1_negative"
    root = write_mura(
        tmp_path / P,
        {"train": [f"{WRIST_POS}/image1.png", f"{WRIST_POS}/image2.png", f"{hand}/image1.png"]},
        {"train": [f"{WRIST_POS}/,1", f"{hand}/,0"]},
    )
    scan = scan_mura(root, ("XR_WRIST", "XR_HAND"))
    fields = {c.path: c.fields for c in scan.candidates}
    wrist = fields["train/XR_WRIST/patient00001/study1_positive/image1.png"]
    other_view = fields["train/XR_WRIST/patient00001/study1_positive/image2.png"]
    hand_row = fields["train/XR_HAND/patient00001/study1_negative/image1.png"]
    assert wrist["patient_id"] == hand_row["patient_id"] == "mura:patient00001"
    assert wrist["study_id"] == other_view["study_id"] == "mura:XR_WRIST/patient00001/study1"
    assert hand_row["study_id"] == "mura:XR_HAND/patient00001/study1" != wrist["study_id"]
    assert (wrist["label"], hand_row["label"]) == (1, 0)  # merged, the study would look positive with a normal view
