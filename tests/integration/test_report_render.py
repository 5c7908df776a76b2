"""The report renders in a real browser: headless Chromium screenshots it, and the page is not blank.

Needs Chromium (`apt-get install -y chromium`, at /usr/bin/chromium); skipped with that reason when absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.report import run_report
from tests.unit.test_report import build_report_inputs

pytestmark = pytest.mark.integration


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, profile: Path, height: int) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found (install it with `apt-get install -y chromium`)")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size=1280,{height}",
        html.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, make_params) -> Path:
    params = make_params({"evaluate": {"n_bootstrap": 20, "min_subgroup_n": 10}, "explain": {"n_per_category": 1}})
    root = tmp_path_factory.mktemp("render")
    inputs = build_report_inputs(root / "artifacts", params)
    return run_report(params, root / "reports" / "report.html", **inputs)


def test_report_screenshot_is_not_blank(rendered, tmp_path):
    png = tmp_path / "report.png"
    result = screenshot(rendered, png, tmp_path / "profile", 2000)
    assert png.is_file(), f"no screenshot; chromium said: {result.stderr[-2000:]}"
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (2000, 1280)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    assert gray.var() > 100, "the screenshot is blank"
    dark = (gray < 100).mean()  # text and plot lines
    assert 0.005 < dark < 0.5, f"implausible amount of ink: {dark:.3f}"


def test_report_images_decode_in_the_browser(rendered, tmp_path):
    """Deep in the page (the Grad-CAM gallery) there is colour: the inlined PNGs decoded and drew."""
    png = tmp_path / "full.png"
    screenshot(rendered, png, tmp_path / "profile", 9000)
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert image is not None
    hsv = cv2.cvtColor(image[4000:], cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 150).sum() > 5000, "no coloured figures rendered below the fold"


@pytest.mark.slow
def test_report_from_the_real_demo_chain(tmp_path, params, demo_ingest, demo_splits, demo_cache, demo_model, demo_eval):
    """explain + report on the artifacts the real steps wrote (synth -> ingest -> ... -> evaluate)."""
    import json

    from fracture.errors import GateError
    from fracture.explain import run_explain
    from fracture.validate import run_validate

    try:
        run_validate(params, demo_ingest / "manifest.parquet", tmp_path / "validation")
    except GateError:
        pass  # the report shows a failed validation too; its outputs are written before the gate
    meta = run_explain(params, demo_model, demo_eval, demo_cache, tmp_path / "explain")
    out = run_report(
        params,
        tmp_path / "report.html",
        ingest_dir=demo_ingest,
        validation_dir=tmp_path / "validation",
        splits_path=demo_splits,
        model_dir=demo_model,
        eval_dir=demo_eval,
        explain_dir=tmp_path / "explain",
    )
    html = out.read_text()
    assert 'id="missing-artifacts"' not in html
    metrics = json.loads((demo_eval / "metrics.json").read_text())
    for key in ("test.auroc", "test.frozen.sensitivity", "test.study.auroc", "threshold"):
        assert f'data-metric="{key}"' in html
    assert sum(meta["counts"].values()) == html.count("data-image-id=")
    assert f'data-value="{metrics["test.auroc"]}"' in html
    png = tmp_path / "shot.png"
    screenshot(out, png, tmp_path / "profile", 2000)
    assert cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(float).var() > 100
