"""`mlflow models serve` on the champion alias answers /invocations, alone and under a small concurrent burst."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest

from fracture.registry.aliases import run_promote
from fracture.registry.register import run_register
from tests.integration.conftest import BIN, LOOPBACK, free_port, start_process, stop_process, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURST, BURST_WORKERS = 20, 8


def post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict | str, float]:
    """POST JSON; returns (status, parsed body or text, seconds)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode(errors="replace")
    seconds = time.perf_counter() - start
    try:
        return status, json.loads(text), seconds
    except json.JSONDecodeError:
        return status, text, seconds


@pytest.fixture(scope="module")
def served(mlflow_server, params, make_candidate, tmp_path_factory, radiograph_png):  # noqa: ANN001, ANN201
    """Register + promote a model, then serve models:/NAME@champion on a free loopback port."""
    name = f"serve-{uuid.uuid4().hex[:8]}"
    cand = make_candidate(seed=71)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        run_register(params, cand.model_dir, cand.eval_dir, name=name)
        run_promote(params, name, reason="serving test")
        mlflow.set_tracking_uri(None)  # set globally by the registry: back to the environment's URI
    port, log_path = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env["FRACTURE_SERVE_PATH_ROOTS"] = str(radiograph_png.parent)  # serve.allowed_path_roots: the test image's dir
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local"]
    proc = start_process([*cmd, "-p", str(port), "-h", LOOPBACK], env, log_path)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/ping", proc, log_path, timeout=240)
        yield url, cand, log_path
    finally:
        stop_process(proc)


def _expected_probability(model_dir: Path, image: Path, params) -> float:  # noqa: ANN001
    from fracture.images.decode import prepare_image
    from fracture.model.core import load_model_dir, predict_proba

    model, config = load_model_dir(model_dir)
    img = prepare_image(image, config["img_size"], params.preprocess.window_percentiles)
    return float(predict_proba(model, img[None], config["mean"], config["std"], batch_size=1)[0])


def test_served_champion_predicts_an_image(served, radiograph_png, params):
    from fracture.serving.pyfunc import encode_image_file

    url, cand, _ = served
    body = {"dataframe_split": {"columns": ["image"], "data": [[encode_image_file(radiograph_png)]]}}
    status, out, _ = post(f"{url}/invocations", body)
    assert status == 200, out
    (pred,) = out["predictions"]
    expected = _expected_probability(cand.model_dir, radiograph_png, params)
    assert pred["probability"] == pytest.approx(expected, abs=1e-6)
    assert pred["decision"] == int(expected >= pred["threshold"]) and pred["threshold"] == 0.5

    status, out, _ = post(f"{url}/invocations", {"dataframe_records": [{"path": str(radiograph_png)}]})
    assert status == 200, out
    assert out["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-6)

    status, out, _ = post(f"{url}/invocations", {"dataframe_records": [{"image": "not base64!"}]})
    assert status >= 400 and "base64" in json.dumps(out)


def test_served_model_under_a_concurrent_burst(served, radiograph_png, capsys):
    from fracture.serving.pyfunc import encode_image_file

    url, _, _ = served
    body = {"dataframe_split": {"columns": ["image"], "data": [[encode_image_file(radiograph_png)]]}}
    with ThreadPoolExecutor(max_workers=BURST_WORKERS) as pool:
        results = list(pool.map(lambda _: post(f"{url}/invocations", body), range(BURST)))
    assert all(status == 200 for status, _, _ in results), [r[1] for r in results if r[0] != 200][:2]
    probs = {round(out["predictions"][0]["probability"], 6) for _, out, _ in results}
    assert len(probs) == 1  # concurrent requests do not interfere
    latencies = np.array([seconds for _, _, seconds in results])
    p50, p95 = np.percentile(latencies, [50, 95])
    with capsys.disabled():
        print(f"\nserving burst: {BURST} requests, {BURST_WORKERS} concurrent: p50 {p50:.3f} s, p95 {p95:.3f} s")
    assert p95 < 60
