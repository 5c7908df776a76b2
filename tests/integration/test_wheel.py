"""The container image's route: `pip install .` then `fracture pipeline compile`, from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv outside the repo with only the built wheel of the project installed.

    The third-party dependencies come from the test environment's site-packages through a `.pth` path line
    (its `.pth` files, among them the editable install's finder, are not processed), so `fracture` can only
    come from the wheel.
    """
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy of what the wheel is built from: building in place would leave build/ in the repo
    for folder in ("fracture", "components", "pipelines"):  # the package and the folders pyproject maps into it
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root), str(src)], root)
    wheel = next(root.glob("fracture_mlops-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)], root)
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_installed_wheel_compiles_the_pipeline_outside_the_repo(wheel_venv: Path, tmp_path: Path) -> None:
    where = _run([str(wheel_venv / "bin" / "python"), "-c", "import fracture; print(fracture.__file__)"], tmp_path)
    assert str(wheel_venv) in where.stdout, f"fracture imported from outside the wheel: {where.stdout}"
    out = tmp_path / "ir.yaml"
    cmd = [str(wheel_venv / "bin" / "fracture"), "pipeline", "compile", "--params", str(REPO / "params.yaml")]
    _run([*cmd, "--out", str(out)], tmp_path)
    ir = next(yaml.safe_load_all(out.read_text()))  # the pipeline spec, then the platform spec
    tasks = ir["root"]["dag"]["tasks"]
    assert {"ingest", "validate", "split", "preprocess", "train", "evaluate"} <= set(tasks)
