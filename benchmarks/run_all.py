"""Run the CPU benchmarks (`make bench`), write one JSON per benchmark plus summary.json, print a table.

    .venv/bin/python -m benchmarks.run_all                      # all of them, results in benchmarks/results/
    .venv/bin/python -m benchmarks.run_all --only loader ingest # a subset
    .venv/bin/python -m benchmarks.run_all --quick              # tiny sizes (smoke run), results in a temp dir

Benchmarks run one after another (never in parallel: they would measure each other). A benchmark that fails is
recorded with its error and the others still run; the exit code is 1 if any failed (with --strict also if any
missed its target), else 0. The GPU benchmark is separate: `python -m benchmarks.gpu_bench` on a CUDA machine.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, machine_info

BENCHMARKS = {
    "preprocess": "benchmarks.bench_preprocess",
    "loader": "benchmarks.bench_loader",
    "train_step": "benchmarks.bench_train_step",
    "bootstrap": "benchmarks.bench_bootstrap",
    "ingest": "benchmarks.bench_ingest",
    "dvc_noop": "benchmarks.bench_dvc_noop",
    "review_list": "benchmarks.bench_review_list",
    "tune": "benchmarks.bench_tune",
    "decisions": "benchmarks.bench_decisions",
}
RESULTS_DIR = REPO / "benchmarks" / "results"


def json_safe(obj: Any) -> Any:
    """NaN and infinities -> None (results are strict JSON), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def error_result(name: str, err: BaseException) -> dict[str, Any]:
    """The record of a benchmark that raised: no figures, the error and the end of its traceback."""
    tail = "".join(traceback.format_exception(err)).splitlines()[-12:]
    return {
        "name": name,
        "metric": None,
        "value": None,
        "baseline": None,
        "ratio": None,
        "target": None,
        "meets_target": False,
        "unit": None,
        "details": {"error": f"{type(err).__name__}: {err}", "traceback_tail": tail},
        "machine": machine_info(),
    }


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Import and run one benchmark; its wall time goes into details["wall_s"]."""
    start = time.perf_counter()
    try:
        result = importlib.import_module(BENCHMARKS[name]).run(quick=quick)
    except Exception as err:  # any failure is recorded, the other benchmarks still run
        result = error_result(name, err)
    result["details"]["wall_s"] = round(time.perf_counter() - start, 1)
    return json_safe(result)


def summarise(results: list[dict[str, Any]], quick: bool, seconds: float) -> dict[str, Any]:
    """summary.json: one row per benchmark, whether all met their targets, the machine."""
    order = list(BENCHMARKS)
    results = sorted(results, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    rows = [
        {
            "name": r["name"],
            "metric": r["metric"],
            "value": r["value"],
            "baseline": r["baseline"],
            "ratio": r["ratio"],
            "unit": r["unit"],
            "target": (r["target"] or {}).get("text"),
            "meets_target": r["meets_target"],
            "error": r["details"].get("error"),
            "wall_s": r["details"]["wall_s"],
        }
        for r in results
    ]
    return {
        "quick": quick,
        "all_met": all(r["meets_target"] for r in results),
        "failed": [r["name"] for r in results if r["details"].get("error")],
        "total_s": round(seconds, 1),
        "benchmarks": rows,
        "machine": machine_info(),
    }


def earlier_results(out_dir: Path, ran: list[str] | None) -> list[dict[str, Any]]:
    """With --only: the other benchmarks' results already in `out_dir`, so summary.json still covers them all."""
    from fracture.base.errors import InputError
    from fracture.base.io import read_json

    if not ran:
        return []
    out = []
    for name in BENCHMARKS:
        path = out_dir / f"{name}.json"
        if name not in ran and path.is_file():
            try:
                out.append(read_json(path))
            except InputError:
                continue
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A compact text table of the summary."""
    head = f"{'benchmark':<11} {'value':>12} {'baseline':>12} {'unit':<10} {'ratio':>8}  {'met':<5} {'wall s':>7}"
    lines = [head, "-" * len(head)]
    for r in summary["benchmarks"]:
        if r["error"]:
            lines.append(f"{r['name']:<11} ERROR: {r['error'][:90]}")
            continue
        met = "yes" if r["meets_target"] else "NO"
        lines.append(
            f"{r['name']:<11} {_num(r['value']):>12} {_num(r['baseline']):>12} {r['unit']:<10} "
            f"{_num(r['ratio']):>8}  {met:<5} {r['wall_s']:>7}"
        )
    lines.append(f"total {summary['total_s']} s; all targets met: {summary['all_met']}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; figures mean nothing)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--results-dir", type=Path, default=None, help="default benchmarks/results (quick: a temp dir)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, not only on errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in order, write the JSON results, print the table."""
    from fracture.base.io import write_json

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow configures its own handler from this
    out_dir = args.results_dir or (Path(tempfile.gettempdir()) / "fracture-bench-quick" if args.quick else RESULTS_DIR)
    start, results = time.perf_counter(), []
    for name in args.only or list(BENCHMARKS):
        print(f"[bench] {name} ...", flush=True)
        result = run_one(name, args.quick)
        write_json(out_dir / f"{name}.json", result)
        results.append(result)
    summary = summarise(results + earlier_results(out_dir, args.only), args.quick, time.perf_counter() - start)
    write_json(out_dir / "summary.json", summary)
    print(format_table(summary))
    print(f"results: {out_dir}")
    if summary["failed"]:
        return 1
    return 1 if args.strict and not summary["all_met"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
