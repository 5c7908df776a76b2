"""Synthetic demo data: the real on-disk layouts, determinism, and a learnable fracture signal."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fracture.base.errors import InputError
from fracture.sources import SOURCE_DIRS
from fracture.sources.ao import parse_codes
from fracture.synth import run_synth
from fracture.synth.dicom import SYNTH_PHI_STRINGS
from fracture.synth.render import make_radiograph, to_uint8, to_uint16
from fracture.synth.run import plan_sources, render_spec
from tests.spec import GRAZ_COLUMNS, GRAZ_FLAGS

STEM_RE = re.compile(r"^(\d{4})_(\d{10})_(\d{2})_WRI-([LR])([123])_([MFO])(\d{3})$")
AO_RE = re.compile(r"^\d{2}[ru]?-[A-Z]/\d(\.\d)?(; \d{2}[ru]?-[A-Z]/\d(\.\d)?)*$")
MURA_STUDY_RE = re.compile(
    r"^MURA-v1\.1/(train|valid)/(XR_[A-Z]+)/(patient\d{5})/study\d+_(positive|negative)/,([01])$"
)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, params) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "raw"
    return out, run_synth(params, out)


@pytest.fixture(scope="module")
def raw(synth_run) -> Path:
    return synth_run[0]


@pytest.fixture(scope="module")
def graz_rows(raw: Path) -> list[dict]:
    with open(raw / "GRAZPEDWRI-DX" / "dataset.csv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_synth_writes_the_source_folders_ingest_looks_for(raw: Path) -> None:
    assert sorted(p.name for p in raw.iterdir() if p.is_dir()) == sorted(SOURCE_DIRS.values())


def test_the_kfp_steps_find_source_folders_without_loading_the_simulator() -> None:
    code = (
        "import sys, fracture.kubeflow.steps; print(sorted(m for m in ('fracture.synth', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ----------------------------------------------------------------------------------------- GRAZPEDWRI-DX


def test_graz_csv_starts_with_bom_and_has_the_17_documented_columns(raw: Path) -> None:
    data = (raw / "GRAZPEDWRI-DX" / "dataset.csv").read_bytes()
    assert data[:3] == b"\xef\xbb\xbf"
    header = data[3:].split(b"\n", 1)[0].decode()
    assert header.split(",") == GRAZ_COLUMNS


def test_graz_flags_are_one_or_empty_never_zero(graz_rows: list[dict]) -> None:
    for flag in GRAZ_FLAGS:
        values = {row[flag] for row in graz_rows}
        assert values == {"1", ""}, f"{flag}: {values}"


def test_graz_values_follow_the_documented_domains(graz_rows: list[dict]) -> None:
    assert {row["gender"] for row in graz_rows} == {"M", "F", "O"}
    assert {row["projection"] for row in graz_rows} == {"1", "2", "3"}
    ages = [float(row["age"]) for row in graz_rows]
    assert 0.2 <= min(ages) and max(ages) <= 19
    codes = [row["ao_classification"] for row in graz_rows if row["ao_classification"]]
    assert codes and sum(bool(AO_RE.match(c)) for c in codes) > 0.8 * len(codes), codes
    assert any("; " in c for c in codes)


def test_graz_some_images_carry_an_ao_code_without_a_visible_fracture(graz_rows: list[dict]) -> None:
    assert any(row["ao_classification"] and row["fracture_visible"] == "" for row in graz_rows)


def test_graz_ao_codes_cover_what_the_ao_tasks_must_handle(graz_rows: list[dict]) -> None:
    rows = [(parse_codes(row["ao_classification"]), row["fracture_visible"] == "1") for row in graz_rows]
    statuses = Counter(p.status for p, _ in rows)
    assert statuses["ok"] > 2 * (statuses["malformed"] + statuses["not_pccf"])  # a few odd ones, mostly PCCF
    assert statuses["malformed"] >= 1 and statuses["not_pccf"] >= 1
    assert any(visible and p.status == "none" for p, visible in rows)  # a visible fracture nobody coded
    codes = [c for p, visible in rows if visible for c in p.codes]
    assert {c.salter_harris for c in codes} & {"I", "II", "III", "IV"}
    assert any(c.physeal for c in codes) and any(not c.physeal for c in codes)
    assert any(c.pair is None for c in codes)  # both-bone codes


def test_graz_ao_codes_do_not_touch_the_image_stream(params, monkeypatch) -> None:
    """AO codes come from their own generator: without them the image specs and other columns stay the same."""
    from fracture.synth import kaggle

    def table_and_specs() -> tuple[list[dict], list]:
        plan = kaggle.plan_kaggle(np.random.default_rng([3, 1, 0]), 60, 0.45, (160, 256))
        text = plan.texts["dataset.csv"].decode("utf-8-sig")
        return list(csv.DictReader(text.splitlines())), plan.specs

    rows, specs = table_and_specs()
    monkeypatch.setattr(kaggle, "_ao_codes", lambda rng, coded: {})
    bare_rows, bare_specs = table_and_specs()
    assert bare_specs == specs
    assert [r | {"ao_classification": ""} for r in rows] == bare_rows
    assert any(r["ao_classification"] for r in rows)


def test_graz_cohort_exclusions_exist_but_stay_a_minority(graz_rows: list[dict]) -> None:
    excluded = [
        row
        for row in graz_rows
        if row["metal"] == "1" or row["diagnosis_uncertain"] == "1" or row["gender"] == "O" or row["projection"] == "3"
    ]
    assert 0 < len(excluded) < 0.25 * len(graz_rows)
    assert any(row["cast"] == "1" for row in graz_rows)


def test_graz_filestems_encode_the_row(graz_rows: list[dict]) -> None:
    for row in graz_rows:
        m = STEM_RE.match(row["filestem"])
        assert m, row["filestem"]
        patient, timehash, study, side, proj, sex, age = m.groups()
        assert patient == row["patient_id"] and timehash == row["timehash"]
        assert int(study) == int(row["study_number"]) and side == row["laterality"]
        assert proj == row["projection"] and sex == row["gender"] and int(age) == int(float(row["age"]))


def test_graz_patients_have_several_studies_of_two_views(graz_rows: list[dict]) -> None:
    studies: dict[tuple[str, str], int] = {}
    for row in graz_rows:
        key = (row["patient_id"], row["study_number"])
        studies[key] = studies.get(key, 0) + 1
    patients = {p for p, _ in studies}
    assert len(patients) < len(studies) < len(graz_rows)
    assert sum(v == 2 for v in studies.values()) >= len(studies) - 1


def test_graz_images_are_wide_range_16bit_pngs_in_nested_part_folders(raw: Path, graz_rows: list[dict]) -> None:
    root = raw / "GRAZPEDWRI-DX"
    found = {p.stem: p for p in root.rglob("*.png")}
    assert set(found) == {row["filestem"] for row in graz_rows}
    parents = {p.parent.relative_to(root).as_posix() for p in found.values()}
    assert any(re.fullmatch(r"images_part(\d)/images_part\1", d) for d in parents), parents
    assert all(re.fullmatch(r"images_part\d(/images_part\d)?", d) for d in parents)
    for path in list(found.values())[::6]:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.ndim == 2
        assert int(img.max()) - int(img.min()) > 40_000  # far beyond 8 bits: PIL's RGB convert would flatten it


# -------------------------------------------------------------------------------------------------- MURA


def test_mura_csvs_have_no_header_and_paths_from_the_dataset_folder(raw: Path) -> None:
    mura = raw / "MURA-v1.1"
    for split in ("train", "valid"):
        paths = _lines(mura / f"{split}_image_paths.csv")
        assert paths and all(p.startswith(f"MURA-v1.1/{split}/") and p.endswith(".png") for p in paths)
        assert all((raw / p).is_file() for p in paths)  # CSV paths resolve against the folder's parent
        studies = _lines(mura / f"{split}_labeled_studies.csv")
        assert studies and all(MURA_STUDY_RE.match(s) for s in studies), studies[:3]
        for line in studies:
            study_dir, label = line.rsplit(",", 1)
            assert study_dir.endswith("/") and (raw / study_dir).is_dir()
            assert (label == "1") == study_dir.endswith("_positive/")
        assert {"/".join(p.split("/")[:5]) + "/" for p in paths} == {s.rsplit(",", 1)[0] for s in studies}


def test_mura_patients_are_disjoint_between_train_and_valid_and_another_study_type_is_listed(raw: Path) -> None:
    mura = raw / "MURA-v1.1"
    patients = {}
    types = set()
    for split in ("train", "valid"):
        matches = [MURA_STUDY_RE.match(s) for s in _lines(mura / f"{split}_labeled_studies.csv")]
        patients[split] = {m.group(3) for m in matches}
        types |= {m.group(2) for m in matches}
    assert patients["train"] and patients["valid"] and not patients["train"] & patients["valid"]
    assert "XR_WRIST" in types and len(types) > 1


def test_mura_some_pngs_are_rgb_with_equal_channels(raw: Path) -> None:
    mura = raw / "MURA-v1.1"
    images = [cv2.imread(str(raw / p), cv2.IMREAD_UNCHANGED) for p in _lines(mura / "train_image_paths.csv")]
    rgb = [img for img in images if img.ndim == 3]
    assert rgb and len(rgb) < len(images) / 2
    assert all(img.shape[2] == 3 and (img[..., 0] == img[..., 2]).all() for img in rgb)
    assert all(img.dtype == np.uint8 for img in images)


def test_mura_appledouble_junk_is_on_disk_but_not_in_the_csvs(raw: Path) -> None:
    mura = raw / "MURA-v1.1"
    junk = sorted(mura.rglob("._*"))
    assert len(junk) >= 2
    listed = set(_lines(mura / "train_image_paths.csv") + _lines(mura / "valid_image_paths.csv"))
    assert not any(f"MURA-v1.1/{p.relative_to(mura).as_posix()}" in listed for p in junk)
    assert cv2.imread(str(junk[0]), cv2.IMREAD_UNCHANGED) is None


# ---------------------------------------------------------------------------------------------- hospital


def test_hospital_tree_has_the_parts_labels_and_formats(raw: Path) -> None:
    root = raw / "hospital"
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "metadata.csv"]
    assert {p.parts[0] for p in files} == {"radius", "scaphoid_set", "styloid"}
    assert {p.parts[1] for p in files} == {"positive", "negative"}
    assert any(len(p.parts) > 3 for p in files)  # nested below the label folder
    suffixes = {p.suffix for p in files}
    assert suffixes == {".png", ".jpg", ".dcm"}
    png = cv2.imread(str(root / next(p for p in files if p.suffix == ".png")), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.ndim == 2


def test_hospital_augmented_copies_are_slight_variations_of_their_original(raw: Path) -> None:
    root = raw / "hospital"
    copies = [p for p in root.rglob("*.png") if re.fullmatch(r"(posi|nega)_\d+_\d+", p.stem)]
    assert len(copies) >= 3
    for part in ("radius", "scaphoid_set", "styloid"):
        assert any(p.relative_to(root).parts[0] == part for p in copies)
    for copy in copies:
        original = copy.with_name(copy.stem.rsplit("_", 1)[0] + ".png")
        a = cv2.imread(str(original), cv2.IMREAD_UNCHANGED).astype(np.float32)
        b = cv2.imread(str(copy), cv2.IMREAD_UNCHANGED).astype(np.float32)
        assert a.shape == b.shape and not np.array_equal(a, b)
        assert np.corrcoef(cv2.blur(a, (9, 9)).ravel(), cv2.blur(b, (9, 9)).ravel())[0, 1] > 0.6


def test_hospital_metadata_covers_most_but_not_all_images(raw: Path) -> None:
    root = raw / "hospital"
    with open(root / "metadata.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "patient_id", "age", "sex"]
    assert all((root / r["path"]).is_file() for r in rows)
    assert all(re.fullmatch(r"H\d{6}", r["patient_id"]) and r["sex"] in {"M", "F"} for r in rows)
    assert all(18 <= float(r["age"]) < 100 for r in rows)
    images = [p for p in root.rglob("*") if p.suffix in {".png", ".jpg", ".dcm"}]
    assert 0.6 * len(images) < len(rows) < len(images)
    assert len({r["patient_id"] for r in rows}) < len(rows)


def test_hospital_dicoms_carry_phi_and_one_is_inverted_monochrome1(raw: Path, params) -> None:
    root = raw / "hospital"
    dicoms = {p.relative_to(root).as_posix(): pydicom.dcmread(p) for p in sorted(root.rglob("*.dcm"))}
    assert len(dicoms) >= 2
    assert {ds.PhotometricInterpretation for ds in dicoms.values()} == {"MONOCHROME1", "MONOCHROME2"}
    for ds in dicoms.values():
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber"):
            assert str(ds.data_element(keyword).value) in SYNTH_PHI_STRINGS
        assert str(ds.ReferringPhysicianName) in SYNTH_PHI_STRINGS and ds.StudyInstanceUID
    # Stored values of the MONOCHROME1 file run opposite to the rendered (bone-bright) image.
    plan = plan_sources(params, params.synth.n_per_source, params.base.seed)["hospital"]
    spec = next(s for s in plan.specs if s.kind == "dcm_mono1")
    _, rendered = render_spec(spec, params.base.seed, 3)
    stored = dicoms[spec.rel_path].pixel_array.astype(np.float32)
    assert np.corrcoef(stored.ravel(), rendered.ravel())[0, 1] < -0.99


# -------------------------------------------------------------------------------- counts and determinism


def test_counts_match_the_files_and_the_positive_fraction(synth_run, params) -> None:
    raw, counts = synth_run
    n = params.synth.n_per_source
    assert set(counts) == {"kaggle", "mura", "hospital"}
    for source, c in counts.items():
        assert c["images"] == n and c["positive"] + c["negative"] == n, source
        assert abs(c["positive"] / n - params.synth.positive_fraction) < 0.1, (source, c)
    wrist = [p for p in _lines(raw / "MURA-v1.1" / "train_image_paths.csv") if "/XR_WRIST/" in p]
    wrist += [p for p in _lines(raw / "MURA-v1.1" / "valid_image_paths.csv") if "/XR_WRIST/" in p]
    assert len(wrist) == counts["mura"]["images"]
    hospital = [p for p in (raw / "hospital").rglob("*") if p.suffix in {".png", ".jpg", ".dcm"}]
    assert len(hospital) == counts["hospital"]["images"]
    assert (raw / "params.yaml").is_file() and (raw / "synth_summary.json").is_file()


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, params, raw: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    run_synth(params, again)
    run_synth(params, other, seed=params.base.seed + 1)
    reference = _file_hashes(raw)
    assert _file_hashes(again) == reference
    changed = _file_hashes(other)
    assert changed["GRAZPEDWRI-DX/dataset.csv"] != reference["GRAZPEDWRI-DX/dataset.csv"]
    assert len(set(changed.values()) & set(reference.values())) < 0.05 * len(reference)


def test_rerun_replaces_a_previous_output_and_cleans_a_killed_run(tmp_path, params) -> None:
    out = tmp_path / "raw"
    run_synth(params, out, seed=1)
    first = _file_hashes(out / "GRAZPEDWRI-DX")
    (out / ".synth-tmp-killed" / "hospital").mkdir(parents=True)  # what a killed run leaves behind
    (out / "keep.txt").write_text("not ours")
    counts = run_synth(params, out, seed=2)
    second = _file_hashes(out / "GRAZPEDWRI-DX")
    assert not set(first) - {"dataset.csv"} & set(second)  # no stale image of the first run survives
    assert len(second) == 2 * counts["kaggle"]["images"] + 1  # each image, its YOLO labels file, dataset.csv
    assert not list(out.glob(".synth-tmp-*")) and (out / "keep.txt").read_text() == "not ours"


def test_too_few_images_per_source_is_an_input_error(tmp_path, params) -> None:
    with pytest.raises(InputError, match="n_per_source"):
        run_synth(params, tmp_path, n_per_source=3)


# ----------------------------------------------------------------------------------- pure image functions


def test_make_radiograph_contract_and_fracture_is_the_only_difference() -> None:
    a = make_radiograph(np.random.default_rng(5), 200, 150, fracture=False)
    b = make_radiograph(np.random.default_rng(5), 200, 150, fracture=False)
    c = make_radiograph(np.random.default_rng(5), 200, 150, fracture=True)
    assert a.shape == (200, 150) and a.dtype == np.float64 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b)
    diff = np.abs(c - a) > 0.1
    assert 0.005 < diff.mean() < 0.3  # a localised change, not a different picture
    big = make_radiograph(np.random.default_rng(5), 2500, 2000, fracture=True, cast=True, metal=True)
    assert big.shape == (2500, 2000) and big.dtype == np.float64


def test_boxes_frame_the_drawn_fracture_marker_and_metal_without_changing_the_image() -> None:
    found = []
    for seed in range(40):
        boxes: list = []
        with_boxes = make_radiograph(np.random.default_rng(seed), 200, 150, True, metal=True, boxes=boxes)
        assert np.array_equal(with_boxes, make_radiograph(np.random.default_rng(seed), 200, 150, True, metal=True))
        intact = make_radiograph(np.random.default_rng(seed), 200, 150, False, metal=True)
        changed = np.abs(with_boxes - intact) > 0.1  # the fracture line and the displaced fragment
        for name, (xc, yc, w, h) in boxes:
            assert 0 <= xc - w / 2 and xc + w / 2 <= 1 and 0 <= yc - h / 2 and yc + h / 2 <= 1
            x0, x1, y0, y1 = (
                round((xc - w / 2) * 150),
                round((xc + w / 2) * 150),
                round((yc - h / 2) * 200),
                round((yc + h / 2) * 200),
            )
            inside = with_boxes[y0:y1, x0:x1]
            if name == "fracture":
                assert changed[y0:y1, x0:x1].mean() > 0.1  # the break is inside its box
            else:  # the marker and the plate are the brightest things drawn
                assert np.quantile(inside, 0.9) > np.quantile(with_boxes, 0.8)
            found.append(name)
    assert {"fracture", "metal", "text"} <= set(found)


def test_kaggle_synth_writes_yolo_labels_for_every_image(raw: Path, graz_rows: list[dict]) -> None:
    from fracture.sources.boxes import scan_boxes

    labels = raw / "GRAZPEDWRI-DX" / "folder_structure" / "yolov5" / "labels"
    scan = scan_boxes(labels)
    assert scan.files == len(graz_rows) and scan.quarantine.empty
    positives = {r["filestem"] for r in graz_rows if r["fracture_visible"] == "1"}
    boxed = set(scan.boxes.loc[scan.boxes["class"] == "fracture", "stem"])
    assert boxed == positives  # a fracture box exactly where a fracture is drawn
    assert (scan.boxes["class"] == "text").sum() > len(graz_rows) / 2


def test_quantisers_map_the_unit_range_onto_the_target_range() -> None:
    img = np.array([[0.0, 0.5, 1.0, 1.7, -0.2]], dtype=np.float32)
    assert to_uint8(img).tolist() == [[0, 128, 255, 255, 0]]
    u16 = to_uint16(img, 1000, 65000)
    assert u16.dtype == np.uint16 and u16.tolist() == [[1000, 33000, 65000, 65000, 1000]]
    with pytest.raises(ValueError):
        to_uint16(img, 5, 5)


# ------------------------------------------------------------------------------------ learnable signal


def _to_model_input(img: np.ndarray, size: int) -> np.ndarray:
    """Roughly what preprocess does: grayscale, robust percentile window, resize to the model size."""
    img = img[..., 0] if img.ndim == 3 else img
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _edge_features(img: np.ndarray) -> np.ndarray:
    """Pooled vertical/horizontal edge strength: a fracture gap adds edges across the bone."""
    gy = np.abs(cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3))
    gx = np.abs(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3))
    return np.concatenate([cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA).ravel() for g in (gy, gx)])


def _generated_set(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = [], []
    for i in range(n):
        h = int(rng.integers(128, 193))
        w = int(rng.integers(128, 193))
        label = bool(rng.random() < 0.45)
        img = make_radiograph(
            np.random.default_rng([seed, i]), h, w, label, lateral=rng.random() < 0.4, cast=rng.random() < 0.1
        )
        x.append(_edge_features(_to_model_input(img, size)))
        y.append(label)
    return np.array(x), np.array(y)


@pytest.fixture(scope="module")
def edge_classifier(params) -> LogisticRegression:
    x, y = _generated_set(1, 240, params.base.image_size)
    return LogisticRegression(C=0.1, max_iter=5000).fit(x, y)


def test_fracture_signal_survives_downsizing_and_is_linearly_learnable(edge_classifier, params) -> None:
    x, y = _generated_set(2, 120, params.base.image_size)
    auroc = roc_auc_score(y, edge_classifier.predict_proba(x)[:, 1])
    assert auroc > 0.9, auroc


def _labelled_files(raw: Path, graz_rows: list[dict]) -> dict[str, list[tuple[Path, int]]]:
    graz = {p.stem: p for p in (raw / "GRAZPEDWRI-DX").rglob("*.png")}
    mura = [raw / p for split in ("train", "valid") for p in _lines(raw / "MURA-v1.1" / f"{split}_image_paths.csv")]
    hospital = [p for p in (raw / "hospital").rglob("*") if p.suffix in {".png", ".jpg"}]
    return {
        "kaggle": [(graz[r["filestem"]], int(r["fracture_visible"] == "1")) for r in graz_rows],
        "mura": [(p, int(p.parent.name.endswith("_positive"))) for p in mura],
        "hospital": [(p, int(p.relative_to(raw / "hospital").parts[1] == "positive")) for p in hospital],
    }


def test_written_labels_agree_with_the_pictures_in_every_source(raw, graz_rows, edge_classifier, params) -> None:
    for source, items in _labelled_files(raw, graz_rows).items():
        x = np.array(
            [
                _edge_features(_to_model_input(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), params.base.image_size))
                for p, _ in items
            ]
        )
        y = np.array([label for _, label in items])
        auroc = roc_auc_score(y, edge_classifier.predict_proba(x)[:, 1])
        assert auroc > 0.85, (source, auroc)
