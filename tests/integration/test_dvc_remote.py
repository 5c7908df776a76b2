"""Raw data in a DVC remote on S3 (moto on loopback): push, pull into a fresh clone, reproduce the manifest."""

import json
import shutil
import subprocess

import pytest

from fracture.base.io import hash_file
from tests.e2e.conftest import copy_project, project_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCES = ("GRAZPEDWRI-DX", "MURA-v1.1", "hospital")


def _run(cwd, *cmd, env):
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _configure_remote(project, endpoint, env):
    _run(project, "dvc", "remote", "add", "-f", "-d", "storage", "s3://fracture-dvc/raw", env=env)
    _run(project, "dvc", "remote", "modify", "storage", "endpointurl", endpoint, env=env)


def _ingest(project, env):
    args = [f"--{flag} data/raw/{name}" for flag, name in zip(("kaggle", "mura", "hospital"), SOURCES, strict=True)]
    _run(project, "sh", "-c", f"fracture ingest {' '.join(args)} --out data/interim/real", env=env)
    return hash_file(project / "data/interim/real/manifest.parquet")


def test_push_pull_and_reproduce_the_manifest(tmp_path, s3_endpoint, s3_env):
    env = project_env(**s3_env)
    origin = copy_project(tmp_path / "origin")
    _run(origin, "fracture", "synth", "--out", "data/raw", "--n-per-source", "16", env=env)
    # raw data tracked per source directory: one .dvc file each, hashed as one unit
    _run(origin, "dvc", "add", *[f"data/raw/{s}" for s in SOURCES], env=env)
    _configure_remote(origin, s3_endpoint, env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    _run(origin, *git, "add", "-A", env=env)
    _run(origin, *git, "commit", "-qm", "track raw data", env=env)
    _run(origin, "dvc", "push", env=env)
    expected = _ingest(origin, env)

    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone), env=env)
    assert not (clone / "data/raw/hospital").exists()
    shutil.rmtree(origin / ".dvc" / "cache")  # the clone can only get the data from the remote
    _run(clone, "dvc", "pull", *[f"data/raw/{s}.dvc" for s in SOURCES], env=env)
    assert _ingest(clone, env) == expected
    summary = json.loads((clone / "data/interim/real/summary.json").read_text())
    assert summary


def test_push_to_a_dead_endpoint_fails_clearly(tmp_path, s3_env):
    env = project_env(**s3_env)
    project = copy_project(tmp_path / "p")
    _run(project, "fracture", "synth", "--out", "data/raw", "--n-per-source", "16", env=env)
    _run(project, "dvc", "add", "data/raw/hospital", env=env)
    _configure_remote(project, "http://127.0.0.1:9", env)
    _run(project, "dvc", "remote", "modify", "storage", "connect_timeout", "2", env=env)
    proc = subprocess.run(["dvc", "push"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ERROR" in proc.stderr or "ERROR" in proc.stdout
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr
