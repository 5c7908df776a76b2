"""`mlflow models serve` started the one way that works: the interpreter's bin dir first on PATH, loopback by default.

`mlflow models serve --env-manager local` starts `uvicorn` by name through a shell, so called as
`.venv/bin/mlflow` from a shell whose PATH lacks the venv it exits 127. Everything here that starts the scoring
server (`fracture serve`, infra validation before promotion, the KServe predictor container) builds the command
and environment with `serve_command` / `serve_env`.

`running_server` is the managed form: the server runs in its own process group, is waited for on `/ping`, and
the whole group (MLflow's CLI, uvicorn and its workers) is terminated on exit, on an exception and on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from fracture.base.errors import InputError
from fracture.config import Params

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this many seconds


def bin_dir() -> Path:
    """The running interpreter's bin dir (the venv's, when run from one): where `mlflow` and `uvicorn` live."""
    return Path(sys.executable).parent


def serve_command(model_uri: str, host: str, port: int, workers: int = 1, timeout_s: int = 60) -> list[str]:
    """The `mlflow models serve` argv for a model URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, a path)."""
    mlflow_cli = bin_dir() / "mlflow"
    if not mlflow_cli.is_file():
        raise InputError(f"{mlflow_cli}: the mlflow CLI is not installed beside {sys.executable}")
    return [
        str(mlflow_cli), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "-h", host, "-p", str(port), "-w", str(workers), "-t", str(timeout_s),
    ]  # fmt: skip


def serve_env(base: dict[str, str] | None = None, path_roots: Sequence[str | Path] = ()) -> dict[str, str]:
    """`base` (default: this process's environment) with the interpreter's bin dir first on PATH.

    MLflow's pickle loading is switched off: the project's pyfunc is models-from-code, so a pickled one is foreign.
    `path_roots` (params `serve.allowed_path_roots`) are the only folders a request's `path` may name; the variable
    is always set, so a value inherited from the caller's environment never widens it.
    """
    from fracture.serving.pyfunc import PATH_ROOTS_ENV

    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(bin_dir()), *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    env[PATH_ROOTS_ENV] = os.pathsep.join(os.path.abspath(r) for r in path_roots)
    return env


def fetch_verified(model_uri: str, work_dir: Path) -> str:
    """What `mlflow models serve` may load: a registry URI is first fetched into `work_dir` and verified.

    `fracture.registry.download.fetch_model` refuses, before anything is loaded, a pickled pyfunc, model code that
    is not this package's, and weights that do not hash to the version's registered fingerprint. A local pyfunc
    dir (one `save_pyfunc` just wrote) is served as it is.

    Raises:
        InputError: the registered version failed a check (the message says which).
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    from fracture.registry.download import fetch_model

    return str(fetch_model(model_uri, Path(work_dir) / "model"))


@contextmanager
def verified_source(model_uri: str) -> Iterator[str]:
    """`fetch_verified` into a temporary directory that is removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="fracture-fetch-") as tmp:
        yield fetch_verified(model_uri, Path(tmp))


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_port_closed(host: str, port: int, timeout_s: float = 15.0) -> bool:
    """Whether host:port stops accepting connections within `timeout_s` (killed workers release it a moment late)."""
    deadline = time.monotonic() + timeout_s
    while port_open(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def warn_if_exposed(host: str) -> None:
    """Log a warning when the server would listen beyond loopback (fine in a container, not on a workstation)."""
    if host not in (LOOPBACK, "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines; the scoring server has no authentication", host)


@dataclass(frozen=True)
class Server:
    """A running scoring server."""

    url: str
    host: str
    port: int
    pid: int
    log_path: Path


def _log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> float:
    """Poll `url/ping` until it answers 200; returns the seconds waited.

    Raises:
        InputError: the process exited, or `/ping` did not answer within `timeout_s` (with the log's tail).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise InputError(f"the scoring server exited with {proc.returncode}: {_log_tail(log_path)[-600:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:  # noqa: S310 - our own server
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise InputError(f"the scoring server at {url} was not ready after {timeout_s:.0f} s: {_log_tail(log_path)[-600:]}")


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of process group `pgid`."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> bool:
    """Terminate the process group led by `proc` (SIGTERM, then SIGKILL), reap `proc`, and wait for every member.

    A SIGKILLed worker is not gone the instant `killpg` returns; this returns only once no live member of the
    group remains (or after `grace_s` more seconds, logging the survivors). Returns whether the group is gone.
    """
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; SIGKILL stragglers of the group (uvicorn workers) if any remain
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if proc.poll() is None:  # pragma: no cover - SIGKILL always ends a process we own
        proc.wait()
    deadline = time.monotonic() + grace_s
    while survivors := group_members(pgid):
        if time.monotonic() > deadline:
            log.warning("process group %d: %s still running after SIGKILL", pgid, [p.pid for p in survivors])
            return False
        time.sleep(0.05)
    return True


@contextmanager
def running_server(
    model_uri: str,
    host: str = LOOPBACK,
    port: int | None = None,
    workers: int = 1,
    timeout_s: int = 60,
    startup_timeout_s: float = 300.0,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    path_roots: Sequence[str | Path] = (),
) -> Iterator[Server]:
    """Start `mlflow models serve` for `model_uri`, wait for `/ping`, yield it, and always stop its process group.

    Args:
        model_uri: what to serve (`models:/NAME/VERSION`, `models:/NAME@ALIAS`, or a local pyfunc dir).
        host: interface to bind (loopback by default).
        port: TCP port (default: a free one).
        workers: uvicorn workers.
        timeout_s: the server's request timeout.
        startup_timeout_s: how long to wait for `/ping`.
        env: base environment (default: this process's); the bin dir is put first on its PATH.
        log_path: where the server's output goes (default: a temp file).
        path_roots: the folders a request's `path` may name (none: `path` is off).

    Raises:
        InputError: the server could not start (the message carries its log's tail).
    """
    port = port or free_port(host)
    if port_open(host, port):
        raise InputError(f"{host}:{port}: something is already listening there")
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="fracture-serve-", suffix=".log")[1])
    cmd = serve_command(model_uri, host, port, workers, timeout_s)
    url = f"http://{host}:{port}"
    log.info("starting the scoring server for %s on %s (log: %s)", model_uri, url, log_path)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=serve_env(env, path_roots), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        waited = wait_ready(url, proc, log_path, startup_timeout_s)
        log.info("scoring server ready after %.1f s (pid %d)", waited, proc.pid)
        yield Server(url=url, host=host, port=port, pid=proc.pid, log_path=log_path)
    finally:
        stop_group(proc)
        if not wait_port_closed(host, port):
            log.warning("%s:%d still accepts connections after the server's process group stopped", host, port)
        log.info("scoring server on %s stopped", url)


def exec_server(
    model_uri: str, host: str, port: int, workers: int, timeout_s: int, path_roots: Sequence[str] = ()
) -> None:
    """Replace this process with `mlflow models serve` (foreground: Ctrl-C and SIGTERM reach the server).

    Raises:
        InputError: the port is taken, the mlflow CLI is missing, or the registered version fails verification.
    """
    from fracture.tracking import redact, tracking_uri

    warn_if_exposed(host)
    if port_open(LOOPBACK if host in ("0.0.0.0", "::") else host, port):  # noqa: S104 - only probing
        raise InputError(f"{host}:{port}: something is already listening there; choose another --port")
    # exec replaces this process: the verified copy stays in its temp dir for the server's lifetime.
    source = fetch_verified(model_uri, Path(tempfile.mkdtemp(prefix="fracture-serve-")))
    cmd = serve_command(source, host, port, workers, timeout_s)
    env = serve_env({**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}, path_roots)
    log.info("serving %s from %s on http://%s:%d (POST /invocations, GET /ping)", model_uri,
             redact(env["MLFLOW_TRACKING_URI"]), host, port)  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execve(cmd[0], cmd, env)


def run_serve(params: Params, model_uri: str | None, host: str | None = None, port: int | None = None) -> None:
    """`fracture serve`: the champion (or `model_uri`) on params `serve.host:serve.port`, in the foreground."""
    uri = model_uri or f"models:/{params.registered_model_name}@champion"
    sp = params.serve
    exec_server(uri, host or sp.host, port or sp.port, sp.workers, sp.timeout_s, sp.allowed_path_roots)
