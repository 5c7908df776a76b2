"""The synthetic demo data is the same bytes on every x86-64 CPU (what lets CI compare it with the committed lock).

numpy and OpenCV choose SIMD code paths per CPU, and their transcendental functions, blur and resize round the
last bit differently on each path. Switching those paths off imitates an older CPU on this one: with the float32
renderer this changed 285 of the demo's 498 files (every one of them in its decoded pixels, by 1 grey level, 4 after
JPEG), so a clean clone on another machine failed CI. tests/lockcheck.py relies on this test for `synth@*`.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# numpy 2.4 dispatch groups above its X86_V2 baseline, and OpenCV's dispatched features above SSE3.
NUMPY_OFF = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
OPENCV_OFF = "SSE4.1,SSE4.2,POPCNT,AVX,FP16,AVX2,FMA3,AVX512-SKX"
PROBE = (
    "import cv2; from numpy._core._multiarray_umath import __cpu_features__ as f; "
    "print(int(f['X86_V3']), int(cv2.checkHardwareSupport(11)), int(cv2.checkHardwareSupport(6)))"
)


def _env(simd_off: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", "OPENCV_CPU_DISABLE")}
    if simd_off:
        env.update(NPY_DISABLE_CPU_FEATURES=NUMPY_OFF, OPENCV_CPU_DISABLE=OPENCV_OFF)
    env["FRACTURE_NO_PROGRESS"] = "1"
    return env


def _synth(out: Path, simd_off: bool) -> dict[str, str]:
    cmd = [sys.executable, "-m", "fracture.cli", "synth", "--out", str(out), "--n-per-source", "30"]
    proc = subprocess.run(cmd, env=_env(simd_off), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_switches_really_turn_the_simd_paths_off():
    """Without this, the test below could pass because the environment variables were ignored."""
    on = subprocess.run([sys.executable, "-c", PROBE], env=_env(False), capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", PROBE], env=_env(True), capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["0", "0", "0"], off.stdout + off.stderr
    # On a CPU without AVX2 there is nothing to switch off: the comparison below is then trivially equal.
    assert on.stdout.split()[2] == "1", "this CPU lacks SSE4.1: the portability test cannot imitate another CPU"


def test_synth_writes_the_same_bytes_with_the_simd_paths_switched_off(tmp_path):
    native = _synth(tmp_path / "native", simd_off=False)
    baseline = _synth(tmp_path / "baseline", simd_off=True)
    assert len(native) > 90
    changed = sorted(name for name in native if native[name] != baseline.get(name))
    assert not changed, f"{len(changed)} of {len(native)} synthetic files depend on the CPU: {changed[:5]}"
