"""The served model's `path` input and its 400 answers, over real HTTP (MLflow's own scoring app under uvicorn).

The `path` column reads only under `serve.allowed_path_roots` (off by default); a FIFO is refused at once with no
thread left waiting on it; a refused request is a 400 whose `message` is the reason, with no stack trace.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.registry.register import save_pyfunc
from fracture.serving.pyfunc import PATH_ROOTS_ENV, encode_image_file
from tests.integration.conftest import write_model_dir

PICTURE = (np.mgrid[0:96, 0:80][0] * 2).astype(np.uint8)


def post(url: str, records: list[dict], timeout: float = 15) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def saved_pyfunc(tmp_path_factory, params) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("pyfunc")
    return save_pyfunc(write_model_dir(root / "model", params, 5), root / "pyfunc")


@pytest.fixture(scope="module")
def server(saved_pyfunc, tmp_path_factory):  # noqa: ANN001, ANN201
    """(url, allowed folder, a folder outside it) for the pyfunc served with one allowed root."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    allowed, outside = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("outside")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PATH_ROOTS_ENV, str(allowed))  # what `fracture serve` sets from serve.allowed_path_roots
        app = scoring_server.init(mlflow.pyfunc.load_model(str(saved_pyfunc)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", allowed, outside
    srv.should_exit = True
    thread.join(10)


def test_path_under_an_allowed_root_is_scored_and_outside_is_refused_without_being_read(server):
    url, allowed, outside = server
    for folder in (allowed, outside):
        assert cv2.imwrite(str(folder / "wrist.png"), PICTURE)
    status, body = post(url, [{"path": str(allowed / "wrist.png")}])
    assert status == 200 and 0 <= body["predictions"][0]["probability"] <= 1
    (allowed / "escape.png").symlink_to(outside / "wrist.png")
    for path in (outside / "wrist.png", allowed / "escape.png", Path("/etc/passwd")):
        status, body = post(url, [{"path": str(path)}])
        assert status == 400 and "stack_trace" not in body
        # Was: "/etc/shadow: not an image (text file)": the server read and described any file it could reach.
        assert body["message"] == f"row 0: {path}: not under the server's allowed path roots (serve.allowed_path_roots)"


def test_a_fifo_is_answered_400_at_once_and_leaves_no_thread_waiting(server):
    # Was: 504 after the request timeout, with a thread blocked in open() for good (45 such requests and every
    # valid request timed out).
    url, allowed, _ = server
    fifo = allowed / "pipe.png"
    os.mkfifo(fifo)
    start = time.monotonic()
    status, body = post(url, [{"path": str(fifo)}])
    assert status == 400 and time.monotonic() - start < 10
    assert body["message"] == f"row 0: {fifo}: not a regular file" and "stack_trace" not in body
    with pytest.raises(OSError) as err:  # a writer can open a FIFO only while a reader has it open
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert err.value.errno == errno.ENXIO


def test_bad_requests_are_400_with_the_reason_as_message_and_no_stack_trace(server):
    url, allowed, _ = server
    cv2.imwrite(str(allowed / "ok.png"), PICTURE)
    cases = {
        "row 0: column 'image' is not valid base64": [{"image": "not base64!"}],
        "row 0: give exactly one of 'path' or 'image'": [
            {"path": str(allowed / "ok.png"), "image": encode_image_file(allowed / "ok.png")}
        ],
    }
    for expected, records in cases.items():
        status, body = post(url, records)
        assert status == 400 and "stack_trace" not in body and body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert body["message"].startswith(expected), body["message"]
        assert "Failed to predict data" not in body["message"]  # the request is not echoed back


def test_path_input_is_off_by_default(saved_pyfunc, tmp_path, monkeypatch):
    monkeypatch.delenv(PATH_ROOTS_ENV, raising=False)
    png = tmp_path / "wrist.png"
    cv2.imwrite(str(png), PICTURE)
    model = mlflow.pyfunc.load_model(str(saved_pyfunc))
    with pytest.raises(InputError, match=r"row 0: column 'path' is switched off on this server"):
        model.predict(pd.DataFrame({"path": [str(png)]}))
    assert len(model.predict(pd.DataFrame({"image": [encode_image_file(png)]}))) == 1


def test_serve_env_sets_the_roots_and_an_inherited_value_never_widens_them(tmp_path):
    from fracture.serving.server import serve_env

    inherited = {"PATH": "/usr/bin", PATH_ROOTS_ENV: "/"}
    assert serve_env(inherited)[PATH_ROOTS_ENV] == ""
    assert serve_env(inherited, [tmp_path, "rel"])[PATH_ROOTS_ENV] == os.pathsep.join(
        [str(tmp_path), os.path.abspath("rel")]
    )
