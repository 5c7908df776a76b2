"""Inference: 8/16-bit PNG and DICOM in, frozen-threshold decision and Grad-CAM out; batch mode streams and
survives bad files; bad parts and bad weights are exit 2 with a clear message."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import SecondaryCaptureImageStorage
from typer.testing import CliRunner

from fracture.base.errors import InputError
from fracture.cli import app
from fracture.serving.predict import decide, list_inputs, run_predict, validate_part
from fracture.tracking import model_digest
from fracture.vocab import BODY_PARTS
from tests.unit.report.test_report import write_model_dir


def wrist_16bit(h: int = 120, w: int = 90, seed: int = 0) -> np.ndarray:
    """A 16-bit 'radiograph' whose detail lives in the upper byte range (as in GRAZPEDWRI-DX)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 30000, dtype=np.uint16) + rng.integers(0, 800, (h, w), dtype=np.uint16)
    cv2.ellipse(img, (w // 2, h // 2), (w // 5, h // 3), 10, 0, 360, 58000, -1)
    cv2.line(img, (w // 3, h // 2), (2 * w // 3, h // 2 + 4), 45000, 2)
    return img


def write_dicom(path: Path, arr: np.ndarray) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    ds.set_pixel_data(arr, "MONOCHROME2", 16)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def predict_params(make_params):
    return make_params({"predict": {"batch_size": 4}})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, predict_params) -> Path:
    out = tmp_path_factory.mktemp("model") / "model"
    write_model_dir(predict_params, out)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    img16 = wrist_16bit()
    img8 = (img16 // 257).astype(np.uint8)
    cv2.imwrite(str(root / "wrist16.png"), img16)
    cv2.imwrite(str(root / "wrist8.png"), img8)
    write_dicom(root / "wrist.dcm", img16)
    return {"png16": root / "wrist16.png", "png8": root / "wrist8.png", "dicom": root / "wrist.dcm"}


def config_threshold(model_dir: Path) -> float:
    return json.loads((model_dir / "config.json").read_text())["threshold"]


@pytest.mark.parametrize("kind", ["png8", "png16", "dicom"])
def test_single_image_result_and_overlay(kind, inputs, model_dir, predict_params, tmp_path):
    result = run_predict(predict_params, inputs[kind], str(model_dir), part="Radius", out_dir=tmp_path)
    written = json.loads((tmp_path / f"{inputs[kind].stem}.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert 0.0 <= written["prob"] <= 1.0
    assert written["threshold"] == config_threshold(model_dir)
    assert written["decision"] == ("fracture" if written["prob"] >= written["threshold"] else "normal")
    assert written["part"] == "radius"
    assert written["model"]["model_digest"] == model_digest(model_dir)  # finds the training run (its tag)
    overlay = cv2.imread(str(tmp_path / written["overlay"]), cv2.IMREAD_COLOR)
    assert overlay is not None and overlay.shape[0] > 100
    assert (tmp_path / "params.yaml").is_file()


def test_16bit_png_8bit_png_and_dicom_agree(inputs, model_dir, predict_params, tmp_path):
    """One decode path: the same anatomy in three encodings scores the same."""
    probs = {k: run_predict(predict_params, p, str(model_dir), out_dir=tmp_path / k)["prob"] for k, p in inputs.items()}
    assert probs["png16"] == pytest.approx(probs["dicom"], abs=1e-3)
    assert probs["png16"] == pytest.approx(probs["png8"], abs=0.02)


def test_weights_file_and_renamed_weights_load(inputs, model_dir, predict_params, tmp_path):
    by_dir = run_predict(predict_params, inputs["png8"], str(model_dir), out_dir=tmp_path / "a")["prob"]
    by_file = run_predict(predict_params, inputs["png8"], str(model_dir / "model.pt"), out_dir=tmp_path / "b")["prob"]
    renamed = tmp_path / "copy"
    shutil.copytree(model_dir, renamed)
    (renamed / "model.pt").rename(renamed / "best.pt")
    by_other = run_predict(predict_params, inputs["png8"], str(renamed / "best.pt"), out_dir=tmp_path / "c")["prob"]
    assert by_dir == by_file == by_other


def test_registry_uri_downloads_lazily(inputs, model_dir, predict_params, tmp_path, monkeypatch):
    import fracture.registry.download

    calls = []

    def fake_download(uri: str, dst: Path) -> Path:
        calls.append(uri)
        shutil.copytree(model_dir, dst / "model")
        return dst / "model"

    monkeypatch.setattr(fracture.registry.download, "download_model_dir", fake_download)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a server URI: the download is faked
    result = run_predict(predict_params, inputs["png8"], "models:/fracture-swin@champion", out_dir=tmp_path)
    assert calls == ["models:/fracture-swin@champion"]
    assert result["model"]["weight"] == "models:/fracture-swin@champion"


def test_registry_uri_without_a_tracking_server_creates_no_mlflow_db(inputs, predict_params, tmp_path, monkeypatch):
    # Was: MLflow created (and migrated) mlflow.db in the working directory, then said the model was unknown.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"models:/fracture-swin@champion: no model registry at .*MLFLOW_TRACKING_URI"):
        run_predict(predict_params, inputs["png8"], "models:/fracture-swin@champion", out_dir=tmp_path / "o")
    assert not (tmp_path / "mlflow.db").exists()


def run_cli(args: list[str], params_file: Path):
    return CliRunner().invoke(app, ["predict", "--params", str(params_file), *args])


def test_unknown_part_is_exit_2_listing_known_parts(inputs, model_dir, params_file, tmp_path):
    res = run_cli(
        ["--img", str(inputs["png8"]), "--weight", str(model_dir), "--part", "elbow", "--out", str(tmp_path)],
        params_file,
    )
    assert res.exit_code == 2
    assert "elbow" in res.output and all(p in res.output for p in BODY_PARTS)
    assert not list(tmp_path.iterdir()), "nothing should be written for a refused request"


def test_corrupt_weights_are_exit_2_with_a_clear_message(inputs, model_dir, params_file, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "model.pt").write_bytes(b"this is not a torch file")
    res = run_cli(["--img", str(inputs["png8"]), "--weight", str(bad), "--out", str(tmp_path / "o")], params_file)
    assert res.exit_code == 2
    assert "model.pt" in res.output and "not a readable weights file" in res.output
    assert "Traceback" not in res.output


def test_mismatched_weights_are_an_input_error(inputs, model_dir, predict_params, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "head_hidden": config["head_hidden"] * 2}))
    with pytest.raises(InputError, match="do not match"):
        run_predict(predict_params, inputs["png8"], str(other), out_dir=tmp_path / "o")


def test_missing_weights_and_unreadable_single_image(inputs, model_dir, predict_params, tmp_path):
    with pytest.raises(InputError, match="no such model"):
        run_predict(predict_params, inputs["png8"], str(tmp_path / "nope"), out_dir=tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match="broken.png"):
        run_predict(predict_params, broken, str(model_dir), out_dir=tmp_path / "o")


def make_batch_dir(root: Path, inputs: dict[str, Path], n_good: int) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(n_good):
        target = root / ("nested/deeper" if i % 3 == 0 else "nested" if i % 3 == 1 else ".")
        img = wrist_16bit(seed=i)
        cv2.imwrite(str(target / f"img{i:02d}.png"), img if i % 2 else (img // 257).astype(np.uint8))
    shutil.copy(inputs["dicom"], root / "nested" / "scan.dcm")
    (root / "nested" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "._img00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / "notes.txt").write_text("not an image")
    return root


def read_rows(out: Path) -> tuple[list[dict], list[dict]]:
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_batch_directory_with_a_bad_file(inputs, model_dir, params_file, tmp_path):
    src = make_batch_dir(tmp_path / "in", inputs, n_good=9)
    res = run_cli(
        ["--img", str(src), "--weight", str(model_dir), "--part", "wrist", "--out", str(tmp_path / "o")], params_file
    )
    assert res.exit_code == 0, res.output
    rows, records = read_rows(tmp_path / "o")
    assert len(rows) == len(records) == 12  # 9 PNG + 1 DICOM + 1 corrupt + the .txt; hidden/AppleDouble skipped
    bad = sorted((r for r in records if r["error"]), key=lambda r: r["path"])
    assert [Path(r["path"]).suffix for r in bad] == [".png", ".txt"]
    assert "corrupt.png" in bad[0]["error"] and "not an image" in bad[1]["error"]
    assert all(r["prob"] is None and r["decision"] is None for r in bad)
    good = [r for r in records if not r["error"]]
    assert all(0 <= r["prob"] <= 1 and r["decision"] in ("fracture", "normal") for r in good)
    assert all(r["part"] == "wrist" and r["overlay"] is None for r in records)
    assert not (tmp_path / "o" / "overlays").exists(), "overlays are off by default in batch mode"


def test_batch_csv_with_overlays(inputs, model_dir, make_params, tmp_path):
    params = make_params({"predict": {"batch_size": 2, "batch_overlays": True}})
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,note\n{inputs['png8']}\nwrist16.png,x\nmissing.png,y\n")
    shutil.copy(inputs["png16"], tmp_path / "wrist16.png")
    summary = run_predict(params, listing, str(model_dir), out_dir=tmp_path / "o")
    assert summary["count"] == 3 and summary["errors"] == 1 and summary["scored"] == 2
    rows, _ = read_rows(tmp_path / "o")
    assert "missing.png" in rows[2]["error"]
    for r in rows[:2]:
        assert (tmp_path / "o" / r["overlay"]).is_file()


def test_batch_says_loading_model_first_and_counts_images(
    inputs, model_dir, make_params, tmp_path, monkeypatch, caplog
):
    """The bar advances in images (not chunks of batch_size), and the slow model load is announced before it."""
    import fracture.base.parallel as parallel

    params = make_params({"predict": {"batch_size": 4}})
    src = make_batch_dir(tmp_path / "in", inputs, n_good=9)
    bars: list[dict] = []
    real_counter = parallel.counter

    def spy(total, desc, unit):  # noqa: ANN001, ANN202
        bar = real_counter(total, desc, unit)
        seen = {"total": total, "unit": unit, "updates": []}
        bars.append(seen)
        update = bar.update
        bar.update = lambda n=1: (seen["updates"].append(n), update(n))[1]
        return bar

    monkeypatch.setattr(parallel, "counter", spy)
    with caplog.at_level(logging.INFO, logger="fracture"):
        summary = run_predict(params, src, str(model_dir), out_dir=tmp_path / "o")
    messages = [r.getMessage() for r in caplog.records]
    loading = next(i for i, m in enumerate(messages) if m.startswith("loading model"))
    scoring = next(
        i for i, m in enumerate(messages) if m == f"predict: scoring {summary['count']} images in chunks of 4"
    )
    assert loading < scoring
    (bar,) = bars
    assert bar["unit"] == "image" and bar["total"] == summary["count"] == 12
    assert sum(bar["updates"]) == 12 and bar["updates"] == [4, 4, 4]


def test_batch_streams_in_chunks_and_keeps_finished_chunks(inputs, model_dir, predict_params, tmp_path, monkeypatch):
    import fracture.serving.predict as predict

    src = make_batch_dir(tmp_path / "in", inputs, n_good=10)
    seen: list[int] = []
    real_score = predict.score

    def spy(predictor, images, batch_size):
        seen.append(len(images))
        if len(seen) == 3:
            raise KeyboardInterrupt  # the user stops the run during the third chunk
        return real_score(predictor, images, batch_size)

    monkeypatch.setattr(predict, "score", spy)
    with pytest.raises(KeyboardInterrupt):
        run_predict(predict_params, src, str(model_dir), out_dir=tmp_path / "o")
    assert max(seen) <= predict_params.predict.batch_size
    rows, records = read_rows(tmp_path / "o")
    assert len(rows) == len(records) == 2 * predict_params.predict.batch_size, "finished chunks were lost"


def test_pure_helpers(tmp_path):
    assert validate_part(None) is None
    assert validate_part(" Scaphoid_set ") == "scaphoid"
    with pytest.raises(InputError, match="known: wrist"):
        validate_part("knee")
    assert decide(0.5, 0.5) == "fracture" and decide(0.4999, 0.5) == "normal"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.PNG").write_bytes(b"")
    (tmp_path / "a" / "._x.png").write_bytes(b"")
    (tmp_path / "y.dcm").write_bytes(b"")
    assert [p.name for p in list_inputs(tmp_path)] == ["x.PNG", "y.dcm"]
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(InputError, match="'path' column"):
        list_inputs(tmp_path / "bad.csv")
