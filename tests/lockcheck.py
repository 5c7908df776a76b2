"""What a fresh `make demo` must reproduce of a `dvc.lock`, on this machine and on any other.

Two kinds of identity, checked separately:

- **On any x86-64 machine** (`portable`): every stage's command and params, every source dependency (code,
  templates: what git holds) and every output of the stages whose bytes do not depend on the CPU. Those are the
  synthetic data (`synth@*`: float64 rendering, see fracture/synth/render.py), and the dependencies that read them.
  A stale committed `dvc.lock` (code or params changed without re-running the demo) fails here on any machine.
- **On one machine** (`same`): two fresh runs agree byte for byte in every stage. Training, and everything after it,
  runs float math whose last bits depend on the SIMD code paths numpy, OpenCV and PyTorch pick for the CPU, so
  those hashes differ between machines but never between two runs on one.

`python -m tests.lockcheck portable COMMITTED FRESH` and `python -m tests.lockcheck same A B` (COMMITTED may be
`HEAD:dvc.lock`, read through git) print what differs and exit 1; `.ci/run` and tests/e2e use them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# Stages whose outputs are the same bytes on every x86-64 CPU (tests/unit/synth/test_synth_portable.py proves it for
# synth with numpy's and OpenCV's SIMD paths switched off).
PORTABLE_STAGE_PREFIXES = ("synth@",)


def load_lock(spec: str | Path) -> dict[str, Any]:
    """A dvc.lock's stages, from a path or a `REV:path` git object (e.g. `HEAD:dvc.lock`)."""
    text = str(spec)
    path = Path(text)
    if not path.exists() and ":" in text:
        text = subprocess.run(["git", "show", text], capture_output=True, text=True, check=True).stdout
        return yaml.safe_load(text)["stages"]
    return yaml.safe_load(path.read_text())["stages"]


def _portable_stage(name: str) -> bool:
    return name.startswith(PORTABLE_STAGE_PREFIXES)


def _produced_by(stages: Mapping[str, Any]) -> dict[str, str]:
    """Output path -> the stage that writes it."""
    return {out["path"]: name for name, stage in stages.items() for out in stage.get("outs", [])}


def _producer(path: str, producers: Mapping[str, str]) -> str | None:
    """A stage whose output is `path`, a folder above it, or inside it (a folder dep holding outputs); None: source."""
    for out, stage in producers.items():
        if path == out or path.startswith(out.rstrip("/") + "/") or out.startswith(path.rstrip("/") + "/"):
            return stage
    return None


def _entries(items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {item["path"]: item for item in items}


def _hash(entry: Mapping[str, Any] | None) -> tuple:
    return (None,) if entry is None else (entry.get("md5"), entry.get("size"), entry.get("nfiles"))


def portable_problems(committed: Mapping[str, Any], fresh: Mapping[str, Any]) -> list[str]:
    """What a fresh run on any machine changed that it must not (empty: the committed lock holds).

    Compares every stage that ran fresh: command, params, source dependencies, dependencies on portable stages'
    outputs, and the outputs of portable stages. Dependencies on, and outputs of, CPU-dependent stages are skipped.
    """
    producers = _produced_by(fresh)
    problems = []
    for name, stage in fresh.items():
        old = committed.get(name)
        if old is None:
            problems.append(f"{name}: not in the committed dvc.lock (run make demo and commit dvc.lock)")
            continue
        for key in ("cmd", "params"):
            if stage.get(key) != old.get(key):
                problems.append(f"{name}: {key} differs from the committed dvc.lock (stale: run make demo)")
        old_deps, new_deps = _entries(old.get("deps", [])), _entries(stage.get("deps", []))
        for path in sorted(set(old_deps) | set(new_deps)):
            producer = _producer(path, producers)
            if producer is not None and not _portable_stage(producer):
                continue  # an upstream output whose bytes depend on the CPU
            if _hash(old_deps.get(path)) != _hash(new_deps.get(path)):
                what = "source" if producer is None else f"output of {producer}"
                problems.append(f"{name}: dependency {path} ({what}) differs from the committed dvc.lock")
        if _portable_stage(name):
            old_outs, new_outs = _entries(old.get("outs", [])), _entries(stage.get("outs", []))
            for path in sorted(set(old_outs) | set(new_outs)):
                if _hash(old_outs.get(path)) != _hash(new_outs.get(path)):
                    problems.append(f"{name}: output {path} differs: these bytes must not depend on the machine")
    return problems


def same_problems(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Stages that differ between two fresh runs on one machine (empty: the DAG is deterministic here)."""
    names = sorted(set(first) | set(second))
    return [
        f"{name}: differs between two fresh runs on this machine"
        for name in names
        if first.get(name) != second.get(name)
    ]


def main(argv: list[str]) -> int:
    """CLI: `portable COMMITTED FRESH` or `same A B`; prints the problems, exit 1 when there are any."""
    if len(argv) != 3 or argv[0] not in ("portable", "same"):
        print("usage: python -m tests.lockcheck portable|same LOCK_A LOCK_B", file=sys.stderr)
        return 2
    check = portable_problems if argv[0] == "portable" else same_problems
    problems = check(load_lock(argv[1]), load_lock(argv[2]))
    for line in problems:
        print(line)
    what = "on any machine" if argv[0] == "portable" else "on this machine"
    print(f"dvc.lock {argv[0]} check ({what}): {'FAILED' if problems else 'ok'}: {argv[1]} vs {argv[2]}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
