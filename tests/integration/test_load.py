"""Load: batch predict over 10,000 images streams (flat memory), it does not accumulate.

The concurrent-burst test of a served model is tests/integration/test_serving.py
(`test_served_model_under_a_concurrent_burst`, which reports p50/p95 latency).
"""

from __future__ import annotations

import os
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

from fracture.config import dump_params
from tests.conftest import write_model_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_IMAGES = 10_000
SIZE = 64
MAX_GROWTH_MB = 50  # observed 0-17 MB; holding every float input batch (64 px) would add about 130 MB


def write_tiny_pngs(folder: Path, n: int) -> None:
    """`n` distinct 32x32 PNGs (the same pixels; a tEXt chunk numbers each file), 1,000 per sub-folder."""
    img = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    head, tail = buf.tobytes()[:-12], buf.tobytes()[-12:]
    for i in range(n):
        body = b"n\x00" + str(i).encode()
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        sub = folder / f"{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i:05d}.png").write_bytes(head + chunk + tail)


def count_rows(csv_path: Path) -> int:
    try:
        return max(csv_path.read_bytes().count(b"\n") - 1, 0)
    except FileNotFoundError:
        return 0


def sample_rss(proc: subprocess.Popen, csv_path: Path, timeout: float) -> list[tuple[float, int, int]]:
    """(seconds, rows written, RSS bytes) every 0.1 s until the process exits."""
    ps, samples, start = psutil.Process(proc.pid), [], time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail(f"predict did not finish within {timeout} s")
        try:
            rss = ps.memory_info().rss
        except psutil.NoSuchProcess:
            break
        samples.append((time.monotonic() - start, count_rows(csv_path), rss))
        time.sleep(0.1)
    return samples


def test_batch_predict_of_10k_images_keeps_memory_flat(tmp_path, make_params, capsys):
    params = make_params({"base": {"image_size": SIZE}, "predict": {"batch_size": 32}})
    params_path = tmp_path / "params.yaml"
    dump_params(params, params_path)
    model_dir = write_model_dir(tmp_path / "model", params)
    write_tiny_pngs(tmp_path / "images", N_IMAGES)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fracture.cli", "predict", "--img", str(tmp_path / "images"), "--weight",
           str(model_dir), "--out", str(out), "--params", str(params_path)]  # fmt: skip
    # One intra-op thread: on a shared 2-core runner, OpenMP spin-waiting makes small batches many times slower.
    env = {**os.environ, "FRACTURE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = sample_rss(proc, out / "predictions.csv", timeout=900)
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr[-3000:]

    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == N_IMAGES and rows["error"].isna().all() and rows["prob"].between(0, 1).all()
    # Start-up and the first 20% of the rows, then the rest of the stream up to the last row (interpreter
    # shutdown after the last row, which briefly allocates while torch tears down, is not part of the stream).
    warm = [rss for _, n, rss in samples if n < N_IMAGES // 5]
    rest = [rss for _, n, rss in samples if N_IMAGES // 5 <= n < N_IMAGES]
    assert warm and len(rest) >= 5, f"too few samples to judge ({len(warm)} / {len(rest)})"
    baseline, peak = max(warm), max(rest)
    growth_mb = (peak - baseline) / 2**20
    with capsys.disabled():
        print(
            f"\n[load] predict {N_IMAGES} images in {samples[-1][0]:.1f} s: RSS peak in the first 20% "
            f"{baseline / 2**20:.0f} MB, peak after {peak / 2**20:.0f} MB, growth {growth_mb:+.0f} MB "
            f"({len(samples)} samples)"
        )
    trace = ", ".join(f"{t:.1f}s/{n}/{rss / 2**20:.0f}MB" for t, n, rss in samples[:: max(1, len(samples) // 40)])
    assert growth_mb < MAX_GROWTH_MB, f"RSS grew {growth_mb:.0f} MB after the first 20%; time/rows/RSS: {trace}"
