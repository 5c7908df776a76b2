"""Benchmark 5: header-only ingest of 32,700 files (the size of the full real dataset) on this machine.

Generated data: 32,700 small 16-bit PNGs (64 x 64 px noise, about 8 KB each) in the GRAZPEDWRI-DX layout
(`images_part1..4`, the last one nested) with a BOM-prefixed 17-column `dataset.csv`; every file differs by a
`tEXt` chunk, so every sha256 differs. Header-only ingest reads the same bytes of a small file as of a 10 MB one
(the IHDR and the last 4 KiB), so its files/s carries over to the real dataset.
Product: `run_ingest` with base.num_workers = 2, with `ingest.hash_contents` false (header only) and true.
Baseline: a bare pool (same workers) that lists the tree and reads each file's first 33 bytes and last 4 KiB.
Hashing is reported separately: MB/s of the product's hashing (`hashlib.file_digest` over each file, as ingest
does) vs coreutils `sha256sum`, both single-process over the same files, from the page cache (no disk reads).
Target: the full real dataset's header-only ingest (32,700 files) in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    FULL_DATASET_FILES,
    Target,
    alternate,
    check,
    demo_params,
    kaggle_stem,
    make_result,
    median,
    quiet_environment,
    scratch_dir,
    spread,
    write_kaggle_table,
)

NAME = "ingest"
FULL = {"files": FULL_DATASET_FILES, "side": 64, "reps": 2}
QUICK = {"files": 200, "side": 16, "reps": 1}
WORKERS = 2
TARGET_SECONDS = 120.0
PARTS = 4


def png_variant(base: bytes, i: int) -> bytes:
    """`base` PNG with a tEXt chunk naming `i` before IEND: same pixels, a different file (and sha256)."""
    body = b"tEXt" + b"bench\x00" + str(i).encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return base[:-12] + chunk + base[-12:]  # the last 12 bytes are the IEND chunk


def generate_tree(root: Path, n: int, side: int) -> tuple[list[Path], int]:
    """N distinct PNGs + dataset.csv in the GRAZPEDWRI-DX layout; returns the paths and their total bytes."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 65_536, size=(side, side), dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", noise)
    if not ok:
        raise RuntimeError("cannot encode the benchmark PNG")
    base = encoded.tobytes()
    stems = [kaggle_stem(1 + i // 6, 1 + (i % 6) // 2, i % 2) for i in range(n)]
    paths, total = [], 0
    for i, stem in enumerate(stems):
        part = 1 + i * PARTS // n
        folder = root / (f"images_part{part}/images_part{part}" if part == PARTS else f"images_part{part}")
        if i == 0 or part != 1 + (i - 1) * PARTS // n:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.png"
        data = png_variant(base, i)
        path.write_bytes(data)
        paths.append(path)
        total += len(data)
    write_kaggle_table(root, stems, [int(i % 7 < 3) for i in range(n)])
    return paths, total


def bare_header(path: str) -> int:
    """Open one file, read its first 33 bytes (signature + IHDR) and last 4 KiB; returns the file size."""
    with open(path, "rb") as fp:
        head = fp.read(33)
        size = os.fstat(fp.fileno()).st_size
        fp.seek(max(0, size - 4096))
        tail = fp.read(4096)
    return size if head and tail else -1


def bare_ingest(root: Path, workers: int) -> int:
    """The I/O floor of header-only ingest: walk the tree, read each file's header and tail over a pool."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".png")]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sizes = list(pool.map(bare_header, paths, chunksize=max(1, min(256, len(paths) // (workers * 8)))))
    return len(sizes)


def product_ingest(params: Any, root: Path, out_dir: Path, expected: int) -> None:
    """`run_ingest` of the Kaggle-layout tree; checks that every file was accepted."""
    from fracture.ingest import run_ingest

    summary = run_ingest(params, out_dir, kaggle_dir=root)
    shutil.rmtree(out_dir, ignore_errors=True)
    if summary["totals"]["total"] != expected:
        raise RuntimeError(f"ingest accepted {summary['totals']['total']} of {expected} files: {summary['totals']}")


def project_hashing(paths: list[Path]) -> None:
    """The product's hashing of each file (`hashlib.file_digest`, as `fracture.ingest.inspect_file` does)."""
    for path in paths:
        with open(path, "rb") as fp:
            hashlib.file_digest(fp, "sha256").hexdigest()


def sha256sum(list_path: Path) -> None:
    """Coreutils sha256sum over the same files (xargs batches them into few processes, run one at a time)."""
    with open(list_path, "rb") as names:
        subprocess.run(["xargs", "-0", "sha256sum"], stdin=names, stdout=subprocess.DEVNULL, check=True)


def measure(work: Path, cfg: dict[str, int]) -> dict[str, Any]:
    """Generate the tree, then time header-only ingest, ingest with hashing, the bare pool, and hashing alone."""
    quiet_environment()
    root = work / "GRAZPEDWRI-DX"
    paths, total = generate_tree(root, cfg["files"], cfg["side"])
    params = {h: demo_params({"base": {"num_workers": WORKERS}, "ingest": {"hash_contents": h}}) for h in (False, True)}
    n = len(paths)
    times = alternate(
        {
            "product_header_only": lambda: product_ingest(params[False], root, work / "out", n),
            "product_with_sha256": lambda: product_ingest(params[True], root, work / "out", n),
            "bare_header_pool": lambda: bare_ingest(root, WORKERS),
        },
        cfg["reps"],
        warmup=False,  # the files were just written: already in the page cache
    )
    list_path = work / "files.txt"
    list_path.write_bytes(b"\0".join(str(p).encode() for p in paths))
    hashing = alternate({"project": lambda: project_hashing(paths), "sha256sum": lambda: sha256sum(list_path)}, 3)
    return {"n": n, "bytes": total, "times": times, "hashing": hashing}


def run(quick: bool = False) -> dict[str, Any]:
    """Files/s of header-only ingest, the projected time for the real dataset, and hashing MB/s vs sha256sum."""
    cfg = QUICK if quick else FULL
    if shutil.which("sha256sum") is None or shutil.which("xargs") is None:
        raise RuntimeError("the ingest benchmark needs coreutils sha256sum and xargs on PATH")
    with scratch_dir(NAME) as work:
        m = measure(work, cfg)
    n, mb = m["n"], m["bytes"] / 1e6
    rate = {k: n / median(v) for k, v in m["times"].items()}
    mb_s = {k: mb / median(v) for k, v in m["hashing"].items()}
    projected = FULL_DATASET_FILES / rate["product_header_only"]
    checks = [
        check(
            "sha256_vs_sha256sum",
            mb_s["project"] / mb_s["sha256sum"],
            Target(0.8, text=">= 0.8 of coreutils sha256sum's MB/s (same files, one process each)"),
            project_mb_s=round(mb_s["project"], 1),
            sha256sum_mb_s=round(mb_s["sha256sum"], 1),
        ),
    ]
    details = {
        "files": n,
        "total_mb": round(mb, 1),
        "mean_file_kb": round(m["bytes"] / n / 1e3, 2),
        "workers": WORKERS,
        "files_per_s": {k: round(v, 1) for k, v in rate.items()},
        "seconds": {k: spread(v) for k, v in m["times"].items()},
        "projected_seconds_for_32700_files": {
            "header_only": round(projected, 1),
            "with_sha256_from_page_cache": round(FULL_DATASET_FILES / rate["product_with_sha256"], 1),
        },
        "hash_mb_per_s": {k: round(v, 1) for k, v in mb_s.items()},
        "hash_seconds": {k: spread(v) for k, v in m["hashing"].items()},
        "hash_note": "page-cache reads, one process each; for real data add the disk's read time of the pixel bytes",
        "baseline": "ProcessPoolExecutor(2) over os.walk: open, read 33 bytes, read the last 4 KiB",
    }
    return make_result(
        NAME,
        "header_only_files_per_s",
        rate["product_header_only"],
        rate["bare_header_pool"],
        "files/s",
        Target(FULL_DATASET_FILES / TARGET_SECONDS, on="value", text="files/s for 32,700 files in under 120 s"),
        details,
        checks=checks,
    )
