"""Validate step, pure parts: severities, dtype coercion, label consistency, sampling, image checks, results page."""

from __future__ import annotations

import hashlib
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import ConfigError
from fracture.contracts.schema import coerce_manifest
from fracture.validate.page import render_results_page
from fracture.validate.run import (
    DEFAULT_SEVERITY,
    build_suite,
    check_image,
    check_image_sample,
    coerce_columns,
    column_types_result,
    label_consistency,
    resolve_severity,
    result_entry,
    sample_indices,
    summarise,
)
from tests.conftest import manifest_row


def _row(source: str, path: str, label: int, sha: str | None = None, **extra) -> dict:
    # The same path in two sources has the same content hash unless `sha` says otherwise.
    sha = sha or hashlib.sha256(path.encode()).hexdigest()
    return manifest_row(source, path, label, study_id=None, age=30.0, sex="F", sha256=sha, **extra)


def make_manifest(rows: list[dict]) -> pd.DataFrame:
    return coerce_manifest(pd.DataFrame(rows))


def test_default_severities_and_overrides() -> None:
    assert DEFAULT_SEVERITY["class_balance"] == "warning"
    assert DEFAULT_SEVERITY["age_range"] == "warning"
    assert DEFAULT_SEVERITY["no_conflicting_labels"] == "blocking"
    sev = resolve_severity({"class_balance": "blocking", "not_null": "warning"})
    assert sev["class_balance"] == "blocking" and sev["not_null"] == "warning"
    assert sev["label_binary"] == "blocking"


def test_unknown_severity_names_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown expectation name.*age_rnage, bogus"):
        resolve_severity({"bogus": "warning", "age_rnage": "warning", "age_range": "blocking"})


def test_suite_names_are_unique_and_carry_severity(make_params) -> None:
    vp = make_params({"validate": {"severity": {"class_balance": "blocking", "images_not_blank": "warning"}}}).validate_
    suite = build_suite(vp, ["mura", "kaggle"])
    names = [e.meta["name"] for e in suite.expectations]
    assert len(names) == len(set(names))
    assert {"class_balance:kaggle", "class_balance:mura", "no_conflicting_labels", "images_decodable"} <= set(names)
    meta = {e.meta["name"]: e for e in suite.expectations}
    assert meta["class_balance:kaggle"].meta["severity"] == "blocking"
    assert meta["images_not_blank"].meta["severity"] == "warning"
    assert meta["age_range"].meta["severity"] == "warning"
    assert str(meta["age_range"].severity.value) == "warning"
    no_images = build_suite(make_params({"validate": {"image_sample": 0}}).validate_, ["kaggle"])
    assert not any(e.meta["name"].startswith("images_") for e in no_images.expectations)


def test_label_consistency_flags_identical_content_with_different_labels() -> None:
    df = make_manifest(
        [
            _row("kaggle", "a/1.png", 1, sha="s1"),
            _row("mura", "b/1.png", 0, sha="s1"),  # same bytes, other label, other source
            _row("kaggle", "c/1.png", 1, sha="s2"),
            _row("hospital", "d/1.png", 1, sha="s2"),  # same bytes, same label: fine
            _row("kaggle", "e/1.png", 0, sha="s3"),
        ]
    )
    assert label_consistency(df).tolist() == [False, False, True, True, True]


def test_coerce_columns_reports_lossy_columns_only() -> None:
    df = make_manifest([_row("kaggle", "a/1.png", 1), _row("kaggle", "b/1.png", 0)])
    raw = df.astype({"label": "float64", "width": "int64", "age": "float64"})
    fixed, bad = coerce_columns(raw)
    assert bad == {}
    assert str(fixed["label"].dtype) == "int8" and str(fixed["width"].dtype) == "int32"
    broken = df.astype({"label": "object", "height": "float64"})
    broken.loc[0, "label"] = "yes"
    broken.loc[1, "height"] = 12.5
    _, bad = coerce_columns(broken)
    assert set(bad) == {"label", "height"}
    entry = column_types_result(bad, DEFAULT_SEVERITY)
    assert entry["success"] is False and entry["details"]["expected"] == {"label": "int8", "height": "int32"}


def test_sample_is_seeded_and_bounded() -> None:
    a = sample_indices(100, 10, seed=42)
    assert (a == sample_indices(100, 10, seed=42)).all()
    assert not (a == sample_indices(100, 10, seed=43)).all()
    assert len(np.unique(a)) == 10 and a.max() < 100
    assert len(sample_indices(5, 32, seed=1)) == 5


def test_check_image_finds_blank_and_undecodable(tmp_path) -> None:
    rng = np.random.default_rng(0)
    good, flat, junk = tmp_path / "good.png", tmp_path / "flat.png", tmp_path / "junk.png"
    cv2.imwrite(str(good), rng.integers(0, 65535, (32, 32), dtype=np.uint16))
    cv2.imwrite(str(flat), np.full((32, 32), 7000, dtype=np.uint16))
    junk.write_bytes(b"not an image at all")
    window, limits = (0.5, 99.5), {"max_pixels": 10_000, "max_side": 1_000}
    assert check_image(good, window, 0.01, **limits) == (True, True, None)
    decodable, not_blank, reason = check_image(flat, window, 0.01, **limits)
    assert (decodable, not_blank) == (True, False) and "blank or constant" in reason
    decodable, not_blank, reason = check_image(junk, window, 0.01, **limits)
    assert (decodable, not_blank) == (False, None) and "junk.png" in reason


def test_image_check_decodes_under_the_params_size_limits(tmp_path, make_params) -> None:
    """Regression: validate decoded with the library's default limits, not params.ingest's as preprocess does."""
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 65535, (40, 120), dtype=np.uint16))
    df = pd.DataFrame({"source": ["hospital"], "path": ["wide.png"]})
    roots = {"hospital": str(tmp_path)}
    strict = make_params({"ingest": {"max_side": 100}, "validate": {"image_sample": 1}, "base": {"num_workers": 1}})
    (decodable, _, reason) = check_image_sample(df, roots, strict, tmp_path).iloc[0]
    assert not decodable and "120" in reason  # preprocess would refuse it: so does validate
    loose = make_params({"ingest": {"max_side": 200}, "validate": {"image_sample": 1}, "base": {"num_workers": 1}})
    assert bool(check_image_sample(df, roots, loose, tmp_path).iloc[0]["decodable"])


def test_summary_splits_blocking_from_warnings() -> None:
    entries = [
        {"name": "a", "severity": "blocking", "success": True, "observed": 0, "details": {}},
        {"name": "b", "severity": "warning", "success": False, "observed": 1, "details": {}},
    ]
    report = summarise(entries, 10)
    assert report["success"] is True and report["warnings"] == ["b"] and report["blocking_failed"] == []
    entries[0]["success"] = False
    assert summarise(entries, 10)["blocking_failed"] == ["a"]


def test_result_entry_is_plain_json() -> None:
    class FakeConfig:
        type = "expect_column_values_to_be_between"
        kwargs = {"column": "age", "min_value": 0.0, "max_value": 110.0, "result_format": "SUMMARY"}
        meta = {"name": "age_range", "severity": "warning"}

    class FakeResult:
        expectation_config = FakeConfig()
        success = np.False_
        result = {
            "unexpected_count": 1,
            "element_count": 3,
            "partial_unexpected_index_list": [{"age": np.float64(150), "image_id": "x"}],
        }
        exception_info = {"raised_exception": False}

    entry = result_entry(FakeResult())
    assert entry == {
        "name": "age_range",
        "severity": "warning",
        "success": False,
        "observed": {"unexpected_count": 1, "element_count": 3},
        "details": {
            "engine": "great_expectations",
            "expectation": "expect_column_values_to_be_between",
            "kwargs": {"column": "age", "min_value": 0.0, "max_value": 110.0},
            "rows": [{"age": 150.0, "image_id": "x"}],
        },
    }


def _page_entries() -> list[dict]:
    gx = {"engine": "great_expectations", "expectation": "expect_column_values_to_be_in_set"}
    return [
        {"name": "not_empty", "severity": "blocking", "success": True, "observed": 480, "details": gx},
        {
            "name": "label_binary",
            "severity": "blocking",
            "success": False,
            "observed": {"unexpected_count": 1, "element_count": 3},
            "details": {
                **gx,
                "kwargs": {"column": "label", "value_set": [0, 1]},
                "rows": [{"image_id": "x1", "source": "mura", "path": "<script>a.png", "label": 7}],
            },
        },
        {
            "name": "class_balance:mura",
            "severity": "warning",
            "success": False,
            "observed": 0.0123456789,
            "details": {
                **gx,
                "kwargs": {
                    "column": "label",
                    "min_value": 0.05,
                    "row_condition": {"column": {"name": "source"}, "operator": "==", "parameter": "mura"},
                },
            },
        },
        {
            "name": "source_path_unique",
            "severity": "blocking",
            "success": False,
            "observed": {},
            "details": {**gx, "kwargs": {"column_list": ["source", "path"]}, "error": "KeyError: 'path'"},
        },
    ]


def test_results_page_lists_every_expectation_with_its_status_offline() -> None:
    report = summarise(_page_entries(), 3)
    assert report["results_page"] == "validation.html"
    page = render_results_page(report)
    statuses = {"not_empty": "PASS", "label_binary": "FAIL", "class_balance:mura": "FAIL"}
    statuses["source_path_unique"] = "ERROR"
    for name, status in statuses.items():
        row = re.search(rf'data-expectation="{re.escape(name)}" data-status="(\w+)">(.*?)\n</tr>', page, re.S)
        assert row and row.group(1) == status, name
        assert f'<td class="status {status}">{status}</td>' in row.group(2)
    assert 'id="overall">FAILED<' in page
    counts = re.sub(r"\s+", " ", re.search(r'<p id="counts">(.*?)</p>', page, re.S).group(1))
    assert "4 expectations, 1 passed, 1 blocking failed, 1 warnings failed, 1 errors" in counts
    assert "label, value_set: [0, 1]" not in page and "value_set: [0, 1]" in page  # the column is its own cell
    assert "min_value: 0.05 where source == mura" in page and "0.0123457" in page
    assert "exact_match: false" in render_results_page(summarise([_bool_entry()], 1))
    assert "source, path" in page and "error: KeyError: &#39;path&#39;" in page
    assert "&lt;script&gt;a.png" in page and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert render_results_page(json.loads(json.dumps(report))) == page  # from validation.json as read back


def test_results_page_of_a_passing_run() -> None:
    entries = [e for e in _page_entries() if e["success"]]
    page = render_results_page(summarise(entries, 3))
    assert 'id="overall">PASSED<' in page and "Blocking failures" not in page
    assert 'href="data_docs/index.html"' in page


def _bool_entry() -> dict:
    kwargs = {"column_set": ["a"], "exact_match": False}
    details = {"engine": "great_expectations", "expectation": "expect_table_columns_to_match_set", "kwargs": kwargs}
    return {"name": "columns_present", "severity": "blocking", "success": True, "observed": ["a"], "details": details}


def test_box_table_is_checked_by_great_expectations(tmp_path) -> None:
    from fracture.base.io import write_parquet
    from fracture.validate.run import box_results

    manifest = pd.DataFrame({"image_id": ["a", "b"]})
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "b", "ghost"],
            "class": ["fracture", "text", "cast"],
            "x": [0.5, 1.5, 0.5], "y": 0.5, "w": 0.1, "h": 0.1,
            "image_width": [100, 100, 0], "image_height": 100, "file": "f.txt", "line": 1,
        }
    )  # fmt: skip
    write_parquet(boxes, tmp_path / "boxes.parquet")
    entries = {e["name"]: e for e in map(result_entry, box_results(tmp_path / "boxes.parquet", manifest, {
        **DEFAULT_SEVERITY}))}  # fmt: skip
    failed = sorted(name for name, e in entries.items() if not e["success"])
    assert failed == [
        "boxes_class_known", "boxes_image_known", "boxes_inside_image:x", "boxes_upright_size:image_width"
    ]  # fmt: skip
    assert entries["boxes_class_known"]["severity"] == "warning"
    assert entries["boxes_image_known"]["severity"] == "blocking"
    assert box_results(tmp_path / "none.parquet", manifest, DEFAULT_SEVERITY) == []
