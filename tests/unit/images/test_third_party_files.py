"""Files nobody here made: ingest -> preprocess -> batch predict over the images that installed packages ship.

pydicom's conformance test files (every one `pydicom.data.get_testdata_files()` lists: odd transfer syntaxes,
palette, multi-frame, 32-bit, deflated, DICOMDIR sets, files without a suffix, non-image objects) and the sample
images of matplotlib, scikit-learn and SciPy go through the real CLI in real processes. No file may be lost, no
traceback printed, preprocess must decode what ingest accepted, and predict must score exactly what ingest
accepted and refuse the rest with the reason ingest quarantined it with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_model_dir

MAX_FILES = 400  # about 230 today; a cap keeps the test well under a minute if a package grows its corpus
RASTER = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def shipped_files() -> list[Path]:
    """The DICOM and image files installed packages ship, in a stable order."""
    import matplotlib
    import pydicom.data

    files = [Path(p) for p in pydicom.data.get_testdata_files()]
    roots = [Path(matplotlib.get_data_path())]
    for name in ("sklearn", "scipy"):
        try:
            roots.append(Path(__import__(name).__file__).parent)
        except ImportError:
            continue
    for root in roots:
        files += [p for p in root.rglob("*") if p.suffix.lower() in RASTER and p.is_file()]
    unique = sorted({p.resolve() for p in files if p.is_file()})
    return unique[:MAX_FILES]


def cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRACTURE_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "fracture.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The shipped files copied flat into a hospital layout (`wrist/positive/`), names kept (suffix or none)."""
    root = tmp_path_factory.mktemp("third_party") / "hospital"
    folder = root / "wrist" / "positive"
    folder.mkdir(parents=True)
    names = {}
    for i, src in enumerate(shipped_files()):
        name = f"{i:03d}_{src.name}"
        shutil.copyfile(src, folder / name)
        names[name] = src
    return root, names


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_params) -> Path:
    params = make_params({"base": {"image_size": 64}})
    out = write_model_dir(tmp_path_factory.mktemp("model"), params)
    return out


def test_shipped_files_go_through_ingest_preprocess_and_predict_with_one_answer(
    tmp_path, corpus, model_dir, make_params
):
    from fracture.config import dump_params

    root, names = corpus
    assert len(names) > 150, "pydicom's test files should be installed"
    params_path = tmp_path / "params.yaml"
    dump_params(make_params({"base": {"image_size": 64, "num_workers": 2}, "predict": {"batch_size": 32}}), params_path)
    runs = {
        "ingest": cli("ingest", "--hospital", root, "--out", tmp_path / "ingest", "--params", params_path),
        "preprocess": cli("preprocess", "--manifest", tmp_path / "ingest" / "manifest.parquet",
                          "--out", tmp_path / "cache", "--params", params_path),
        "predict": cli("predict", "--img", root / "wrist" / "positive", "--weight", model_dir,
                       "--out", tmp_path / "pred", "--params", params_path),
    }  # fmt: skip
    for step, run in runs.items():
        assert run.returncode == 0, (step, run.stderr[-3000:])
        assert "Traceback" not in run.stderr + run.stdout, (step, run.stderr[-3000:])

    manifest = pd.read_parquet(tmp_path / "ingest" / "manifest.parquet")
    quarantine = pd.read_csv(tmp_path / "ingest" / "quarantine.csv", keep_default_na=False)
    accepted = {Path(p).name for p in manifest["path"]}
    refused = {Path(p).name: r for p, r in zip(quarantine["path"], quarantine["reason"], strict=True)}
    assert accepted | set(refused) == set(names) and not accepted & set(refused)  # no file lost
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv", keep_default_na=False)
    assert failures.empty, failures.to_dict("records")  # what ingest accepts, preprocess decodes

    preds = pd.read_csv(tmp_path / "pred" / "predictions.csv", keep_default_na=False)
    assert sorted(Path(p).name for p in preds["path"]) == sorted(names)  # every file has a row
    scored = {Path(p).name for p, e in zip(preds["path"], preds["error"], strict=True) if not e}
    assert scored == accepted
    errors = {Path(p).name: e for p, e in zip(preds["path"], preds["error"], strict=True) if e}
    disagree = {n: (refused[n], errors[n]) for n in errors if not errors[n].endswith(f": {refused[n]}")}
    assert not disagree, disagree
    print(f"{len(names)} files: {len(accepted)} usable everywhere, {len(refused)} refused everywhere, same reasons")
