"""Errors from the operating system and concurrent runs, through the real CLI in real processes.

A bad `--out` fails before the work, in one line naming the path, exit 2; a full disk says "no space left on
<path>" and leaves consistent outputs, no temporary files and no worker processes; two writers into one output
directory never mix their files. Full and read-only file systems are small tmpfs mounts (skipped with the reason
where this machine cannot mount).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import write_model_dir
from tests.spec import GRAZ_COLUMNS

N_IMAGES = 24


def write_kaggle(root: Path, n: int = N_IMAGES) -> Path:
    """A GRAZPEDWRI-DX layout (DATASETS.md): dataset.csv plus 16-bit PNGs in images_part1/."""
    (root / "images_part1").mkdir(parents=True)
    rows = []
    for i in range(n):
        stem = f"{i:04d}_0354485735_01_WRI-R1_M011"
        img = np.full((40, 48), 9000, np.uint16)
        img[10:30, 8 + i % 8 : 30] = 50000
        cv2.imwrite(str(root / "images_part1" / f"{stem}.png"), img)
        rec = dict.fromkeys(GRAZ_COLUMNS, "")
        rec.update(filestem=stem, patient_id=str(i), study_number="1", gender="M", age="11", projection="1")
        rec["fracture_visible"] = "1" if i % 2 else ""
        rows.append(rec)
    pd.DataFrame(rows, columns=GRAZ_COLUMNS).to_csv(root / "dataset.csv", index=False)
    return root


@pytest.fixture(scope="module")
def params_file(tmp_path_factory, make_params) -> Path:
    from fracture.config import dump_params

    params = make_params({"base": {"image_size": 64, "num_workers": 2}, "predict": {"batch_size": 1}})
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    dump_params(params, path)
    return path


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> Path:
    return write_kaggle(tmp_path_factory.mktemp("data") / "kaggle")


def cli(*args: object, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`fracture <args>` in a fresh interpreter (the worktree's code via PYTHONPATH, set by the test runner)."""
    cmd = [sys.executable, "-m", "fracture.cli", *map(str, args)]
    full_env = {**os.environ, "FRACTURE_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False)


def assert_one_line_exit_2(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, run.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# ------------------------------------------------------------------------------------------ bad --out, --params
def test_out_that_is_a_file_or_under_a_file_fails_before_the_work(tmp_path, kaggle, params_file):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    for out, needle in ((blocker, "is a file"), (blocker / "sub", f"lies under the file {blocker}")):
        run = cli("ingest", "--kaggle", kaggle, "--out", out, "--params", params_file)
        assert_one_line_exit_2(run, str(out), needle)
        assert "reading image headers" not in run.stderr and "candidates" not in run.stderr  # no work was done


def test_too_long_name_empty_paths_and_binary_params_are_one_line(tmp_path, kaggle, params_file):
    long_out = tmp_path / ("x" * 300)
    assert_one_line_exit_2(cli("ingest", "--kaggle", kaggle, "--out", long_out, "--params", params_file),
                           str(long_out), "name too long")  # fmt: skip
    assert_one_line_exit_2(cli("ingest", "--kaggle", kaggle, "--out", "", "--params", params_file), "--out is empty")
    assert_one_line_exit_2(cli("predict", "--img", "", "--weight", tmp_path, "--params", params_file),
                           "--img is empty")  # fmt: skip
    binary = tmp_path / "params.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    assert_one_line_exit_2(cli("ingest", "--kaggle", kaggle, "--out", tmp_path / "o", "--params", binary),
                           str(binary), "not a YAML text file")  # fmt: skip


def test_output_inside_the_input_is_refused(kaggle, params_file):
    out = kaggle / "images_part1" / "results"
    run = cli("ingest", "--kaggle", kaggle, "--out", out, "--params", params_file)
    assert_one_line_exit_2(run, "output folder inside the input folder")
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------ tmpfs
@pytest.fixture
def tmpfs(tmp_path):
    """Factory: a tmpfs of `size` (e.g. "64k") mounted under tmp_path, optionally read-only; unmounted after."""
    mounts = []

    def mount(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({run.stderr.strip() or run.returncode}); needs root or CAP_SYS_ADMIN"
            )
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*") if ".tmp" in p.name or p.name.startswith(".write-check"))


def processes_tagged(tag: str) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FRACTURE_TEST_TAG") == tag:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_read_only_output_dir_fails_before_the_work(tmpfs, kaggle, params_file):
    ro = tmpfs("64k", read_only=True)
    run = cli("ingest", "--kaggle", kaggle, "--out", ro / "ingest", "--params", params_file)
    assert_one_line_exit_2(run, str(ro / "ingest"), "Read-only file system")


def test_full_disk_during_ingest_is_one_line_and_leaves_no_temp_files(tmpfs, kaggle, params_file):
    full = tmpfs("4k")
    (full / "filler").write_bytes(b"\0" * 4096)
    run = cli("ingest", "--kaggle", kaggle, "--out", full / "ingest", "--params", params_file)
    assert_one_line_exit_2(run, "no space left on", str(full / "ingest"))
    assert leftovers(full) == [] and not (full / "ingest" / "manifest.parquet").exists()


def test_full_disk_during_preprocess_leaves_no_workers_and_no_temp_files(tmp_path, tmpfs, kaggle, params_file):
    # Was: SIGBUS with no message, the forkserver and its workers left running, a half-written temp array.
    assert cli("ingest", "--kaggle", kaggle, "--out", tmp_path / "ingest", "--params", params_file).returncode == 0
    small = tmpfs("64k")  # the cache needs 24 x 64 x 64 bytes = 96 KiB
    tag = uuid.uuid4().hex
    run = cli("preprocess", "--manifest", tmp_path / "ingest" / "manifest.parquet", "--out", small / "cache",
              "--params", params_file, env={"FRACTURE_TEST_TAG": tag})  # fmt: skip
    assert_one_line_exit_2(run, "no space left on", str(small / "cache"))
    assert leftovers(small) == [] and not (small / "cache" / "meta.json").exists()
    deadline = time.monotonic() + 10
    while processes_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_tagged(tag) == []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_params) -> Path:
    params = make_params({"base": {"image_size": 64}})
    out = write_model_dir(tmp_path_factory.mktemp("model"), params)
    return out


def test_full_disk_during_batch_predict_keeps_csv_and_jsonl_in_step(tmpfs, kaggle, params_file, model_dir):
    # Was: a traceback, predictions.csv and .jsonl disagreeing, and half a JSON line.
    small = tmpfs("8k")
    run = cli("predict", "--img", kaggle / "images_part1", "--weight", model_dir, "--out", small / "pred",
              "--params", params_file)  # fmt: skip
    assert_one_line_exit_2(run, "no space left on", str(small / "pred"))
    csv_rows = pd.read_csv(small / "pred" / "predictions.csv")
    lines = (small / "pred" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is complete JSON
    assert 0 < len(records) < N_IMAGES
    assert list(csv_rows["path"]) == [r["path"] for r in records]
    assert leftovers(small) == []


# ---------------------------------------------------------------------------------------------- concurrent runs
def hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding the output dir's lock until killed."""
    code = (
        "import sys, time; from filelock import FileLock; from fracture.base.outputs import lock_path\n"
        f"lock = FileLock(str(lock_path({str(out)!r}))); lock.acquire(); print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_at_once_naming_the_directory(tmp_path, kaggle, params_file):
    out = tmp_path / "ingest"
    holder = hold_lock(out)
    try:
        run = cli("ingest", "--kaggle", kaggle, "--out", out, "--params", params_file)
        assert_one_line_exit_2(run, str(out), "another fracture run is writing here")
        assert not (out / "manifest.parquet").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli("ingest", "--kaggle", kaggle, "--out", out, "--params", params_file).returncode == 0


def test_two_preprocess_runs_into_one_cache_leave_one_complete_cache(tmp_path, kaggle, params_file):
    # Was: the loser died of the winner's temp-file cleanup, and the winner could exit 0 without meta.json.
    assert cli("ingest", "--kaggle", kaggle, "--out", tmp_path / "ingest", "--params", params_file).returncode == 0
    manifest = tmp_path / "ingest" / "manifest.parquet"
    cmd = [sys.executable, "-m", "fracture.cli", "preprocess", "--manifest", str(manifest),
           "--out", str(tmp_path / "cache"), "--params", str(params_file)]  # fmt: skip
    env = {**os.environ, "FRACTURE_NO_PROGRESS": "1"}
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    assert all("Traceback" not in err for _, err in results), results
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert "another fracture run is writing here" in err
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    images = np.load(tmp_path / "cache" / "images.npy", mmap_mode="r")
    assert meta["count"] == len(pd.read_parquet(tmp_path / "cache" / "index.parquet")) == images.shape[0] == N_IMAGES
    assert leftovers(tmp_path / "cache") == []
    assert yaml.safe_load((tmp_path / "cache" / "params.yaml").read_text())["base"]["image_size"] == 64


def test_batch_predict_into_a_locked_dir_fails_at_once(tmp_path, kaggle, params_file, model_dir):
    out = tmp_path / "pred"
    holder = hold_lock(out)
    try:
        run = cli("predict", "--img", kaggle / "images_part1", "--weight", model_dir, "--out", out,
                  "--params", params_file)  # fmt: skip
        assert_one_line_exit_2(run, str(out), "another fracture run is writing here")
        assert not (out / "predictions.csv").exists()
    finally:
        holder.kill()
        holder.wait()
