"""Shared benchmark helpers: result records, interleaved timing, machine facts, scratch data, project copies.

Every benchmark returns one record (see `make_result`) whose `ratio` compares the product against a baseline
measured in the same run, on the same data, with repetitions interleaved (A B B A A B ...) so that load from other
processes on a shared machine hits both sides alike; figures are medians of those repetitions.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = (
    "name",
    "metric",
    "value",
    "baseline",
    "ratio",
    "target",
    "meets_target",
    "unit",
    "details",
    "machine",
)
# Swin-L/384 training FLOPs per image (forward + backward, ~3x the 208 GFLOP forward) and H100 SXM dense bf16 peak.
SWIN_L_TRAIN_FLOP = 624.5e9
H100_BF16_PEAK = 989e12
# Dataset sizes (README, "The datasets"): GRAZPEDWRI-DX 20,327 + MURA XR_WRIST 9,752 + 659 + hospital ~2,000.
FULL_DATASET_FILES = 32_700


# ------------------------------------------------------------------------------------------------ result records
@dataclass(frozen=True)
class Target:
    """A target on the record's `ratio` or `value`: `op` is ">=" or "<="."""

    threshold: float
    op: str = ">="
    on: str = "ratio"
    text: str = ""

    def met(self, measured: float) -> bool:
        """Whether `measured` meets the target (NaN never does)."""
        if measured != measured:  # NaN
            return False
        return measured >= self.threshold if self.op == ">=" else measured <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"on": self.on, "op": self.op, "threshold": self.threshold, "text": self.text}


def speed_ratio(value: float, baseline: float, higher_is_better: bool) -> float:
    """How the product compares with the baseline, > 1 = better: value/baseline for rates, baseline/value for times."""
    num, den = (value, baseline) if higher_is_better else (baseline, value)
    return num / den if den > 0 else float("nan")


def check(name: str, measured: float, target: Target, **extra: Any) -> dict[str, Any]:
    """A secondary target of a benchmark (listed in details["checks"], all must hold for meets_target)."""
    return {"name": name, "measured": _round(measured), **target.to_dict(), "meets": target.met(measured), **extra}


def make_result(
    name: str,
    metric: str,
    value: float,
    baseline: float,
    unit: str,
    target: Target,
    details: dict[str, Any],
    *,
    higher_is_better: bool = True,
    checks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One benchmark record; `ratio` = speed_ratio(value, baseline), `meets_target` = main target and all checks."""
    ratio = speed_ratio(value, baseline, higher_is_better)
    main_ok = target.met(ratio if target.on == "ratio" else value)
    checks = checks or []
    details = {
        "ratio_definition": "value / baseline" if higher_is_better else "baseline / value",
        "higher_is_better": higher_is_better,
        **details,
        "checks": checks,
    }
    return {
        "name": name,
        "metric": metric,
        "value": _round(value),
        "baseline": _round(baseline),
        "ratio": _round(ratio),
        "target": target.to_dict(),
        "meets_target": bool(main_ok and all(c["meets"] for c in checks)),
        "unit": unit,
        "details": details,
        "machine": machine_info(),
    }


def _round(x: float, digits: int = 4) -> float:
    if isinstance(x, float) and x == x and abs(x) not in (float("inf"),):
        return float(f"{x:.{digits}g}")
    return x


def machine_info() -> dict[str, Any]:
    """CPU count and model, Python/torch/numpy/OpenCV versions, and the load average while measuring."""
    import cv2
    import numpy as np
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cores_available": cores,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its reaped children (pool workers, once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def alternate(
    cases: Mapping[str, Callable[[], object]],
    reps: int,
    warmup: bool = True,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Time each case `reps` times, interleaved (A B, B A, A B, ...), after one untimed warm-up call of each.

    Args:
        cases: name -> the work to time.
        reps: timed calls per case.
        warmup: make one untimed call of each case first.
        cpu: if given, filled with the CPU seconds of each timed call (this process + reaped children), a
            figure far less sensitive than wall time to other processes on a shared machine.

    Returns:
        case name -> wall seconds of each timed call.
    """
    names = list(cases)
    if warmup:
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            cpu_start = cpu_seconds()
            times[name].append(timed(cases[name]))
            if cpu is not None:
                cpu.setdefault(name, []).append(cpu_seconds() - cpu_start)
    return times


def median(values: list[float]) -> float:
    """Median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    """Min / median / max of repeated timings, rounded, for the details."""
    return {"min": _round(min(values)), "median": _round(median(values)), "max": _round(max(values)), "n": len(values)}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, restoring the previous setting.

    One thread gives per-core figures, and stable ones on a shared machine: with more OpenMP threads than free
    cores, every parallel region waits at its barrier for a descheduled thread (steps then vary up to 10x).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ params, data
def demo_params(overrides: Mapping[str, Any] | None = None) -> Any:
    """The project's params.yaml with nested overrides, validated (fracture.config.Params)."""
    from fracture.config import parse_params

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    return parse_params(merge(data, overrides or {}), "benchmark-params")


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge (overrides win), leaving both inputs untouched."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards (under $FRACTURE_BENCH_TMP when set)."""
    path = Path(tempfile.mkdtemp(prefix=f"fracture-bench-{prefix}-", dir=os.environ.get("FRACTURE_BENCH_TMP")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def quiet_environment() -> None:
    """No progress bars from the package, and a pseudonymisation key for synthetic hospital data."""
    os.environ["FRACTURE_NO_PROGRESS"] = "1"
    os.environ.setdefault("FRACTURE_PSEUDONYM_KEY", "fracture-bench-key-not-secret")


def kaggle_stem(patient: int, study: int, view: int, seed: int = 0) -> str:
    """A GRAZPEDWRI-DX file stem (`PPPP_TTTTTTTTTT_SS_WRI-Lp_Maaa`) for a synthetic image."""
    timehash = (patient * 7_919 + study * 104_729 + seed) % 10**10
    return f"{patient:04d}_{timehash:010d}_{study:02d}_WRI-L{view + 1}_M{8 + patient % 10:03d}"


def write_kaggle_table(root: Path, stems: list[str], labels: list[int]) -> Path:
    """dataset.csv in the real GRAZPEDWRI-DX format (UTF-8 with BOM, 17 columns) for the given stems."""
    from fracture.synth.kaggle import KAGGLE_COLUMNS

    lines = [",".join(KAGGLE_COLUMNS)]
    for stem, label in zip(stems, labels, strict=True):
        patient, _, study, rest = stem.split("_", 3)
        row = {c: "" for c in KAGGLE_COLUMNS}
        row.update(
            filestem=stem,
            patient_id=str(int(patient)),
            study_number=str(int(study)),
            timehash=stem.split("_")[1],
            gender="M",
            age=f"{int(rest[-3:]):.1f}",
            laterality="L",
            projection=rest[5],
            fracture_visible="1" if label else "",
            pixel_spacing="0.144",
            device_manufacturer="Siemens",
        )
        lines.append(",".join(row[c] for c in KAGGLE_COLUMNS))
    path = root / "dataset.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))
    return path


# ---------------------------------------------------------------------------------------------- project copies
def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this tree would hold."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file() and not f.startswith("benchmarks/results/")]


def copy_project(dst: Path) -> Path:
    """Copy the project into `dst` as a fresh git repository with one commit (as tests/e2e/conftest.py does)."""
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dst, check=True)
    return dst


def shrink_params(project: Path, overrides: Mapping[str, Any]) -> None:
    """Edit a copy's params.yaml in place (what `dvc exp run -S` would do)."""
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


def project_env(**extra: str) -> dict[str, str]:
    """Environment for commands in a copy: the venv first on PATH, the copy's embedded MLflow store, no bars."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FRACTURE_NO_PROGRESS"] = "1"
    env.setdefault("FRACTURE_PSEUDONYM_KEY", "fracture-bench-key-not-secret")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    env.update(extra)
    return env
