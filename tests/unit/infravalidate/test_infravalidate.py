"""Infra validation's pure parts: the checks of served answers, the request set, the result tags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture.infravalidate import checks
from fracture.infravalidate.checks import Answer, Case
from fracture.infravalidate.requestset import (
    bad_cases,
    file_kind,
    good_cases,
    path_roots,
    select_rows,
    write_variant,
)


def _ok(prob: float, threshold: float = 0.5, decision: int | None = None) -> Answer:
    decision = int(prob >= threshold) if decision is None else decision
    return Answer(200, {"predictions": [{"probability": prob, "decision": decision, "threshold": threshold}]}, 0.1)


CASES = [Case("a/image", {}, 0.30), Case("b/path", {}, 0.70)]


def test_matching_answers_pass_every_check():
    answers = [_ok(0.30 + 1e-6), _ok(0.70)]
    found = [
        checks.check_answered(CASES, answers),
        checks.check_probabilities(CASES, answers, tolerance=1e-4),
        checks.check_threshold(CASES, answers, 0.5),
    ]
    result = checks.summarise(found, max_abs_diff=1e-6)
    assert result["passed"] and result["reasons"] == []


def test_a_probability_off_by_more_than_the_tolerance_fails_and_is_named():
    check = checks.check_probabilities(CASES, [_ok(0.30), _ok(0.75)], tolerance=1e-4)
    assert not check["passed"] and "b/path" in check["detail"] and "a/image" not in check["detail"].split("off:")[1]
    assert checks.probability_differences(CASES, [_ok(0.30), _ok(0.75)])["b/path"] == pytest.approx(0.05)


def test_missing_or_malformed_answers_fail_answered():
    answers = [Answer(0, "no answer: timed out", 60.0), Answer(200, {"predictions": []}, 0.1)]
    check = checks.check_answered(CASES, answers)
    assert not check["passed"] and "0/2 answered" in check["detail"]
    assert not checks.check_probabilities(CASES, answers, 1e-4)["passed"]  # nothing to compare is not a pass


def test_decision_must_use_the_frozen_threshold():
    assert not checks.check_threshold(CASES, [_ok(0.30), _ok(0.70, threshold=0.8)], 0.5)["passed"]
    assert not checks.check_threshold(CASES, [_ok(0.30, decision=1), _ok(0.70)], 0.5)["passed"]
    assert checks.check_threshold(CASES, [_ok(0.30), _ok(0.70)], 0.5)["passed"]


def test_bad_inputs_need_a_4xx_that_names_the_problem():
    bad = [Case("bad/b64", {}, expect_error="base64"), Case("bad/any", {}, expect_error="")]
    good = [Answer(400, {"message": "x", "stack_trace": "InputError: not valid base64"}, 0.1), Answer(422, "no", 0.1)]
    assert checks.check_bad_inputs(bad, good)["passed"]
    assert not checks.check_bad_inputs(bad, [Answer(400, {"message": "generic"}, 0.1), good[1]])["passed"]
    assert not checks.check_bad_inputs(bad, [good[0], Answer(200, {"predictions": []}, 0.1)])["passed"]
    assert not checks.check_bad_inputs(bad, [good[0], Answer(500, "crash", 0.1)])["passed"]


def test_still_serving_and_latency():
    assert checks.check_still_serving(200, _ok(0.3), _ok(0.3))["passed"]
    assert not checks.check_still_serving(0, _ok(0.3), Answer(0, "", 0))["passed"]
    assert not checks.check_still_serving(200, _ok(0.3), _ok(0.31))["passed"]
    assert checks.check_latency([0.1] * 19 + [0.2], 0.5)["passed"]
    assert not checks.check_latency([0.1] * 10 + [2.0] * 2, 0.5)["passed"]  # p95 lands in the slow tail
    assert not checks.check_latency([], 0.5)["passed"]


def test_result_tags_record_the_outcome():
    result = checks.failed_result("serving models:/m/3: the scoring server exited with 1", model_uri="models:/m/3")
    tags = checks.result_tags(result, "2026-12-01T00:00:00+00:00")
    assert tags["infra_validation.passed"] == "false" and "exited with 1" in tags["infra_validation.reasons"]
    assert tags["infra_validation.max_abs_diff"] == "none"
    assert all(isinstance(v, str) and len(v) <= 8000 for v in tags.values())


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    yy, xx = np.mgrid[0:96, 0:80]
    img16 = (3000 + 200 * yy + 10 * xx).astype(np.uint16)
    paths = {"png16": tmp_path / "a16.png", "png8": tmp_path / "b8.png"}
    cv2.imwrite(str(paths["png16"]), img16)
    cv2.imwrite(str(paths["png8"]), (img16 >> 8).astype(np.uint8))
    return paths


def test_file_kinds_and_variants_are_what_they_claim(images, tmp_path):
    assert file_kind(images["png16"]) == "png16" and file_kind(images["png8"]) == "png8"
    assert file_kind(tmp_path / "absent.png") == "missing"
    for kind in ("png8", "png16", "jpeg", "dicom"):
        assert file_kind(write_variant(images["png16"], kind, tmp_path)) == kind


def test_selection_spreads_over_kinds_test_rows_first():
    rows = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "split": ["val", "test", "test", "val", "test"],
            "prob": [0.1, 0.2, 0.3, 0.4, 0.5],
            "file": ["a", "b", "c", "d", "e"],
            "kind": ["dicom", "png16", "png16", "png8", "missing"],
        }
    )
    picked = select_rows(rows, 3)
    assert list(picked["image_id"]) == ["d", "b", "a"]  # one per kind; png16 'b' (test) before 'c'
    assert "e" not in set(select_rows(rows, 10)["image_id"])


def test_good_cases_cover_missing_kinds_with_offline_references(images, tmp_path):
    rows = pd.DataFrame({"image_id": ["x"], "split": ["test"], "prob": [0.25], "file": [images["png16"]]})
    rows["kind"] = "png16"
    seen = []

    def offline(paths):
        seen.extend(paths)
        return np.linspace(0.1, 0.9, len(paths))

    cases = good_cases(rows, offline, tmp_path)
    assert [c.expected for c in cases[:2]] == [0.25, 0.25]  # the evaluation's own probability, image and path
    assert {"image", "path"} == {c.name.rsplit("/", 1)[1] for c in cases}
    assert sorted(file_kind(p) for p in seen) == ["dicom", "jpeg", "png8"]
    assert {c.reference for c in cases[2:]} == {"offline model"}
    # The validating server alone may read these folders by `path` (serve.allowed_path_roots stays [] elsewhere).
    assert path_roots(cases) == sorted({str(images["png16"].parent), str(tmp_path)})


def test_bad_cases_are_all_refusable(images):
    cases = bad_cases(images["png8"])
    assert all(c.bad for c in cases) and len({c.name for c in cases}) == len(cases)
    by_name = {c.name: c for c in cases}
    outside = by_name["bad/path-outside-roots"].body["dataframe_records"][0]["path"]
    assert by_name["bad/path-outside-roots"].expect_error == "allowed path roots"
    assert not any(outside.startswith(root) for root in path_roots(good_like(images["png8"])))
    missing = by_name["bad/missing-path"].body["dataframe_records"][0]["path"]
    assert str(Path(missing).parent) == str(images["png8"].parent)  # inside the roots: refused as missing


def good_like(path: Path) -> list[Case]:
    return [Case("x/path", {"dataframe_records": [{"path": str(path)}]}, 0.5)]
