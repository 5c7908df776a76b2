"""Validate step end to end with real Great Expectations, real PNGs and the `fracture validate` CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fracture.base.io import sha256_file, write_manifest
from fracture.cli import app
from fracture.config import dump_params
from fracture.contracts.schema import MANIFEST_COLUMNS, coerce_manifest

pytestmark = pytest.mark.integration  # real Great Expectations runs and Data Docs on disk

SOURCES = ("hospital", "kaggle", "mura")


def _image(path: Path, rng: np.random.Generator, constant: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((24, 20), 1200, np.uint16) if constant else rng.integers(0, 65535, (24, 20), dtype=np.uint16)
    cv2.imwrite(str(path), img)


def write_dataset(root: Path, n_per_source: int = 8, seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    """Tiny manifest with real 16-bit PNGs under root/<source>/, half positive per source."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in SOURCES:
        for i in range(n_per_source):
            rel = f"p{i}/img{i}.png"
            _image(root / source / rel, rng)
            image_id = hashlib.sha256(f"{source}:{rel}".encode()).hexdigest()[:16]
            row = {c: None for c in MANIFEST_COLUMNS}
            row.update(
                image_id=image_id,
                source=source,
                path=rel,
                patient_id=f"{source}:p{i}",
                study_id=f"{source}:p{i}/s1",
                label=i % 2,
                label_source="folder",
                body_part="wrist",
                age=float(20 + i),
                sex="M" if i % 2 else "F",
                group_id=image_id,
                width=20,
                height=24,
                bit_depth=16,
                sha256=sha256_file(root / source / rel),
            )
            rows.append(row)
    return coerce_manifest(pd.DataFrame(rows)), {s: str(root / s) for s in SOURCES}


@pytest.fixture()
def setup(tmp_path: Path, make_params):
    df, roots = write_dataset(tmp_path / "raw")

    def invoke(frame: pd.DataFrame, overrides: dict | None = None):
        params_path = tmp_path / "params.yaml"
        dump_params(make_params({"base": {"num_workers": 1}, **(overrides or {})}), params_path)
        manifest = tmp_path / "manifest.parquet"
        write_manifest(frame, manifest, roots)
        out = tmp_path / "validation"
        args = ["validate", "--manifest", str(manifest), "--out", str(out), "--params", str(params_path)]
        result = CliRunner().invoke(app, args)
        report = json.loads((out / "validation.json").read_text()) if (out / "validation.json").exists() else None
        return result, report, out

    return df, invoke, tmp_path


def _entry(report: dict, name: str) -> dict:
    return next(e for e in report["results"] if e["name"] == name)


def test_clean_manifest_passes_and_writes_docs(setup) -> None:
    df, invoke, _ = setup
    result, report, out = invoke(df)
    assert result.exit_code == 0, result.output
    assert report["success"] is True and report["blocking_failed"] == [] and report["warnings"] == []
    assert all(set(e) == {"name", "severity", "success", "observed", "details"} for e in report["results"])
    names = {e["name"] for e in report["results"]}
    assert {
        "columns_present",
        "column_types",
        "no_conflicting_labels",
        "images_decodable",
        "class_balance:mura",
    } <= names
    assert _entry(report, "images_decodable")["observed"] == {"sampled": len(df), "unexpected_count": 0}  # 32 >= 24
    index = out / "data_docs" / "index.html"
    assert index.exists()
    html = index.read_text()
    assert 'href="expectations/manifest.html"' in html and "validations/manifest/" in html
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "sha256_label_consistent" in pages[0].read_text()
    assert (out / "params.yaml").exists()
    assert not list(out.glob(".data_docs.*"))


def test_conflicting_labels_on_identical_content_fail_with_rows(setup) -> None:
    df, invoke, tmp_path = setup
    raw = tmp_path / "raw"
    copy = raw / "mura" / "dup" / "copy.png"
    copy.parent.mkdir(parents=True)
    shutil.copy(raw / "kaggle" / "p1" / "img1.png", copy)  # identical bytes, filed as a negative
    dup = df[(df["source"] == "kaggle") & (df["path"] == "p1/img1.png")].copy()  # label 1
    dup = dup.assign(
        source="mura", path="dup/copy.png", patient_id="mura:dup", label=np.int8(0), image_id="00000000deadbeef"
    )
    dup["group_id"] = dup["image_id"]
    frame = coerce_manifest(pd.concat([df, dup], ignore_index=True))
    result, report, _ = invoke(frame)
    assert result.exit_code == 1, result.output
    assert report["success"] is False and "no_conflicting_labels" in report["blocking_failed"]
    rows = _entry(report, "no_conflicting_labels")["details"]["rows"]
    original = df.loc[(df["source"] == "kaggle") & (df["path"] == "p1/img1.png"), "image_id"].item()
    assert {r["image_id"] for r in rows} == {original, "00000000deadbeef"}
    assert "no_conflicting_labels" in result.output
    assert original in result.output and "dup/copy.png" in result.output


def test_warning_is_reported_but_exit_zero(setup) -> None:
    df, invoke, _ = setup
    frame = df.copy()
    frame.loc[3, "age"] = 150.0
    result, report, _ = invoke(frame)
    assert result.exit_code == 0, result.output
    assert report["success"] is True and report["warnings"] == ["age_range"]
    entry = _entry(report, "age_range")
    assert entry["severity"] == "warning" and entry["success"] is False
    assert entry["details"]["rows"][0]["image_id"] == frame.loc[3, "image_id"]
    assert "validation warning: age_range" in result.output


def test_severity_override_makes_class_balance_blocking(setup) -> None:
    df, invoke, _ = setup
    frame = df.copy()
    frame.loc[frame["source"] == "hospital", "label"] = 1  # 100 % positive > max_positive 0.95
    result, report, _ = invoke(frame)
    assert result.exit_code == 0 and report["warnings"] == ["class_balance:hospital"]
    assert _entry(report, "class_balance:hospital")["observed"] == 1.0
    result, report, out = invoke(frame, {"validate": {"severity": {"class_balance": "blocking"}}})
    assert result.exit_code == 1 and report["blocking_failed"] == ["class_balance:hospital"]
    assert len(list((out / "data_docs" / "validations").rglob("*.html"))) == 1  # the rerun replaced the site
    result, report, _ = invoke(frame, {"validate": {"severity": {"class_balans": "blocking"}}})
    assert result.exit_code == 2 and "class_balans" in result.output


def test_blank_and_missing_images_are_named(setup) -> None:
    df, invoke, tmp_path = setup
    rng = np.random.default_rng(1)
    blank = df.iloc[4]
    _image(tmp_path / "raw" / blank["source"] / blank["path"], rng, constant=True)
    gone = df.iloc[5]
    (tmp_path / "raw" / gone["source"] / gone["path"]).unlink()
    frame = df.copy()
    frame.loc[6, "label"] = 3
    frame.loc[7, "patient_id"] = pd.NA
    result, report, _ = invoke(frame)
    assert result.exit_code == 1
    assert set(report["blocking_failed"]) == {
        "images_decodable",
        "images_not_blank",
        "label_binary",
        "not_null:patient_id",
    }
    decode_rows = _entry(report, "images_decodable")["details"]["rows"]
    assert [r["image_id"] for r in decode_rows] == [gone["image_id"]] and decode_rows[0]["reason"]
    assert _entry(report, "images_not_blank")["details"]["rows"][0]["image_id"] == blank["image_id"]
    assert blank["image_id"] in result.output and gone["image_id"] in result.output


def test_missing_columns_and_bad_types_fail_cleanly(setup) -> None:
    df, invoke, _ = setup
    frame = df.drop(columns=["sha256"])
    frame["width"] = ["wide"] + frame["width"].astype(str).tolist()[1:]
    result, report, out = invoke(frame)
    assert result.exit_code == 1, result.output
    assert {"columns_present", "column_types", "not_null:sha256"} <= set(report["blocking_failed"])
    assert list(_entry(report, "column_types")["observed"]) == ["width"]
    assert (out / "data_docs" / "index.html").exists()


def test_demo_manifest_passes_with_relative_out(demo_manifest: Path, params_file: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["validate", "--manifest", str(demo_manifest), "--out", "reports/validation", "--params", str(params_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(Path("reports/validation/validation.json").read_text())
    assert report["success"] and _entry(report, "images_decodable")["observed"]["unexpected_count"] == 0
    assert Path("reports/validation/data_docs/index.html").exists()


def test_empty_manifest_fails(setup) -> None:
    df, invoke, _ = setup
    result, report, _ = invoke(df.iloc[0:0])
    assert result.exit_code == 1
    assert report["blocking_failed"] == ["not_empty"] and report["rows"] == 0
    assert _entry(report, "images_decodable")["observed"] == {"sampled": 0, "unexpected_count": 0}


def test_results_page_and_json_are_the_same_bytes_on_a_rerun(setup) -> None:
    df, invoke, tmp_path = setup
    frame = df.copy()
    frame.loc[3, "age"] = 150.0  # a failed warning
    frame.loc[6, "label"] = 3  # a failed blocking expectation, with its row
    _, report, out = invoke(frame)
    first = {name: (out / name).read_bytes() for name in ("validation.json", "validation.html")}
    _, _, out = invoke(frame)
    assert {name: (out / name).read_bytes() for name in first} == first  # DVC outputs: no time, no run id
    page = first["validation.html"].decode()
    for entry in report["results"]:
        status = "PASS" if entry["success"] else "FAIL"
        assert f'data-expectation="{entry["name"]}" data-status="{status}"' in page
    assert frame.loc[6, "image_id"] in page and 'id="overall">FAILED<' in page
    assert str(tmp_path) not in page and str(tmp_path) not in first["validation.json"].decode()
    assert "http://" not in page and "https://" not in page
