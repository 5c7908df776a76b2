"""The report renders in a real browser: headless Chromium screenshots it, the page is not blank, and on a
390 px wide phone screen only wide tables scroll sideways, never the page.

Needs Chromium (`apt-get install -y chromium`, at /usr/bin/chromium); skipped with that reason when absent.
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.report import run_report
from tests.unit.report.test_report import build_report_inputs

pytestmark = pytest.mark.integration


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_cmd(profile: Path, *args: str) -> list[str]:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found (install it with `apt-get install -y chromium`)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return [chromium, *flags, f"--user-data-dir={profile}", *args]


def screenshot(html: Path, png: Path, profile: Path, height: int, width: int = 1280) -> subprocess.CompletedProcess:
    cmd = chromium_cmd(profile, f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri())
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


PHONE = (390, 844)  # CSS px, an iPhone 12-15 screen
# Runs in the report's copy: every <details> opened (a reader may open them), then the page's scroll width, its
# client width, and the elements that stick out past it without a scrolling ancestor, posted to the frame page.
_MEASURE = """<script>
document.querySelectorAll("details").forEach(function (d) { d.open = true; });
var doc = document.documentElement, out = [];
document.querySelectorAll("body *").forEach(function (e) {
  var right = e.getBoundingClientRect().right, p = e;
  if (right <= doc.clientWidth + 1) return;
  while ((p = p.parentElement)) { if (getComputedStyle(p).overflowX !== "visible") return; }
  out.push(Math.round(right) + " " + e.tagName + (e.id ? "#" + e.id : "") + " " + (e.textContent || "").slice(0, 40));
});
parent.postMessage(JSON.stringify({scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth,
                                   innerWidth: innerWidth, sticking_out: out.slice(0, 10)}), "*");
</script>"""
_FRAME = """<!DOCTYPE html><html><head><title>pending</title></head><body style="margin:0">
<script>addEventListener("message", function (e) {{ document.title = e.data; }});</script>
<iframe src="page.html" width="{w}" height="{h}" style="border:0;display:block"></iframe></body></html>"""


def page_width_at(html: Path, work: Path, width: int = PHONE[0], height: int = PHONE[1]) -> dict:
    """Layout widths of the report in a `width` px viewport, measured by the page itself in headless Chromium.

    Headless Chromium (156 here) will not make a window narrower than 500 px: `--window-size=390,844` gives
    innerWidth 500 to page scripts (`--screen-info` and `--force-device-scale-factor` do not change that; only the
    `--screenshot` capture is resized to 390 px, after the scripts have run). So the copy of the report is loaded in
    an iframe exactly `width` px wide, which is the viewport its media queries and layout see, and it posts its
    widths to the frame page, whose <title> `--dump-dom` prints. A screenshot alone cannot tell a page that
    scrolls sideways from one that does not.
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / "page.html").write_text(html.read_text(encoding="utf-8") + _MEASURE, encoding="utf-8")
    (work / "frame.html").write_text(_FRAME.format(w=width, h=height), encoding="utf-8")
    cmd = chromium_cmd(work / "profile", "--window-size=500,900", "--virtual-time-budget=10000", "--dump-dom")
    result = subprocess.run([*cmd, (work / "frame.html").as_uri()], capture_output=True, text=True, timeout=180)
    title = re.search(r"<title>(.*?)</title>", result.stdout, flags=re.S)
    assert title and title.group(1) != "pending", f"no measurement; chromium said: {result.stderr[-2000:]}"
    widths = json.loads(htmllib.unescape(title.group(1)))
    assert widths["innerWidth"] == width, f"the frame is not {width} px wide: {widths}"
    return widths


def assert_fits_a_phone(html: Path, work: Path) -> None:
    """No page-level horizontal scroll at 390 px, and a 390 px screenshot that is not blank."""
    widths = page_width_at(html, work)
    assert widths["scrollWidth"] <= widths["clientWidth"], (
        f"the page scrolls sideways on a {PHONE[0]} px phone: {widths['scrollWidth']} px wide > "
        f"{widths['clientWidth']} px; sticking out: {widths['sticking_out']}"
    )
    png = work / "phone.png"
    screenshot(html, png, work / "profile", PHONE[1], width=PHONE[0])
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape == (PHONE[1], PHONE[0])
    assert image.astype(np.float64).var() > 100 and 0.005 < (image < 100).mean() < 0.5, "blank phone screenshot"


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
    # The gallery sits below the decision and localization sections (about 9,000 px down since issues 25 and 29).
    screenshot(rendered, png, tmp_path / "profile", 14000)
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert image is not None
    hsv = cv2.cvtColor(image[4000:], cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 150).sum() > 5000, "no coloured figures rendered below the fold"


def test_report_fits_a_390_px_phone_screen(rendered, tmp_path):
    """Only the wide tables (and <pre>) scroll sideways; the page itself stays 390 px wide, <details> open."""
    assert_fits_a_phone(rendered, tmp_path)


@pytest.mark.slow
def test_report_from_the_real_demo_chain(tmp_path, params, demo_ingest, demo_splits, demo_cache, demo_model, demo_eval):
    """explain + report on the artifacts the real steps wrote (synth -> ingest -> ... -> evaluate)."""
    import json

    from fracture.base.errors import GateError
    from fracture.explain import run_explain
    from fracture.model.card import INTENDED_USE
    from fracture.validate.run import run_validate

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
    assert html.count(">Intended use<") == 1 and html.count(INTENDED_USE) == 1
    png = tmp_path / "shot.png"
    screenshot(out, png, tmp_path / "profile", 2000)
    assert cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(float).var() > 100
    assert_fits_a_phone(out, tmp_path / "phone")
