"""Real services on loopback for integration tests: an S3 endpoint (moto_server) and an `mlflow server`.

Everything binds to 127.0.0.1 on free ports and is killed at the end of the session. The MLflow server keeps its
metadata in sqlite in a temp dir and proxies artifacts to S3 (`--artifacts-destination s3://... --serve-artifacts`,
the layout of infra/local/docker-compose.yaml). The server reaches S3 through a TCP switch in this process, so a
test can take the S3 endpoint down and bring it back without losing moto's state.

The AWS credentials are fake and planted: tests grep logs, tags and params for them to prove they never leak.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import write_model_dir as write_untrained_model_dir

BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
MLFLOW_BUCKET, DVC_BUCKET = "fracture-mlflow", "fracture-dvc"
PLANTED_KEY_ID = "AKIAFRACTUREPLANTED7Q"
PLANTED_SECRET = "planted-secret-Zk3vQ9xWm2Lr8Tb5"  # noqa: S105 - fake, for the leak checks


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None, log_path: Path | None, timeout: float) -> None:
    """Poll `url` until it answers 200; fail early (with the log tail) if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            pytest.fail(f"process for {url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    pytest.fail(f"{url} did not come up within {timeout:.0f} s:\n{tail}")


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a service in its own process group, output to `log_path`."""
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate the process group we started (the service and any workers it spawned)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class TcpSwitch:
    """A loopback TCP forwarder that can be switched off: an S3 endpoint outage without losing moto's state."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.up = True
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._conns.discard(s)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    @contextmanager
    def down(self) -> Iterator[None]:
        """Refuse new connections and cut the open ones (pooled keep-alive connections included)."""
        self.up = False
        with self._lock:
            open_conns = list(self._conns)
        self._drop(*open_conns)
        try:
            yield
        finally:
            self.up = True

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class MlflowServer:
    """A running `mlflow server` on loopback."""

    url: str
    log_path: Path
    s3: TcpSwitch
    s3_url: str


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """Fake, planted AWS credentials for the loopback S3 endpoint (never real ones)."""
    return {
        "AWS_ACCESS_KEY_ID": PLANTED_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory, s3_env: dict[str, str]) -> Iterator[str]:
    """`moto_server` on a free loopback port, with the project's buckets created; yields its URL."""
    import boto3

    port, log_path = free_port(), tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **s3_env}
    proc = start_process([str(BIN / "moto_server"), "-H", LOOPBACK, "-p", str(port)], env, log_path)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/moto-api/", proc, log_path, timeout=60)
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
            region_name=s3_env["AWS_DEFAULT_REGION"],
        )
        for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
            s3.create_bucket(Bucket=bucket)
        yield url
    finally:
        stop_process(proc)


def server_command(tmp: Path, artifacts_prefix: str, port: int, *extra: str) -> list[str]:
    """`mlflow server` on loopback: sqlite in `tmp`, artifacts proxied to s3://<bucket>/<artifacts_prefix>, 1 worker."""
    return [
        str(BIN / "mlflow"), "server", *extra,
        "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/{artifacts_prefix}",
        "--serve-artifacts",
        "--host", LOOPBACK, "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, s3_env: dict[str, str]) -> Iterator:
    """`mlflow server` (sqlite backend, artifacts proxied to s3://fracture-mlflow/mlflow through a TCP switch)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    switch = TcpSwitch(int(s3_endpoint.rsplit(":", 1)[1]))
    port, log_path = free_port(), tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(s3_env, MLFLOW_S3_ENDPOINT_URL=switch.url, AWS_MAX_ATTEMPTS="2", AWS_RETRY_MODE="standard")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner process: faster start, less CPU
    proc = start_process(server_command(tmp, "mlflow", port), env, log_path)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/health", proc, log_path, timeout=180)
        yield MlflowServer(url=url, log_path=log_path, s3=switch, s3_url=s3_endpoint)
    finally:
        stop_process(proc)
        switch.close()


AUTH_ADMIN = ("admin", "planted-admin-pass-Qw7Rt2Lp")  # noqa: S105 - fake, loopback test server only
AUTH_USERS = {  # fake passwords for the loopback test server's users
    "pipeline": "planted-pipeline-pass-4Hd9",
    "reviewer": "planted-reviewer-pass-8Kx2",
    "reader": "planted-reader-pass-3Vn6",
}


@dataclass(frozen=True)
class AuthServer:
    """A running `mlflow server --app-name basic-auth` with fracture's guard, its admin and three users."""

    url: str
    log_path: Path
    users: dict[str, str]


def auth_ini(path: Path, database_uri: str) -> Path:
    """The basic-auth config the server reads (the same keys infra/ renders): READ for every logged-in user."""
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {AUTH_ADMIN[0]}\n"
        "authorization_function = fracture.access.guard:authenticate\n"
    )
    return path


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, s3_env: dict[str, str]) -> Iterator:
    """`mlflow server --app-name basic-auth` on loopback (sqlite, artifacts proxied to moto S3), users created."""
    from mlflow.server import get_app_client

    tmp = tmp_path_factory.mktemp("mlflow-auth")
    port, log_path = free_port(), tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(s3_env, MLFLOW_S3_ENDPOINT_URL=s3_endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_ini(tmp / "basic_auth.ini", f"sqlite:///{tmp / 'auth.db'}")),
        MLFLOW_AUTH_ADMIN_PASSWORD=AUTH_ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="planted-flask-secret-for-tests",
    )
    proc = start_process(server_command(tmp, "mlflow-auth", port, "--app-name", "basic-auth"), env, log_path)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/health", proc, log_path, timeout=180)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_USERNAME", AUTH_ADMIN[0])
            mp.setenv("MLFLOW_TRACKING_PASSWORD", AUTH_ADMIN[1])
            admin = get_app_client("basic-auth", tracking_uri=url)
            for user, password in AUTH_USERS.items():
                admin.create_user(user, password)
        yield AuthServer(url=url, log_path=log_path, users=dict(AUTH_USERS))
    finally:
        stop_process(proc)


@pytest.fixture
def registry_env(mlflow_server: MlflowServer, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point this test's MLflow client at the loopback server (planted credentials in the env too)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("FRACTURE_USER", "integration-tester")
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    yield mlflow_server.url
    mlflow.set_tracking_uri(None)  # the code under test set it globally: back to the environment's URI


@pytest.fixture(scope="session")
def mlflow_bin() -> str:
    path = shutil.which("mlflow", path=str(BIN))
    assert path, "mlflow CLI not found in the venv"
    return path


@dataclass(frozen=True)
class Candidate:
    """A trained-looking model dir with its eval dir and report, as train/evaluate/report would leave them."""

    model_dir: Path
    eval_dir: Path
    report_path: Path


def write_model_dir(model_dir: Path, params, seed: int, test_set: str = "A") -> Path:  # noqa: ANN001
    """A tiny Swin model dir (random weights from `seed`) written through fracture.model.core's own save path.

    `test_set` names the data it was split from and evaluated on (manifest and splits hashes). Like train's, its
    metadata.json names no MLflow run: register finds the training run by the model digest.
    """
    metadata = {
        "manifest_hash": f"manifest-{test_set}",
        "splits_hash": f"splits-{test_set}",
        "params_hash": f"params-{seed}",
        "split_strategy": "cross_domain",
        "best_epoch": 1,
        "val_auroc": 0.8,
    }
    return write_untrained_model_dir(model_dir, params, seed, metadata)


def exact_auroc_predictions(auroc: float, test_set: str, n_pos: int = 100, n_neg: int = 100):  # noqa: ANN201
    """Test predictions (predictions.parquet rows) whose AUROC is exactly `auroc` rounded to 1 / (n_pos * n_neg).

    Every version evaluated on one `test_set` shares its images, labels, clusters (two images each) and ranking
    except for the positives moved to reach its AUROC: each move puts one positive above one more negative (or
    below one fewer), in a fixed order, so two versions differ only in |difference| * n_pos * n_neg pairs, spread
    over many negatives. Scores: negative j at (j + 1) / (n_neg + 2), a positive above c negatives at
    (c + 0.5) / (n_neg + 2); no ties.
    """
    import zlib

    import numpy as np
    import pandas as pd

    target = round(auroc * n_pos * n_neg)
    assert 0 <= target <= n_pos * n_neg, auroc
    rng = np.random.default_rng(zlib.crc32(test_set.encode()))
    above = rng.integers(n_neg // 2, n_neg + 1, size=n_pos)  # negatives below each positive, before the moves
    order, i = rng.permutation(n_pos), 0
    while (total := int(above.sum())) != target:
        j, step = order[i % n_pos], 1 if total < target else -1
        if 0 <= above[j] + step <= n_neg:
            above[j] += step
        i += 1
    probs = np.r_[(above + 0.5) / (n_neg + 2), (np.arange(n_neg) + 1) / (n_neg + 2)]
    n = n_pos + n_neg
    return pd.DataFrame(
        {
            "image_id": [f"{test_set}-{k:04d}" for k in range(n)],
            "split": "test",
            "label": np.r_[np.ones(n_pos), np.zeros(n_neg)].astype("int8"),
            "prob": probs,
            "cluster_id": [f"{test_set}:patient{k // 2:03d}" for k in rng.permutation(n)],
        }
    )


def write_eval_dir(
    eval_dir: Path, auroc: float, sensitivity: float, passed: bool, threshold: float = 0.5, test_set: str = "A"
) -> Path:
    """metrics.json / gate.json / thresholds.json / predictions.parquet in evaluate's contract.

    The headline numbers are the given ones; the test predictions reproduce the given AUROC exactly.
    """
    from fracture.base.io import write_json, write_parquet

    metrics = {"threshold": threshold, "test.prevalence": 0.4}
    for key, value in (
        ("test.auroc", auroc),
        ("test.frozen.sensitivity", sensitivity),
        ("test.frozen.specificity", 0.8),
    ):
        metrics.update({key: value, f"{key}_ci_low": max(value - 0.05, 0.0), f"{key}_ci_high": min(value + 0.05, 1.0)})
    from fracture.contracts.verdict import Verdict, write_verdict

    reasons = () if passed else (f"test.auroc {auroc:.3f} < min_auroc 0.700",)
    write_json(eval_dir / "metrics.json", metrics)
    write_verdict(Verdict("evaluate", "passed" if passed else "failed", reasons), eval_dir / "gate.json")
    write_json(eval_dir / "thresholds.json", {"frozen": threshold, "method": "youden", "val": {"youden": threshold}})
    write_parquet(exact_auroc_predictions(auroc, test_set), eval_dir / "predictions.parquet")
    return eval_dir


@pytest.fixture(scope="session")
def make_candidate(tmp_path_factory: pytest.TempPathFactory, params):  # noqa: ANN001, ANN201
    """Factory: (seed, auroc, sensitivity, passed, test_set) -> Candidate with model, eval dir, report.html.

    Candidates with one `test_set` were evaluated on the same test images (paired comparisons apply).
    """

    def factory(  # noqa: ANN202
        seed: int,
        auroc: float = 0.85,
        sensitivity: float = 0.8,
        passed: bool = True,
        test_set="A",  # noqa: ANN001
    ):
        root = tmp_path_factory.mktemp(f"candidate-{seed}")
        model_dir = write_model_dir(root / "model", params, seed, test_set)
        eval_dir = write_eval_dir(root / "eval", auroc, sensitivity, passed, test_set=test_set)
        report = root / "report.html"
        report.write_text(f"<html><body>report for seed {seed}</body></html>")
        return Candidate(model_dir, eval_dir, report)

    return factory


@pytest.fixture(scope="session")
def radiograph_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-bit grayscale PNG: a bright 'bone' bar on a dark field."""
    import cv2
    import numpy as np

    yy, xx = np.mgrid[0:180, 0:140]
    img = (4000 + 3000 * yy / 179).astype(np.uint16)
    img[(np.abs(xx - 70) < 18) & (yy > 20)] = 52000
    path = tmp_path_factory.mktemp("img") / "wrist.png"
    assert cv2.imwrite(str(path), img)
    return path
