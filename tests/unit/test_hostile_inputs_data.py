"""Issue 26, part A: hostile tables, file names, params and training conditions, each built from its file shape.

Every test here failed on the code before the fix: a short dataset.csv row read as a normal image, a repeated
header quarantined as a missing file, contradicting hospital metadata resolved by row order, a Latin-1 file name
killing ingest and crashing OpenCV, empty paths dropped from a batch list, a 250-character file name breaking
predict's output names, impossible params accepted, a full disk ending train in a traceback, two trainings
writing into one model dir.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from fracture.base.errors import ConfigError, InputError, MultiLine, printable
from fracture.base.io import read_manifest
from fracture.base.logs import EscapeControlFilter
from fracture.config import load_params, parse_params
from fracture.ingest import run_ingest
from fracture.serving.predict import UnusableEntry, list_inputs, output_stem, run_predict
from fracture.sources import CASE_MISMATCH, CONFLICTING_LABELS, CONFLICTING_METADATA, NAME_NOT_UTF8, SHORT_ROW
from fracture.sources.hospital import scan_hospital
from fracture.sources.kaggle import kaggle_candidates, parse_kaggle_table, scan_kaggle
from fracture.sources.mura import mura_candidates, parse_image_paths
from fracture.train.checkpoint import save_checkpoint
from tests.conftest import write_model_dir
from tests.unit.sources.test_sources_kaggle import COLUMNS, STEM_A, STEM_B, csv_text, kaggle_record

REPO = Path(__file__).resolve().parents[2]
LATIN1_NAME = b"R\xf6ntgen.png"  # "Röntgen.png" saved by a Latin-1 system: not UTF-8
STEMS = {STEM_A: f"images_part1/{STEM_A}.png", STEM_B: f"images_part1/{STEM_B}.png"}


def radiograph(seed: int = 0, h: int = 96, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 60, (h, w), dtype=np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (w // 5, h // 3), 10, 0, 360, 220, -1)
    return img


def write_png(path: Path | bytes, img: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", img)
    assert ok
    with open(path, "wb") as fp:  # bytes paths too: cv2.imwrite cannot take a non-UTF-8 name
        fp.write(data.tobytes())


# ------------------------------------------------------------------------------------------- dataset.csv
def test_short_row_is_quarantined_not_read_as_a_normal_image():
    # Defect 1: the row stops after `projection`; its missing fracture_visible used to read as 0 (normal).
    full = csv_text([kaggle_record(STEM_A, fracture_visible="1")])
    short_row = ",".join(kaggle_record(STEM_B).values()).split(",")[:8]
    df = parse_kaggle_table(full + ",".join(short_row) + "\n", "dataset.csv")
    scan = kaggle_candidates(df, STEMS)
    assert [c.path for c in scan.candidates] == [STEMS[STEM_A]]
    (rejected,) = scan.rejected
    assert (rejected.path, rejected.code) == (STEMS[STEM_B], SHORT_ROW)
    assert f"8 of {len(COLUMNS)} fields" in rejected.reason


def test_repeated_header_line_is_dropped_with_one_warning(caplog):
    # Defect 15: two exports concatenated; the second header became a "filestem: file missing" candidate.
    header = ",".join(COLUMNS)
    text = (
        csv_text([kaggle_record(STEM_A)])
        + "\ufeff"
        + header
        + "\n"
        + csv_text([kaggle_record(STEM_B)])[len(header) + 1 :]
    )
    with caplog.at_level(logging.WARNING):
        scan = kaggle_candidates(parse_kaggle_table(text, "dataset.csv"), STEMS)
    assert sorted(c.path for c in scan.candidates) == sorted(STEMS.values())
    assert scan.rejected == []  # two candidates in all, not three
    assert [r.message for r in caplog.records if "repeated header" in r.message] == [
        "dataset.csv: dropped 1 repeated header line(s) inside the table"
    ]


def test_repeated_header_in_a_mura_csv_is_not_an_image_path():
    text = "Img_Path\nMURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png\nImg_Path\n"
    assert parse_image_paths(text, "train_image_paths.csv") == [
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png"
    ]


def test_header_only_dataset_csv_is_an_input_error(tmp_path):
    # Decision: a GRAZPEDWRI-DX table without a single image row is a broken export, exit 2 (was: exit 0, 0 rows).
    (tmp_path / "dataset.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(InputError, match="header only, no image rows"):
        scan_kaggle(tmp_path)


# ------------------------------------------------------------------------------------------- hospital metadata
def hospital_root(root: Path, metadata: str) -> Path:
    for rel in ("radius/positive/a.png", "radius/negative/b.png", "radius/negative/c.png", "scaphoid/positive/d.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # the adapter never opens images
    (root / "metadata.csv").write_text(metadata)
    return root


def test_contradicting_hospital_metadata_is_quarantined(tmp_path):
    # Defect 3 and the two-patient-ids case: the first row used to win with a warning.
    meta = (
        "path,patient_id,age,sex,label\n"
        "radius/positive/a.png,P1,30,F,1\n"
        "radius/positive/a.png,P1,30,F,0\n"  # labels 1 and 0
        "radius/negative/b.png,P2,40,M,\n"
        "radius/negative/b.png,P3,40,M,\n"  # two patients
        "radius/negative/c.png,P4,50,M,1.0\n"
        "radius/negative/c.png,P4,50,M,1\n"  # the same label written twice: not a conflict
    )
    scan = scan_hospital(hospital_root(tmp_path, meta), b"k", None)
    reasons = {r.path: r for r in scan.rejected}
    assert reasons["radius/positive/a.png"].code == CONFLICTING_LABELS
    assert reasons["radius/negative/b.png"].code == CONFLICTING_METADATA
    assert "patient_id" in reasons["radius/negative/b.png"].reason
    paths = sorted(c.path for c in scan.candidates)
    assert paths == ["radius/negative/c.png", "scaphoid/positive/d.png"]  # the folders do not bring them back
    assert len(scan.candidates) + len(scan.rejected) == 4  # one row per image


def test_short_metadata_row_and_case_mismatched_path_count_each_image_once(tmp_path):
    meta = (
        "path,patient_id,age,sex,label\n"
        "radius/positive/a.png,P1\n"  # short: its label and sex are not "empty"
        "Radius/Negative/B.png,P2,40,M,0\n"  # the file is radius/negative/b.png
    )
    scan = scan_hospital(hospital_root(tmp_path, meta), b"k", None)
    reasons = {r.path: r for r in scan.rejected}
    assert reasons["radius/positive/a.png"].code == SHORT_ROW
    assert reasons["radius/negative/b.png"].code == CASE_MISMATCH
    assert "Radius/Negative/B.png" in reasons["radius/negative/b.png"].reason
    assert sorted(c.path for c in scan.candidates) == ["radius/negative/c.png", "scaphoid/positive/d.png"]
    assert len(scan.candidates) + len(scan.rejected) == 4  # was 5: the image counted once by metadata, once by folder


def test_mura_study_label_1_and_1_0_are_one_label():
    study = "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/"
    scan = mura_candidates([("train", f"{study}image1.png")], [(study, "1"), (study, "1.0")], ["XR_WRIST"])
    assert scan.rejected == [] and [c.fields["label"] for c in scan.candidates] == [1]


# ------------------------------------------------------------------------------------------- non-UTF-8 names
def test_latin1_file_name_is_quarantined_and_the_manifest_written(tmp_path, params, monkeypatch):
    # Defect 6: ingest died with UnicodeEncodeError in the parquet writer and wrote no manifest.
    monkeypatch.setenv("FRACTURE_PSEUDONYM_KEY", "k" * 32)
    folder = tmp_path / "hospital" / "radius" / "positive"
    folder.mkdir(parents=True)
    write_png(folder / "good.png", radiograph())
    write_png(os.fsencode(folder) + b"/" + LATIN1_NAME, radiograph(1))
    summary = run_ingest(params, tmp_path / "out", hospital_dir=tmp_path / "hospital")
    manifest, _ = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert list(manifest["path"]) == ["radius/positive/good.png"]
    quarantine = (tmp_path / "out" / "quarantine.csv").read_text(encoding="utf-8")
    assert "radius/positive/R\\xf6ntgen.png,file name not UTF-8" in quarantine
    assert summary["totals"]["quarantine_reasons"] == {NAME_NOT_UTF8: 1}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_params) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "m", make_params({"base": {"image_size": 64}}))


@pytest.fixture(scope="module")
def predict_params(make_params):
    return make_params({"base": {"image_size": 64}, "predict": {"batch_size": 4}})


def test_latin1_png_is_decoded_from_bytes_python_read(tmp_path):
    # Defect 6: cv2.imread segfaulted on the name (single predict, batch predict, preprocess). In a child process:
    # on the old code the crash takes the interpreter down.
    write_png(tmp_path / "ascii.png", radiograph(2))
    write_png(os.fsencode(tmp_path) + b"/" + LATIN1_NAME, radiograph(2))
    code = (
        "import os, sys\n"
        "from fracture.images.decode import prepare_image\n"
        "a = prepare_image(os.path.join(sys.argv[1], 'ascii.png'), 64, (0.5, 99.5))\n"
        "b = prepare_image(os.fsdecode(os.fsencode(sys.argv[1]) + b'/R\\xf6ntgen.png'), 64, (0.5, 99.5))\n"
        "print(int((a == b).all()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-1500:]}"
    assert run.stdout.strip() == "1"


def test_latin1_file_in_a_batch_is_scored_and_no_file_is_lost(tmp_path, model_dir, predict_params):
    # Defect 6: the batch wrote no row at all (predictions.csv is UTF-8 and the name is not).
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a.png", "z.png"):
        write_png(batch / name, radiograph(2))
    write_png(os.fsencode(batch) + b"/" + LATIN1_NAME, radiograph(2))
    summary = run_predict(predict_params, batch, str(model_dir), out_dir=tmp_path / "out")
    assert (summary["count"], summary["scored"]) == (3, 3)
    rows = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    probs = {line.split(",")[0]: float(line.split(",")[2]) for line in rows}
    assert probs[f"{batch}/R\\xf6ntgen.png"] == pytest.approx(probs[f"{batch}/a.png"])  # escaped, read right


# ------------------------------------------------------------------------------------------- predict lists / names
def test_batch_list_reports_empty_and_dot_paths_as_error_rows(tmp_path, model_dir, predict_params):
    # Defect 5 (6 rows in, 4 out) and the unclear "spaces around list values are kept".
    write_png(tmp_path / "a.png", radiograph(3))
    (tmp_path / "list.csv").write_text('path\n a.png \n\n.\n""\n a.png\n./a.png\n   \n')
    entries = list_inputs(tmp_path / "list.csv")
    assert [isinstance(e, UnusableEntry) for e in entries] == [False, True, True, False, False]
    assert entries[0] == tmp_path / "a.png"
    summary = run_predict(predict_params, tmp_path / "list.csv", str(model_dir), out_dir=tmp_path / "out")
    assert (summary["count"], summary["scored"], summary["errors"]) == (5, 3, 2)
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]
    errors = [line for line in rows if "row " in line]
    assert len(errors) == 2 and "row 2: path `.` names no file" in errors[0] and "row 3: empty path" in errors[1]


def test_250_character_file_name_gets_an_output_name_that_fits(tmp_path, model_dir, predict_params):
    # Defect 16: `<stem>_gradcam.png` was 258 bytes, over NAME_MAX, and single predict exited 2.
    name = "x" * 246 + ".png"
    write_png(tmp_path / name, radiograph(4))
    result = run_predict(predict_params, tmp_path / name, str(model_dir), out_dir=tmp_path / "out")
    overlay = tmp_path / "out" / result["overlay"]
    assert overlay.is_file() and len(overlay.name) <= 255
    assert (tmp_path / "out" / overlay.name.replace("_gradcam.png", ".json")).is_file()
    assert output_stem("x" * 246) == result["overlay"].removesuffix("_gradcam.png")  # deterministic
    assert output_stem("x" * 246) != output_stem("x" * 245 + "y")  # cut names still differ
    assert len(os.fsencode(output_stem("ö" * 200) + "_gradcam.png")) <= 255
    assert output_stem("short") == "short"


# ------------------------------------------------------------------------------------------- params.yaml
def params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "lr", float("inf"), "train.lr: Input should be a finite number"),
        ("train", "weight_decay", float("nan"), "train.weight_decay: Input should be a finite number"),
        ("base", "seed", 2**70, "base.seed: Input should be less than 4294967296"),
        ("base", "seed", -1, "base.seed: Input should be greater than or equal to 0"),
        ("ingest", "min_side", 50_000, "ingest.min_side: 50000 is larger than max_side 40000"),
    ],
)
def test_impossible_params_are_refused_naming_the_key(section, key, value, message):
    data = params_dict()
    data[section][key] = value
    with pytest.raises(ConfigError) as err:
        parse_params(data, "params.yaml")
    assert f"params.yaml: {message}" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  seed: 42\n", "  seed: 42\n  seed: 7\n", 1), "base.seed: key given twice"),
        (lambda t: t + "report:\n  title: again\n", "report: key given twice"),
        (lambda t: t.replace("  lr:", "  lr: .inf\n  x_lr:", 1), "train.lr: Input should be a finite number"),
    ],
)
def test_params_file_with_duplicate_keys_or_inf_is_refused(tmp_path, edit, message):
    path = tmp_path / "params.yaml"
    path.write_text(edit((REPO / "params.yaml").read_text()))
    with pytest.raises(ConfigError, match=message) as err:
        load_params(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------- train
def test_train_refuses_a_cache_built_with_other_window_percentiles(tmp_path, make_params):
    # Defect 4: the cache's window differed from params (and so from config.json's contract) and train went on.
    from fracture.train.loader import load_training_data
    from tests.unit.train.test_train import write_tiny_dataset

    tiny = write_tiny_dataset(tmp_path, n={"train": 8, "val": 4, "test": 2})
    params = make_params({"base": {"image_size": 32}, "preprocess": {"window_percentiles": [1.0, 99.0]}})
    with pytest.raises(InputError, match=r"cache window_percentiles \[0.5, 99.5\] differ from params preprocess"):
        load_training_data(params, tiny["manifest"], tiny["splits"], tiny["cache"])


class _FullDiskFile:
    """A file whose write fails with ENOSPC once `budget` bytes are written (later small writes 'succeed')."""

    def __init__(self, fp, budget: int) -> None:  # noqa: ANN001
        self._fp, self._left, self._failed = fp, budget, False

    def write(self, data: bytes) -> int:
        if not self._failed and len(data) > self._left:
            self._failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._fp.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._fp, name)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self._fp.close()


def test_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    # Defect 14: torch's zip writer turned the ENOSPC into "RuntimeError: ... unexpected pos", exit 1.
    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        fp = real_open(file, mode, *args, **kwargs)
        return _FullDiskFile(fp, 4096) if "w" in mode and str(file).endswith(".tmp") else fp

    monkeypatch.setattr(builtins, "open", full_disk_open)
    target = tmp_path / "checkpoints" / "best.pt"
    with pytest.raises(InputError) as err:
        save_checkpoint(target, {"w": torch.zeros(10_000)})
    assert str(err.value) == f"no space left on {target}"
    monkeypatch.setattr(builtins, "open", real_open)
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no temporary file left


def test_second_train_into_one_model_dir_is_refused(tmp_path, make_params):
    from fracture.base.outputs import out_dir_lock
    from fracture.train import run_train

    params = make_params({"base": {"image_size": 32}})
    out = tmp_path / "model"
    with out_dir_lock(out), pytest.raises(InputError, match="another fracture run is writing here"):
        run_train(params, tmp_path / "m.parquet", tmp_path / "s.parquet", tmp_path / "cache", out)


# ------------------------------------------------------------------------------------------- escaping
def test_newline_and_latin1_bytes_in_a_file_name_are_escaped_in_log_lines():
    name = os.fsdecode(b"evil\nINFO fake line \xf6.png")
    record = logging.LogRecord("fracture", logging.INFO, __file__, 1, "%s: scored\nsecond line", (Path(name),), None)
    EscapeControlFilter().filter(record)
    assert record.getMessage() == "evil\\x0aINFO fake line \\xf6.png: scored\nsecond line"
    assert printable(name) == "evil\\x0aINFO fake line \\xf6.png"
    table = logging.LogRecord("fracture", logging.INFO, __file__, 1, "split:\n%s", (MultiLine("a  b\n1  2"),), None)
    EscapeControlFilter().filter(table)
    assert table.getMessage() == "split:\na  b\n1  2"  # a table logged as one value keeps its lines
