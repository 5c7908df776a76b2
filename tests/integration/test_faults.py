"""Faults: `kill -9` during ingest and preprocess, and an MLflow server that is down while training.

Each kill test runs the real `fracture` command in a subprocess on a data set large enough to take a few seconds,
SIGKILLs it mid-run, checks that nothing half-written is left where a reader would take it as valid, re-runs it,
and compares the result with an uninterrupted run (manifest content hash, cache arrays). `kill -9` during train,
then `--resume`, is tests/integration/test_train_resume.py.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil
import pytest

from fracture.base.errors import InputError
from fracture.base.io import hash_file, read_manifest
from fracture.config import dump_params
from tests.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_IMAGES = 2000
SIDE = 384  # px; small files (about 1 kB each) that still take a few ms each to decode
KAGGLE_COLUMNS = (
    "filestem,patient_id,study_number,timehash,gender,age,laterality,projection,initial_exam,ao_classification,"
    "cast,diagnosis_uncertain,osteopenia,fracture_visible,metal,pixel_spacing,device_manufacturer"
).split(",")

# Runs the CLI, but SIGKILLs itself in the middle of writing manifest.parquet: the file on disk is half written.
KILL_MID_WRITE = """
import os, signal, sys
import pyarrow.parquet as pq
real = pq.write_table
def half_then_die(table, where, *args, **kwargs):
    real(table, where, *args, **kwargs)
    if "manifest.parquet" in str(where):
        os.truncate(where, os.path.getsize(where) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
pq.write_table = half_then_die
from fracture.cli import app
app(sys.argv[1:])
"""


def png_variants(n: int) -> list[bytes]:
    """`n` different PNG files (a tEXt chunk numbers them) with the same 16-bit pixels."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    img = ((xx // 16 + yy // 16) % 7 * 8000 + 5000).astype(np.uint16)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    head, tail = buf.tobytes()[:-12], buf.tobytes()[-12:]
    out = []
    for i in range(n):
        body = b"n\x00" + str(i).encode()
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        out.append(head + chunk + tail)
    return out


def write_kaggle(root: Path, n: int) -> Path:
    """A GRAZPEDWRI-DX-shaped root with `n` rows and images."""
    (root / "images_part1").mkdir(parents=True)
    lines = [",".join(KAGGLE_COLUMNS)]
    for i, data in enumerate(png_variants(n)):
        patient, timehash = f"{i // 2:04d}", f"{1_000_000_000 + i:010d}"
        stem = f"{patient}_{timehash}_01_WRI-L{1 + i % 2}_M010"
        (root / "images_part1" / f"{stem}.png").write_bytes(data)
        flag = "1" if i % 3 == 0 else ""
        row = [
            stem,
            patient,
            "01",
            timehash,
            "M",
            "10.0",
            "L",
            str(1 + i % 2),
            "1",
            "",
            "",
            "",
            "",
            flag,
            "",
            "0.1",
            "x",
        ]
        lines.append(",".join(row))
    (root / "dataset.csv").write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory, make_params) -> Path:
    """Working dir with the data set (`kaggle/`, relative roots as a user would pass them) and `params.yaml`."""
    work = tmp_path_factory.mktemp("faults")
    write_kaggle(work / "kaggle", N_IMAGES)
    dump_params(make_params({"base": {"num_workers": 2, "image_size": 64}}), work / "params.yaml")
    return work


def env() -> dict[str, str]:
    return {**os.environ, "FRACTURE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, driver: str | None = None) -> list[str]:
    head = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "fracture.cli"]
    return [*head, *args, "--params", "params.yaml"]


def run(work: Path, *args: str, driver: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args, driver=driver), cwd=work, env=env(), capture_output=True, text=True, timeout=300)


def start(work: Path, *args: str) -> subprocess.Popen:
    # Own session, so the workers can be reaped by process group after the main process is killed.
    return subprocess.Popen(cli(*args), cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    wait_until(proc, ready, kill_hard, timeout, poll_s=0.005)


def kill_hard(proc: subprocess.Popen) -> None:
    """`kill -9` the command, then its orphaned workers (this test started the whole session)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert proc.returncode == -signal.SIGKILL


def has_workers(proc: subprocess.Popen) -> bool:
    try:
        return bool(psutil.Process(proc.pid).children())
    except psutil.NoSuchProcess:
        return False


def visible(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.exists() else set()


def hidden(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.name.startswith(".")} if out.exists() else set()


def assert_same_ingest(ref: Path, out: Path) -> None:
    assert hash_file(out / "manifest.parquet") == hash_file(ref / "manifest.parquet")
    assert (out / "quarantine.csv").read_bytes() == (ref / "quarantine.csv").read_bytes()
    assert json.loads((out / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())


@pytest.fixture(scope="module")
def reference(work: Path) -> Path:
    """Uninterrupted ingest + preprocess: the outputs every interrupted run must end up equal to."""
    done = run(work, "ingest", "--kaggle", "kaggle", "--out", "ref/ingest")
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(work, "preprocess", "--manifest", "ref/ingest/manifest.parquet", "--out", "ref/cache")
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "ref"


# ------------------------------------------------------------------------------------------------------ ingest
def test_ingest_killed_while_reading_headers_then_rerun(work, reference):
    out = work / "ingest_a"
    proc = start(work, "ingest", "--kaggle", "kaggle", "--out", "ingest_a")
    wait_for(proc, lambda: has_workers(proc))  # the parallel header/hash phase has begun
    kill_hard(proc)
    assert "manifest.parquet" not in visible(out), "killed before its outputs, yet a manifest exists"
    refused = run(work, "validate", "--manifest", "ingest_a/manifest.parquet", "--out", "val_a")
    assert refused.returncode == 2 and "ingest_a/manifest.parquet" in refused.stderr
    assert "Traceback" not in refused.stderr

    again = run(work, "ingest", "--kaggle", "kaggle", "--out", "ingest_a")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_ingest(reference / "ingest", out)


@pytest.mark.parametrize("earlier_output", [False, True])
def test_ingest_killed_while_writing_the_manifest_then_rerun(work, reference, earlier_output):
    out = work / f"ingest_b{int(earlier_output)}"
    if earlier_output:  # an earlier, complete ingest of an older version of the data set in the same dir
        older = work / "kaggle_older"
        if not older.exists():
            write_kaggle(older, N_IMAGES // 4)
        assert run(work, "ingest", "--kaggle", "kaggle_older", "--out", out.name).returncode == 0
    died = run(work, "ingest", "--kaggle", "kaggle", "--out", out.name, driver=KILL_MID_WRITE)
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]

    # The half-written file exists only under a temporary name, and no reader takes it as a manifest.
    partial = [out / name for name in hidden(out) if name.startswith(".manifest.parquet.")]
    assert partial, "the kill did not land inside the manifest write"
    with pytest.raises(InputError):
        read_manifest(partial[0])
    # Whatever the dir now holds is never a manifest that disagrees with the run's other outputs.
    if "manifest.parquet" in visible(out):
        manifest, _ = read_manifest(out / "manifest.parquet")
        summary = json.loads((out / "summary.json").read_text())
        assert len(manifest) == summary["totals"]["total"], "a stale manifest sits beside the new summary.json"

    again = run(work, "ingest", "--kaggle", "kaggle", "--out", out.name)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_ingest(reference / "ingest", out)
    assert not hidden(out), f"temporary files left behind: {hidden(out)}"


# -------------------------------------------------------------------------------------------------- preprocess
def assert_same_cache(ref: Path, out: Path) -> None:
    from fracture.preprocess.cache import load_cache

    images, index = load_cache(out)
    ref_images, ref_index = load_cache(ref)
    pd.testing.assert_frame_equal(index, ref_index)
    np.testing.assert_array_equal(np.asarray(images), np.asarray(ref_images))
    assert json.loads((out / "meta.json").read_text()) == json.loads((ref / "meta.json").read_text())


@pytest.mark.parametrize("earlier_cache", [False, True])
def test_preprocess_killed_mid_decode_then_rerun(work, reference, earlier_cache):
    from fracture.preprocess.cache import load_cache

    out = work / f"cache_{int(earlier_cache)}"
    manifest = "ref/ingest/manifest.parquet"
    if earlier_cache:  # a complete cache of an older manifest (a quarter of the rows) is already there
        older = work / "kaggle_older"
        if not older.exists():
            write_kaggle(older, N_IMAGES // 4)
        assert run(work, "ingest", "--kaggle", "kaggle_older", "--out", "older_ingest").returncode == 0
        assert run(work, "preprocess", "--manifest", "older_ingest/manifest.parquet", "--out", out.name).returncode == 0
    proc = start(work, "preprocess", "--manifest", manifest, "--out", out.name)
    wait_for(proc, lambda: any(n.startswith(".images.npy.") for n in hidden(out)) and has_workers(proc))
    time.sleep(0.5)  # well inside the decode phase (the reference run decodes for several seconds)
    kill_hard(proc)

    # A killed run leaves either no cache (the reader refuses it by name) or the earlier, complete one.
    if earlier_cache:
        images, index = load_cache(out)
        assert len(index) == len(images) == N_IMAGES // 4
    else:
        with pytest.raises(InputError, match=out.name):
            load_cache(out)

    again = run(work, "preprocess", "--manifest", manifest, "--out", out.name)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_cache(reference / "cache", out)
    assert not hidden(out), f"temporary files left behind: {hidden(out)}"


# ------------------------------------------------------------------------------------------------ MLflow down
def test_train_while_mlflow_is_down_then_register_later(tmp_path, make_params, monkeypatch):
    import mlflow
    import torch

    from fracture.evaluate import run_evaluate
    from fracture.registry.download import download_model_dir
    from fracture.registry.register import run_register
    from fracture.train import run_train
    from tests.unit.train.test_train import TINY, assert_same_weights, closed_port_uri, write_tiny_dataset

    torch.set_num_threads(1)
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": 2}, "evaluate": {"n_bootstrap": 20}})
    data = write_tiny_dataset(tmp_path / "data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_uri())
    model = tmp_path / "model"
    trained = run_train(params, data["manifest"], data["splits"], data["cache"], model)
    assert trained["mlflow_status"].startswith("unreachable") and trained["mlflow_run_id"] is None
    metadata = json.loads((model / "metadata.json").read_text())
    assert "mlflow_run_id" not in metadata and "mlflow_status" not in metadata  # the model dir knows no run
    run_evaluate(params, model, data["manifest"], data["splits"], data["cache"], tmp_path / "eval")

    # Later, with the tracking server back (here: a fresh sqlite store), the saved model dir registers.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    passed = json.loads((tmp_path / "eval" / "gate.json").read_text())["status"] != "failed"  # undecidable registers
    reason = None if passed else "tiny synthetic data; testing late registration"
    record = run_register(params, model, tmp_path / "eval", name="fracture-late", force=not passed, reason=reason)
    assert record["created"] and str(record["version"]) == "1"
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("fracture-late", "challenger")
    run = client.get_run(version.run_id)
    assert run.data.tags["fracture.step"] == "register" and version.tags["train_run_id"] == "none"
    assert run.data.tags["fracture.model_digest"] == trained["model_digest"] == version.tags["fingerprint"]
    assert version.tags["manifest_hash"] == hash_file(data["manifest"]) == metadata["manifest_hash"], version.tags
    assert_same_weights(model, download_model_dir("models:/fracture-late@challenger", tmp_path / "downloaded"))
