"""The README's serving lines, run as written in a fresh shell without the venv on PATH.

The lines are parsed out of docs/serving.md (the bash blocks after the `serving-example` marker and the Python client
block after them), run in a work dir holding `.venv` (a link to this venv), `params.yaml`, `wrist.png` and an
`mlflow.db` where a model is registered and promoted to `champion` as the demo would. Only the port is replaced,
and only when 5001 is taken on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import psutil
import pytest

from fracture.registry.aliases import run_promote
from fracture.registry.register import run_register
from fracture.serving.server import LOOPBACK, free_port, port_open, stop_group, wait_port_closed
from tests.integration.conftest import BIN, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- serving-example"
README_PORT = "5001"


def readme_blocks() -> tuple[list[str], list[str], str]:
    """(server shell lines, client shell lines, Python client) from the README's serving example."""
    text = (REPO / "docs" / "serving.md").read_text()
    after = text[text.index(MARKER) :]
    bash = re.findall(r"```bash\n(.*?)```", after, flags=re.S)[:2]
    python = re.findall(r"```python\n(.*?)```", after, flags=re.S)[0]
    server, client = ([ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")] for block in bash)
    return server, client, python


def fresh_env(work: Path) -> dict[str, str]:
    """A login-like environment: system PATH only (no venv), HOME in the work dir; PYTHONPATH kept for this tree."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):  # the worktree under test, when the venv's installed package is another tree
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@pytest.fixture
def work(tmp_path, params, make_candidate, monkeypatch, radiograph_png):  # noqa: ANN001, ANN201
    """The work dir, with a champion registered in its own sqlite store (artifacts under it)."""
    (tmp_path / ".venv").symlink_to(BIN.parent)
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy2(radiograph_png, tmp_path / "wrist.png")
    cand = make_candidate(seed=91)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_register(params, cand.model_dir, cand.eval_dir, name="fracture-swin")
    run_promote(params, "fracture-swin", reason="README serving test")
    mlflow.set_tracking_uri(None)
    return tmp_path, cand


def _offline_probability(model_dir: Path, image: Path) -> float:
    from fracture.model.core import CONFIG_FILE, load_model_dir, predict_proba, read_contract

    model, config = load_model_dir(model_dir)
    contract = read_contract(config, model_dir / CONFIG_FILE)
    img = contract.decode(image)
    return float(predict_proba(model, img[None], contract.mean, contract.std, batch_size=1)[0])


def test_readme_serving_lines_work_as_typed(work):
    root, cand = work
    server_lines, client_lines, python_client = readme_blocks()
    assert any("fracture serve" in ln for ln in server_lines), server_lines
    port = README_PORT if not port_open(LOOPBACK, int(README_PORT)) else str(free_port())
    sub = (lambda line: line.replace(README_PORT, port)) if port != README_PORT else (lambda line: line)
    env, log_path = fresh_env(root), root / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["bash", "-c", "\n".join(map(sub, server_lines))],
            cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://{LOOPBACK}:{port}/ping", proc, log_path, timeout=300)
        out = subprocess.run(["bash", "-c", "\n".join(map(sub, client_lines))], cwd=root, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        (pred,) = json.loads(out.stdout)["predictions"]
        script = sub(python_client)
        py = subprocess.run(["/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable, "-c", script],
                            cwd=root, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert py.returncode == 0, py.stderr
        group = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] + [proc.pid]
    finally:
        stop_group(proc)
    expected = _offline_probability(cand.model_dir, root / "wrist.png")
    assert pred["probability"] == pytest.approx(expected, abs=1e-6)
    assert pred["decision"] == int(expected >= pred["threshold"]) and set(pred) == {
        "probability",
        "decision",
        "threshold",
    }
    assert f"'probability': {pred['probability']}" in py.stdout  # the Python client printed the same answer
    assert wait_port_closed(LOOPBACK, int(port))  # killed workers release the port a moment late
    assert not [pid for pid in group if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_fracture_serve_refuses_a_taken_port(work):
    root, _ = work
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        s.listen(1)
        port = s.getsockname()[1]
        out = subprocess.run([str(root / ".venv" / "bin" / "fracture"), "serve", "--port", str(port)], cwd=root,
                             env=fresh_env(root), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "already listening" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # one line, no traceback
