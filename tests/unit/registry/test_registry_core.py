"""Pure parts of the registry and the serving wrapper: gates, comparison, tags, URIs, input decoding."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import GateError, InputError
from fracture.config import PromoteParams
from fracture.contracts.verdict import Verdict, write_verdict
from fracture.model.core import InputContract
from fracture.registry.download import parse_model_uri
from fracture.registry.gate import compare_versions, format_comparison
from fracture.registry.lineage import (
    RegisterInputs,
    check_force,
    check_gate,
    fingerprint_model_dir,
    headline_table,
    load_register_inputs,
    run_metric_name,
    version_tags,
)
from fracture.registry.names import HEADLINE_METRICS
from fracture.serving.pyfunc import encode_image_file, load_images, predictions_frame

# 32 px, window (0.5, 99.5), the demo decode limits, normalisation and batch size.
CONTRACT = InputContract(32, 1, (0.5, 99.5), 200_000_000, 40_000, 8, 0.5, 0.5, 16)
PROMOTE = PromoteParams(
    max_auroc_drop=0.01,
    min_sensitivity=0.6,
    require_review=False,
    max_test_reuse=20,
    max_sensitivity_drop=0.05,
    max_specificity_drop=0.05,
)


def _tags(auroc: float, sens: float, gate: str = "true") -> dict[str, str]:
    return {"test.auroc": repr(auroc), "test.frozen.sensitivity": repr(sens), "gate.passed": gate}


def test_gate_refuses_with_reasons_and_force_needs_a_reason(tmp_path):
    gate = Verdict("evaluate", "failed", ("test.auroc 0.61 < min_auroc 0.70",))
    with pytest.raises(GateError, match=r"test\.auroc 0\.61 < min_auroc 0\.70") as err:
        check_gate(gate, tmp_path / "gate.json", force=False, reason=None)
    assert err.value.exit_code == 1 and "gate.json" in str(err.value)
    assert check_gate(gate, tmp_path / "gate.json", force=True, reason="reader study") is True
    assert check_gate(Verdict("evaluate", "passed"), tmp_path / "gate.json", force=True, reason="x") is False
    undecidable = Verdict("evaluate", "undecidable", ("undecidable: n too small",))
    assert check_gate(undecidable, tmp_path / "gate.json", force=False, reason=None) is False  # registers
    with pytest.raises(InputError, match="--reason"):
        check_force(True, "   ")
    check_force(False, None)


def test_auroc_drop_exactly_at_the_limit_passes_and_beyond_fails():
    ok = compare_versions(_tags(0.84, 0.8), _tags(0.85, 0.8), PROMOTE, ("2", "1"))
    assert ok["passed"], ok["reasons"]  # 0.85 - 0.84 is 0.010000000000000009 in binary floats
    bad = compare_versions(_tags(0.835, 0.8), _tags(0.85, 0.8), PROMOTE, ("2", "1"))
    assert not bad["passed"] and "below champion v1" in bad["reasons"][0]
    assert "FAIL" in format_comparison(bad) and "champion v1" in format_comparison(bad)


def test_first_promotion_uses_absolute_gates_only():
    low_auroc_first = compare_versions(_tags(0.55, 0.9), None, PROMOTE, ("1", None))
    assert low_auroc_first["passed"]  # no champion to compare AUROC with
    low_sens = compare_versions(_tags(0.9, 0.59), None, PROMOTE, ("1", None))
    assert low_sens["reasons"] == ["test.frozen.sensitivity 0.59 < min_sensitivity 0.6"]
    forced = compare_versions(_tags(0.9, 0.9, gate="false"), None, PROMOTE, ("1", None))
    assert not forced["passed"] and "evaluation gate failed" in forced["reasons"][0]
    undecidable = compare_versions({**_tags(0.9, 0.9, gate="false"), "gate.status": "undecidable"}, None, PROMOTE,
                                   ("1", None))  # fmt: skip
    assert not undecidable["passed"] and "undecidable (n too small)" in undecidable["reasons"][0]
    assert "--force --reason" in undecidable["reasons"][0]
    json.dumps(forced)  # stored as a tag: must serialise


def test_the_gate_uses_the_runs_exact_numbers_not_the_rounded_tags():
    """Regression: with 4-significant tags a sensitivity of 0.59996 read as 0.6 and passed min_sensitivity 0.6."""
    from fracture.registry.gate import exact_gate_tags

    tags = {"test.auroc": "0.9", "test.frozen.sensitivity": "0.6", "gate.passed": "true"}
    assert compare_versions(tags, None, PROMOTE, ("1", None))["passed"]  # what the rounded tags alone would say
    exact = exact_gate_tags(tags, {"test/sensitivity": 0.59996, "test/auroc": 0.90001})
    assert float(exact["test.frozen.sensitivity"]) == 0.59996 and float(exact["test.auroc"]) == 0.90001
    refused = compare_versions(exact, None, PROMOTE, ("1", None))
    assert refused["reasons"] == ["test.frozen.sensitivity 0.59996 < min_sensitivity 0.6"]
    # a run registered again with another evaluation: its metric no longer rounds to this version's tag
    assert exact_gate_tags(tags, {"test/sensitivity": 0.71})["test.frozen.sensitivity"] == "0.6"


def test_missing_metric_tag_is_an_input_error():
    with pytest.raises(InputError, match="no numeric tag 'test.auroc'"):
        compare_versions({"test.frozen.sensitivity": "0.8"}, None, PROMOTE, ("4", None))


def _inputs(passed: bool, metadata: dict | None = None) -> RegisterInputs:
    metrics = {"test.auroc": 0.8, "test.auroc_ci_low": 0.7, "test.auroc_ci_high": 0.9, "test.frozen.sensitivity": 0.7}
    return RegisterInputs(
        config={"threshold": 0.42, "threshold_method": "youden"},
        metadata=metadata or {},
        metrics={**metrics, "test.frozen.specificity": float("nan")},
        gate=Verdict("evaluate", "passed") if passed else Verdict("evaluate", "failed", ("too low",)),
        thresholds={"frozen": 0.42, "method": "youden"},
    )


def test_version_tags_carry_lineage_metrics_threshold_and_override():
    tags = version_tags(_inputs(True), "f" * 64, "train_run", None, train_run_id="r1", commit="abc")
    assert tags["git_commit"] == "abc" and tags["manifest_hash"] == "unknown" and tags["train_run_id"] == "r1"
    assert tags["test.auroc_ci_high"] == "0.9" and "test.frozen.specificity" not in tags  # NaN skipped
    assert tags["threshold"] == "0.42" and tags["gate.passed"] == "true" and "forced" not in tags
    forced = version_tags(_inputs(False), "f" * 64, "register_run", " reader study ")
    assert forced["forced"] == "true" and forced["force_reason"] == "reader study"
    assert forced["train_run_id"] == "none" and forced["git_commit"] == "unknown"
    assert json.loads(forced["gate.reasons"]) == ["too low"] and forced["gate.status"] == "failed"
    undecidable = RegisterInputs(**{**_inputs(True).__dict__, "gate": Verdict("evaluate", "undecidable", ("n",))})
    tags = version_tags(undecidable, "f" * 64, "train_run", None)
    assert tags["undecidable"] == "true" and tags["gate.status"] == "undecidable" and "forced" not in tags


def test_numbers_in_version_tags_have_4_significant_digits():
    inputs = _inputs(True)
    inputs = RegisterInputs(
        {"threshold": 0.4234567890123456, "threshold_method": "youden"},
        {},
        {**inputs.metrics, "test.auroc": 0.8123456789012345, "test.auroc_ci_low": 0.000123456},
        inputs.gate,
        inputs.thresholds,
    )
    tags = version_tags(inputs, "f" * 64, "train_run", None)
    assert (tags["test.auroc"], tags["test.auroc_ci_low"], tags["threshold"]) == ("0.8123", "0.0001235", "0.4235")


def test_headline_metrics_are_grouped_by_split_with_their_ci_in_a_table():
    assert [run_metric_name(k) for k in HEADLINE_METRICS] == [
        "test/auroc",
        "test/sensitivity",
        "test/specificity",
        "test/auprc",
        "test/prevalence",
    ]
    table = headline_table(_inputs(True).metrics)
    assert table == {
        "metric": ["test/auroc", "test/sensitivity"],
        "value": [0.8, 0.7],
        "ci_low": [0.7, None],
        "ci_high": [0.9, None],
    }


@pytest.mark.parametrize(
    ("validation", "report", "expected"),
    [
        ("reports/validation", "reports/report.html", "evaluation/validation"),
        ("out/checks/validation", "out/report.html", "evaluation/checks/validation"),
        ("elsewhere/validation", "reports/report.html", "evaluation/validation"),  # would climb out of evaluation/
        ("reports/validation", None, "evaluation/validation"),
    ],
)
def test_validation_pages_go_where_the_reports_relative_link_finds_them(validation, report, expected):
    from fracture.registry.register import validation_artifact_path

    assert validation_artifact_path(Path(validation), Path(report) if report else None) == expected


def _write(path, obj):  # noqa: ANN001, ANN202
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _predictions() -> pd.DataFrame:
    """Test rows with AUROC exactly 0.8 (20 of 25 pairs), plus a val row that must not count."""
    probs = [0.9, 0.8, 0.7, 0.6, 0.01, 0.5, 0.4, 0.3, 0.1, 0.05, 0.99]
    return pd.DataFrame(
        {
            "image_id": [f"img{k:02d}" for k in range(11)],
            "split": ["test"] * 10 + ["val"],
            "label": [1] * 5 + [0] * 6,
            "prob": probs,
            "cluster_id": [f"p{k // 2}" for k in range(11)],
            "age": 40,
        }
    )


def _model_and_eval(tmp_path, frozen=0.5):  # noqa: ANN001, ANN202
    from fracture.base.io import write_parquet

    model, ev = tmp_path / "run" / "model", tmp_path / "run" / "eval"
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(b"weights")
    _write(model / "config.json", {"threshold": 0.5, "img_size": 64})
    _write(model / "metadata.json", {})
    _write(ev / "metrics.json", {"test.auroc": 0.8, "test.frozen.sensitivity": 0.7})
    write_verdict(Verdict("evaluate", "passed"), ev / "gate.json")
    _write(ev / "thresholds.json", {"frozen": frozen, "method": "youden"})
    write_parquet(_predictions(), ev / "predictions.parquet")
    return model, ev


def test_register_inputs_are_cross_checked(tmp_path):
    model, ev = _model_and_eval(tmp_path)
    (tmp_path / "run" / "report.html").write_text("<html></html>")
    assert load_register_inputs(model, ev).report_path == tmp_path / "run" / "report.html"
    _write(ev / "thresholds.json", {"frozen": 0.3, "method": "youden"})
    with pytest.raises(InputError, match="belongs to another model"):
        load_register_inputs(model, ev)
    _write(ev / "thresholds.json", {"frozen": 0.5, "method": "youden"})
    _write(ev / "metrics.json", {"test.auroc": 0.8})
    with pytest.raises(InputError, match="test.frozen.sensitivity"):
        load_register_inputs(model, ev)
    (ev / "gate.json").unlink()
    with pytest.raises(InputError, match="gate.json: missing"):
        load_register_inputs(model, ev)


def test_register_inputs_carry_the_test_predictions_that_reproduce_the_test_auroc(tmp_path):
    from fracture.base.io import write_parquet
    from fracture.registry.compare import fingerprint_test_set

    model, ev = _model_and_eval(tmp_path)
    inputs = load_register_inputs(model, ev)
    test = inputs.test_predictions
    assert list(test.columns) == ["image_id", "label", "prob", "cluster_id"] and len(test) == 10  # no val, no age
    tags = version_tags(inputs, "f" * 64, "register_run", None)
    assert tags["test_set_fingerprint"] == fingerprint_test_set(test)
    assert (tags["test.n_images"], tags["test.n_clusters"]) == ("10", "5")
    write_parquet(_predictions().assign(prob=lambda d: d["prob"][::-1].to_numpy()), ev / "predictions.parquet")
    with pytest.raises(InputError, match=r"test AUROC 0\.\d+ is not test\.auroc 0\.800000 in metrics\.json"):
        load_register_inputs(model, ev)
    (ev / "predictions.parquet").unlink()
    with pytest.raises(InputError, match="predictions.parquet: missing"):
        load_register_inputs(model, ev)


def test_fingerprint_follows_weights_and_config_not_the_dir(tmp_path):
    model, _ = _model_and_eval(tmp_path)
    first = fingerprint_model_dir(model)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.pt", "config.json"):
        (copy / name).write_bytes((model / name).read_bytes())
    assert fingerprint_model_dir(copy) == first
    _write(copy / "config.json", {"threshold": 0.6, "img_size": 64})
    assert fingerprint_model_dir(copy) != first


def test_registration_uploads_every_file_the_model_dir_contract_writes_and_no_other(make_params, tmp_path):
    from fracture.model.core import build_model, model_config, save_model_dir
    from fracture.registry.register import MODEL_DIR_FILES, _stage_model_dir

    params = make_params({"base": {"image_size": 32}})
    model_dir = tmp_path / "model"
    config = model_config(params.model, 32, {"youden": 0.5, "fixed": 0.5}, "youden")
    history = pd.DataFrame([{"epoch": 1, "train_loss": 0.7, "val_loss": 0.7, "val_auroc": 0.5, "lr": 1e-3}])
    save_model_dir(model_dir, build_model(params.model, 32, pretrained=False), config, {}, history, params)
    (tmp_path / "stage").mkdir()
    staged = _stage_model_dir(model_dir, tmp_path / "stage")
    written = sorted(p.name for p in model_dir.iterdir())
    assert sorted(p.name for p in staged.iterdir()) == written == sorted(MODEL_DIR_FILES)  # no file listed unwritten


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/fracture-swin@champion", ("fracture-swin", "champion", None)),
        ("models:/fracture-swin/3", ("fracture-swin", None, "3")),
        ("models:/a.b_c@previous-champion", ("a.b_c", "previous-champion", None)),
    ],
)
def test_parse_model_uri(uri, expected):
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/x", "models:/x/latest", "models:/x@a/b"])
def test_parse_model_uri_rejects_other_forms(uri):
    with pytest.raises(InputError, match="models:/NAME@ALIAS"):
        parse_model_uri(uri)


@pytest.fixture
def png16(tmp_path):
    img = np.tile(np.linspace(1000, 60000, 90, dtype=np.uint16), (120, 1))
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    return path


def test_path_and_base64_inputs_decode_identically(png16):
    df = pd.DataFrame({"path": [str(png16), None], "image": [None, encode_image_file(png16)]})
    images = load_images(df, CONTRACT, path_roots=(str(png16.parent),))
    assert images.shape == (2, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[0], images[1]) and images[0].max() > images[0].min()
    uri = pd.DataFrame({"image": ["data:image/png;base64," + encode_image_file(png16)]})
    assert np.array_equal(load_images(uri, CONTRACT)[0], images[0])


def test_bad_inputs_name_the_row(png16):
    both = pd.DataFrame({"path": [str(png16)], "image": [encode_image_file(png16)]})
    with pytest.raises(InputError, match="row 0: give exactly one"):
        load_images(both, CONTRACT)
    with pytest.raises(InputError, match="row 1: column 'image' is not valid base64"):
        load_images(pd.DataFrame({"image": [encode_image_file(png16), "%%%"]}), CONTRACT)
    with pytest.raises(InputError, match=r"row 0 \(column 'image'\)") as err:
        load_images(pd.DataFrame({"image": [encode_image_file(png16)[:40]]}), CONTRACT)
    assert "fracture-serve-" not in str(err.value)  # no temp paths in user-facing errors
    with pytest.raises(InputError, match="needs a column 'path' or 'image'"):
        load_images(pd.DataFrame({"file": ["x"]}), CONTRACT)


def test_decision_uses_the_frozen_threshold_inclusively():
    out = predictions_frame(np.array([0.1, 0.42, 0.9]), 0.42)
    assert out["decision"].tolist() == [0, 1, 1] and out["threshold"].tolist() == [0.42] * 3
    assert list(out.columns) == ["probability", "decision", "threshold"]


@pytest.mark.parametrize("name", ["a'b", " padded", "x/y", ""])
def test_register_refuses_unsafe_model_names_before_touching_mlflow(params, tmp_path, name):
    from fracture.registry.register import run_register

    with pytest.raises(InputError, match="registered model name"):
        run_register(params, tmp_path, tmp_path, name=name or " ")


def test_register_refuses_a_model_dir_that_does_not_load(params, tmp_path, monkeypatch):
    from fracture.registry.register import run_register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: must not be reached
    model, ev = _model_and_eval(tmp_path)
    with pytest.raises(InputError, match="config.json: missing keys"):
        run_register(params, model, ev, name="unit")
