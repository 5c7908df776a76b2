"""Smoke tests of the benchmarks: each CPU benchmark's quick run yields a well-formed record; the pure helpers.

No timed asserts: figures on a shared CI machine are noise. What is checked is the record a reader relies on:
every key present, positive measured numbers, a ratio that is really computed from the two measured numbers,
and a verdict consistent with the stated target.
"""

import json
import math
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import gpu_bench, run_all
from benchmarks.common import RESULT_KEYS, Target, alternate, make_result, speed_ratio

REPO = Path(__file__).resolve().parents[2]


def _check_record(result: dict) -> None:
    assert set(result) == set(RESULT_KEYS)
    assert result["value"] > 0 and result["baseline"] > 0
    higher = result["details"]["higher_is_better"]
    expected = speed_ratio(result["value"], result["baseline"], higher)
    assert result["ratio"] == pytest.approx(expected, rel=2e-3)  # value and baseline are rounded to 4 digits
    target = result["target"]
    measured = result["ratio"] if target["on"] == "ratio" else result["value"]
    main_ok = measured >= target["threshold"] if target["op"] == ">=" else measured <= target["threshold"]
    checks_ok = all(c["meets"] for c in result["details"]["checks"])
    assert result["meets_target"] is (main_ok and checks_ok)
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["cpu_model"]
    json.dumps(run_all.json_safe(result), allow_nan=False)  # strict JSON once NaNs are mapped to null


@pytest.mark.parametrize("name", list(run_all.BENCHMARKS))
def test_quick_run_gives_a_well_formed_record(name):
    result = run_all.run_one(name, quick=True)
    assert "error" not in result["details"], result["details"]
    assert result["name"] == name
    _check_record(result)


def test_run_all_writes_each_result_and_a_summary(tmp_path, capsys):
    code = run_all.main(["--quick", "--only", "bootstrap", "--results-dir", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "bootstrap.json").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["benchmarks"][0]["name"] == "bootstrap"
    assert summary["benchmarks"][0]["ratio"] == record["ratio"]
    assert "bootstrap" in capsys.readouterr().out


def test_a_failing_benchmark_is_recorded_and_sets_the_exit_code(tmp_path, monkeypatch):
    monkeypatch.setitem(run_all.BENCHMARKS, "bootstrap", "benchmarks.no_such_module")
    code = run_all.main(["--quick", "--only", "bootstrap", "--results-dir", str(tmp_path)])
    assert code == 1
    record = json.loads((tmp_path / "bootstrap.json").read_text())
    assert record["meets_target"] is False
    assert "No module named" in record["details"]["error"]
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == ["bootstrap"]


def test_ratio_is_speed_relative_to_the_baseline():
    assert speed_ratio(50.0, 100.0, higher_is_better=True) == 0.5  # half the baseline's rate
    assert speed_ratio(2.0, 40.0, higher_is_better=False) == 20.0  # 20x faster than the baseline's time
    assert math.isnan(speed_ratio(1.0, 0.0, higher_is_better=True))


def test_meets_target_needs_the_main_target_and_every_check():
    checks = [{"name": "scaling", "meets": False}]
    passed = make_result("x", "m", 95.0, 100.0, "images/s", Target(0.9), {})
    failed = make_result("x", "m", 95.0, 100.0, "images/s", Target(0.9), {}, checks=checks)
    on_value = make_result("x", "m", 6.0, 1.0, "s", Target(5.0, op="<=", on="value"), {}, higher_is_better=False)
    assert passed["meets_target"] is True and failed["meets_target"] is False
    assert on_value["meets_target"] is False
    assert not Target(1.0).met(float("nan"))


def test_alternate_interleaves_and_warms_up():
    calls = []
    alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B


def test_ingest_png_variants_differ_in_bytes_not_pixels():
    from benchmarks.bench_ingest import png_variant

    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    base = cv2.imencode(".png", pixels)[1].tobytes()
    a, b = png_variant(base, 1), png_variant(base, 2)
    assert a != b and a.endswith(b"IEND\xaeB`\x82")
    chunk = a[len(base) - 12 : -12]
    assert zlib.crc32(chunk[4:-4]) == int.from_bytes(chunk[-4:], "big")
    decoded = cv2.imdecode(np.frombuffer(a, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, pixels)


def test_h100_feeding_statement_follows_from_the_per_core_rate():
    from benchmarks.bench_loader import feeding_statement

    out = feeding_statement(100.0)
    assert out["h100_images_per_s_needed"] == [554, 633]  # 35 % and 40 % of 989 TFLOP/s at 624.5 GFLOP/image
    assert out["loader_cores_needed"] == [6, 7]
    assert "6-7 loader worker cores" in out["statement"]


def test_mfu_formula():
    assert gpu_bench.mfu(1583.7, 989e12) == pytest.approx(1.0, rel=1e-3)  # the issue's ~1,580 images/s ceiling
    assert gpu_bench.mfu(554.0, 989e12) == pytest.approx(0.35, rel=1e-3)
    assert gpu_bench.mfu(100.0, None) is None
    assert gpu_bench.mfu(300.0, 989e12, gpu_bench.INFER_FLOP_PER_IMAGE) == pytest.approx(
        300 * 208.17e9 / 989e12, rel=1e-4
    )


def test_peak_flops_by_device_name():
    assert gpu_bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_bench.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_bench.peak_flops("Mystery GPU") is None
    assert gpu_bench.peak_flops("Mystery GPU", override_tflops=100) == 100e12


def test_budget_and_figure_lines():
    now = [0.0]
    budget = gpu_bench.Budget(300, clock=lambda: now[0])
    now[0] = 250.0
    assert budget.allows(40) and not budget.allows(60)
    line = json.loads(gpu_bench.figure_line("train", batch=32, images_per_s=512.34567, mfu=0.323456))
    assert line == {"figure": "train", "batch": 32, "images_per_s": 512.3, "mfu": 0.3235}
    assert gpu_bench.percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_gpu_bench_refuses_to_run_without_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_bench_help():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_bench", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--budget-s" in proc.stdout


def test_gpu_bench_figures_on_cpu_with_a_tiny_swin(capsys):
    import torch

    tiny = {
        "name": "swin_tiny_patch4_window7_224",
        "kwargs": {"window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
    }
    sizes = dict(gpu_bench.QUICK, batches=[2], steps=1, infer_batch=2, iters=1, latency_iters=1, cam_batches=[2])
    bench = gpu_bench.Bench(
        gpu_bench.production_params(tiny, 64), torch.device("cpu"), 1e12, gpu_bench.Budget(600), sizes
    )
    gpu_bench.run_figures(bench, [2], compile_=False)
    figures = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["figure"] for f in figures] == ["train", "train", "infer", "infer", "latency", "gradcam"]
    assert [f.get("fused_attn") for f in figures[:2]] == [True, False]
    assert all("error" not in f and "skipped" not in f for f in figures), figures
    assert figures[0]["mfu"] == pytest.approx(figures[0]["images_per_s"] * 624.5e9 / 1e12, rel=1e-3)
    assert figures[-1]["maps"] == [2, 64, 64]
    assert gpu_bench.set_fused_attn(bench.model, True) == 4  # one window attention per block


def test_gpu_bench_watchdog_cuts_an_overrunning_figure_short():
    import time

    with pytest.raises(gpu_bench.BudgetExceeded), gpu_bench.watchdog(1):
        time.sleep(5)
    with gpu_bench.watchdog(5):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed on exit: nothing fires later
