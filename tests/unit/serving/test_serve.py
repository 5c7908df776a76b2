"""fracture.serving.server: the scoring server's command, environment and lifetime (cleaned up on errors and Ctrl-C)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from fracture.base.errors import InputError
from fracture.serving import server as serve

# A stand-in for `mlflow models serve`: answers /ping on its port and, like MLflow, starts a worker process.
FAKE_SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"\\n")
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ping).serve_forever()
    """
)


def test_command_and_env_put_this_interpreter_first(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = serve.serve_env()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    cmd = serve.serve_command("models:/m@champion", "127.0.0.1", 5001, workers=2, timeout_s=30)
    assert cmd[0] == str(Path(sys.executable).parent / "mlflow") and Path(cmd[0]).is_file()
    assert cmd[1:3] == ["models", "serve"] and ["--env-manager", "local"] == cmd[5:7]
    assert cmd[cmd.index("-h") + 1] == "127.0.0.1" and cmd[cmd.index("-w") + 1] == "2"


def _fake(monkeypatch):
    def command(model_uri, host, port, workers=1, timeout_s=60):  # noqa: ANN001, ANN202
        return [sys.executable, "-c", FAKE_SERVER, str(port)]

    monkeypatch.setattr(serve, "serve_command", command)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_whole_process_group_is_stopped_on_errors_and_ctrl_c(monkeypatch, tmp_path, error):
    _fake(monkeypatch)
    seen = {}
    with pytest.raises(error):
        with serve.running_server("models:/m/1", startup_timeout_s=60, log_path=tmp_path / "s.log") as server:
            leader = psutil.Process(server.pid)
            seen["pids"] = [server.pid] + [p.pid for p in leader.children(recursive=True)]
            seen["port"] = server.port
            assert len(seen["pids"]) >= 2 and serve.port_open(server.host, server.port)
            raise error()
    assert serve.wait_port_closed("127.0.0.1", seen["port"])
    alive = [pid for pid in seen["pids"] if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == []


def test_a_server_that_exits_is_reported_with_its_log(monkeypatch, tmp_path):
    monkeypatch.setattr(serve, "serve_command", lambda *a, **k: [sys.executable, "-c", "print('boom'); exit(3)"])
    with pytest.raises(InputError, match="exited with 3: boom"):
        with serve.running_server("models:/m/1", startup_timeout_s=30, log_path=tmp_path / "s.log"):
            pass


def test_a_taken_port_is_refused(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(InputError, match="already listening"):
            with serve.running_server("models:/m/1", port=s.getsockname()[1]):
                pass


# A leader that exits on SIGTERM at once, and workers that ignore SIGTERM: only SIGKILL ends them.
STUBBORN_GROUP = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"
    workers = [subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE) for _ in range(6)]
    for w in workers:
        w.stdout.readline()  # each worker has installed its handler
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_stop_group_returns_only_when_no_member_of_the_group_lives():
    """Regression: CI saw a SIGKILLed uvicorn worker still running right after `stop_group` returned."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", STUBBORN_GROUP], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == b"ready"
    assert len(serve.group_members(proc.pid)) == 7
    assert serve.stop_group(proc, grace_s=5.0) is True
    assert serve.group_members(proc.pid) == []  # checked at once, with no wait of our own
