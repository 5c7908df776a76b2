"""The review app driven in real headless Chromium (Playwright pointed at the Debian package), plus its API,
its store and its start-up refusals.

Needs Chromium at /usr/bin/chromium or $FRACTURE_CHROMIUM (`apt-get install -y chromium`; never `playwright
install`). Without it the browser tests skip, except in CI (`CI` or `FRACTURE_REQUIRE_BROWSER` set), where they
fail. The case view's screenshot goes to $FRACTURE_TEST_ARTIFACTS (default build/test-artifacts), not to the repository.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import REPO
from tests.review_inputs import PASSWORDS, outcome_ids, write_review_inputs

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("FRACTURE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("FRACTURE_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))


def browser_required() -> bool:
    return any(os.environ.get(k, "") not in ("", "0", "false") for k in ("CI", "FRACTURE_REQUIRE_BROWSER"))


def basic(user: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, params) -> dict[str, Path]:
    return write_review_inputs(tmp_path_factory.mktemp("review"), params)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The review app under uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, params, inputs: dict[str, Path], state_dir: Path, db_url: str | None = None):
        import uvicorn

        from fracture.review.server import ServeOptions, build_state, secret_key
        from fracture.review.web import create_app

        opts = ServeOptions("127.0.0.1", free_port(), inputs["users"], state_dir, db_url)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state = build_state(params, str(inputs["model"]), inputs["eval"], opts, cache_dir=inputs["cache"],
                                 manifest=inputs["manifest"], data_root=Path("/"))  # fmt: skip
        app = create_app(self.state, secret_key(state_dir))
        self.url = f"http://127.0.0.1:{opts.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=opts.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "review app did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.state.engine.dispose()


@pytest.fixture(scope="module")
def server(params, inputs, tmp_path_factory):
    srv = Server(params, inputs, tmp_path_factory.mktemp("review-state"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        message = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if browser_required():
            pytest.fail(message + "; CI needs it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        b = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


def login(page, url: str, user: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")


def write_dicom(path: Path) -> Path:
    from fracture.infravalidate.requestset import write_dicom as write

    rng = np.random.default_rng(3)
    pixels = (rng.normal(0.3, 0.05, (90, 70)).clip(0, 1) * 4095).astype(np.uint16)
    pixels[20:70, 25:45] = 3500
    return write(path, pixels)


def test_review_flow_in_the_browser(browser, server, inputs, tmp_path):
    """List, filter to FN, open a case, window it, record a verdict, reload, export CSV, sign off, try images."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, server.url, "alice")
    fn = outcome_ids(inputs["eval"], "FN")
    page.check("input[name=outcome][value=FN]")
    page.click("#apply")
    page.wait_for_url(re.compile(r".*outcome=FN.*"))
    shown = page.locator("table.cases tbody td:first-child a").all_inner_texts()
    assert sorted(shown) == sorted(fn)
    assert set(page.locator("table.cases .outcome").all_inner_texts()) == {"FN"}

    page.locator("table.cases tbody a").first.click()
    case_id = page.url.split("/cases/")[1].split("?")[0]
    page.wait_for_function("document.getElementById('full').src.includes('lo=')")
    page.wait_for_function("document.getElementById('cam').naturalWidth > 0", timeout=60_000)  # Grad-CAM, computed
    before = page.eval_on_selector("#full", "e => e.src")
    page.eval_on_selector("#width", "e => { e.value = e.min; e.dispatchEvent(new Event('input')); }")
    page.wait_for_function(f"document.getElementById('full').src !== {before!r}")
    page.wait_for_function("document.getElementById('full').complete && document.getElementById('full').naturalWidth")
    page.eval_on_selector("#opacity", "e => { e.value = 0.8; e.dispatchEvent(new Event('input')); }")
    assert page.eval_on_selector("#cam", "e => e.style.opacity") == "0.8"
    assert page.inner_text("#decision") == "normal"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-case.png"), full_page=True)

    page.keyboard.press("d")  # verdict key: disagree
    page.check("#label-wrong")
    page.fill("textarea[name=note]", "no fracture; overlapping ulnar styloid")
    page.click("#save")
    page.wait_for_load_state()
    page.reload()
    assert "alice: disagree, label looks wrong (suggests 0): no fracture" in page.inner_text("#verdicts")

    with page.expect_download() as download:
        page.click("text=Export CSV")
    csv_text = Path(download.value.path()).read_text()
    assert f",{case_id},alice,disagree,True,0,no fracture; overlapping ulnar styloid," in csv_text

    corrections = page.request.get(f"{server.url}/export/corrections.csv").text()
    assert corrections.splitlines()[0] == "image_id,old_label,new_label,reviewer,reason"
    assert (
        f"{case_id},1,0,alice,no fracture; overlapping ulnar styloid" in corrections
    )  # the form suggests the other label

    page.goto(f"{server.url}/summary")
    assert case_id in page.inner_text("#flags")
    page.check("input[name=decision][value=signed_off]")
    page.fill("textarea[name=statement]", "FN cases reviewed; acceptable for promotion")
    page.click("#sign")
    page.wait_for_url(f"{server.url}/summary")
    assert "alice signed_off (passed)" in page.inner_text("#sign-offs")

    page.goto(f"{server.url}/try")
    page.set_input_files("#file", str(write_dicom(tmp_path / "study.dcm")))
    page.click("#upload")
    page.wait_for_selector("#prediction", timeout=60_000)
    assert page.inner_text("#decision") in ("fracture", "normal")
    assert 0 <= float(page.inner_text("#prob")) <= 1
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    page.set_input_files("#file", str(text))
    page.click("#upload")
    assert page.inner_text("#upload-error") == "notes.png: not an image (text file)"
    page.goto(f"{server.url}/")  # the app keeps serving
    assert page.locator("table.cases tbody tr").count() > 0
    assert not list(server.state.upload_dir.rglob("upload*")), "uploaded files are deleted after decoding"
    page.close()


class Client(requests.Session):
    """A browser-like session on the app: relative URLs, redirects not followed."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def request(self, method, path, **kwargs):  # noqa: ANN001
        kwargs["allow_redirects"] = False
        return super().request(method, self.url + path, timeout=60, **kwargs)


def session(url: str, user: str) -> tuple[Client, str]:
    client = Client(url)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": user, "password": PASSWORDS[user], "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/"
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/summary").text).group(1)
    return client, token


def test_two_sessions_recording_at_once_both_keep_theirs(server, inputs):
    ids = outcome_ids(inputs["eval"], "TN") + outcome_ids(inputs["eval"], "TP")

    def record(user: str) -> int:
        client, token = session(server.url, user)
        with client:
            for image_id in ids:
                r = client.post(f"/cases/{image_id}/verdict", data={"csrf_token": token, "verdict": "agree",
                                                                   "note": user})  # fmt: skip
                assert r.status_code == 303, r.text
        return len(ids)

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(record, ["alice", "bob"])) == [len(ids)] * 2
    got = requests.get(f"{server.url}/api/verdicts", headers=basic("bob")).json()
    for user in ("alice", "bob"):
        assert {v["image_id"] for v in got if v["reviewer"] == user and v["note"] == user} == set(ids)


def test_requests_without_a_valid_login_are_refused(server, inputs):
    image_id = outcome_ids(inputs["eval"], "FP")[0]
    assert requests.get(f"{server.url}/api/cases").status_code == 401
    wrong = {"authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    assert requests.get(f"{server.url}/api/cases", headers=wrong).status_code == 401
    assert "www-authenticate" not in requests.get(f"{server.url}/api/cases").headers  # no browser Basic prompt
    page = requests.get(f"{server.url}/", allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert requests.get(f"{server.url}/cases/{image_id}/input.png", allow_redirects=False).status_code == 303
    client, token = session(server.url, "alice")
    with client:
        forged = client.post(f"/cases/{image_id}/verdict", data={"csrf_token": "forged", "verdict": "agree"})
        assert forged.status_code == 403
        no_header = client.post("/api/verdicts", json={"image_id": image_id, "verdict": "agree"})
        assert no_header.status_code == 403
        ok = client.post("/api/verdicts", json={"image_id": image_id, "verdict": "unsure"},
                         headers={"x-csrf-token": token})  # fmt: skip
        assert ok.status_code == 201 and ok.json()["reviewer"] == "alice"


def test_restart_keeps_every_verdict(params, inputs, tmp_path):
    state_dir = tmp_path / "state"
    first = Server(params, inputs, state_dir)
    ids = outcome_ids(inputs["eval"], "FP")
    for image_id in ids:
        r = requests.post(f"{first.url}/api/verdicts", json={"image_id": image_id, "verdict": "disagree"},
                       headers=basic("alice"))  # fmt: skip
        assert r.status_code == 201
    first.stop()
    second = Server(params, inputs, state_dir)
    try:
        got = requests.get(f"{second.url}/api/verdicts", headers=basic("alice")).json()
        assert sorted(v["image_id"] for v in got) == sorted(ids)
    finally:
        second.stop()


def test_api_fuzzed_from_its_own_openapi_schema_gives_no_5xx(server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "GET /api/cases", "GET /api/verdicts", "POST /api/verdicts", "POST /api/predict",
    }  # fmt: skip
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            response = case.call(base_url=server.url, headers=basic("alice"))
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"

        fuzz()
