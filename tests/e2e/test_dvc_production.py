"""The real-data route through `dvc repro`, proved without real data.

A small tree in the exact real layouts at realistic image sizes (16-bit GRAZPEDWRI-DX PNGs around 2000 x 2500 px,
8-bit and RGB MURA PNGs, hospital crops with JPEGs and DICOMs) is `dvc add`ed under data/raw as the real datasets
would be; params.yaml becomes configs/production.yaml (the documented switch) with only the sizes shrunk to fit
CI (tiny Swin, 64 px, one epoch). `dvc repro` runs the whole DAG, a second one is a no-op, and one added hospital
image re-runs the stages downstream of the data while preprocess decodes that image only.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fracture.config import load_params
from tests.e2e.conftest import REPO, copy_project, project_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_PER_SOURCE = 16  # the fewest images that hold every layout feature of the synthetic writers
SIDES = {"kaggle": (2000, 2560), "mura": (380, 512), "hospital": (300, 640)}  # px, like the real datasets
RAW = {"kaggle": "data/raw/GRAZPEDWRI-DX", "mura": "data/raw/MURA-v1.1", "hospital": "data/raw/hospital"}
ADDED = "data/raw/hospital/radius/positive/added_case.png"
# Production profile, shrunk in size only: the demo's tiny Swin, 64 px, one epoch, a gate no model fails.
SHRINK = {
    "base": {"image_size": 64, "num_workers": 2},
    "validate": {"image_sample": 8},
    "train": {"epochs": 1, "batch_size": 16, "effective_batch_size": 16, "num_workers": 0},
    "evaluate": {
        "n_bootstrap": 50,
        "min_subgroup_n": 5,
        "gate": {"min_auroc": 0.0, "min_sensitivity": 0.0, "min_specificity": 0.0},
    },
    "explain": {"n_per_category": 1},
}


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_real_layouts(project: Path) -> None:
    """The three datasets under data/raw in their real layouts, with the synthetic writers at real sizes."""
    from fracture.synth.hospital import plan_hospital
    from fracture.synth.kaggle import plan_kaggle
    from fracture.synth.mura import plan_mura
    from fracture.synth.run import SOURCE_CODES, write_source

    demo = load_params(REPO / "params.yaml")
    planners = {"kaggle": plan_kaggle, "mura": plan_mura, "hospital": plan_hospital}
    for name, planner in planners.items():
        rng = np.random.default_rng([7, SOURCE_CODES[name]])
        plan = planner(rng, N_PER_SOURCE, demo.synth.positive_fraction, SIDES[name])
        write_source(project / RAW[name], plan, 7, SOURCE_CODES[name])


def production_params(project: Path) -> None:
    """params.yaml <- configs/production.yaml (the documented switch), shrunk to CI size."""
    prod = yaml.safe_load((project / "configs/production.yaml").read_text())
    demo = yaml.safe_load((project / "params.yaml").read_text())
    model = {**demo["model"], "mean": prod["model"]["mean"], "std": prod["model"]["std"]}
    merged = _merge(prod, {**SHRINK, "model": model})
    (project / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    load_params(project / "params.yaml")  # still a valid profile


def _run(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=project, env=project_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def ran_stages(proc: subprocess.CompletedProcess) -> list[str]:
    """Stage names `dvc repro` ran (not the ones it skipped)."""
    return re.findall(r"Running stage '([^']+)'", proc.stdout)


@pytest.fixture(scope="module")
def production_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with the three datasets DVC-tracked under data/raw and the production profile switched on."""
    project = copy_project(tmp_path_factory.mktemp("production"))
    write_real_layouts(project)
    _run(project, "dvc", "add", *RAW.values())
    production_params(project)
    return project


@pytest.fixture(scope="module")
def first_repro(production_project: Path) -> subprocess.CompletedProcess:
    return _run(production_project, "dvc", "repro")


def test_real_layouts_at_real_sizes(production_project: Path):
    kaggle = next((production_project / RAW["kaggle"]).rglob("*.png"))
    img = cv2.imread(str(kaggle), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and min(img.shape) >= 2000 and max(img.shape) <= 2560
    assert (production_project / RAW["kaggle"] / "dataset.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert any(
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 3
        for p in (production_project / RAW["mura"]).rglob("image*.png")
    )
    assert list((production_project / RAW["hospital"]).rglob("*.dcm"))
    assert all((production_project / f"{raw}.dvc").is_file() for raw in RAW.values())


def test_repro_runs_the_whole_dag_on_the_tracked_data(production_project: Path, first_repro):
    ran = ran_stages(first_repro)
    expected = ["ingest", "validate", "split", "preprocess", "train", "evaluate", "explain", "report", "register"]
    assert sorted(ran) == sorted(expected)  # no synth stage with real data
    model_dir = production_project / "models/production"
    for name in ("model.pt", "config.json", "metadata.json"):
        assert (model_dir / name).is_file()
    for name in ("reports/eval/metrics.json", "reports/report.html", "reports/registration.json"):
        assert (production_project / name).is_file()
    summary = json.loads((production_project / "data/interim/ingest/summary.json").read_text())
    assert set(summary["sources"]) == {"kaggle", "mura", "hospital"}


def test_second_repro_is_a_no_op(production_project: Path, first_repro):
    proc = _run(production_project, "dvc", "repro")
    assert ran_stages(proc) == []
    assert "Data and pipelines are up to date" in proc.stdout


def test_one_added_image_is_the_only_one_decoded(production_project: Path, first_repro):
    from fracture.synth.render import make_radiograph, to_uint8

    rng = np.random.default_rng(99)
    image = make_radiograph(rng, 420, 300, True, lateral=False, cast=False, metal=False)
    assert cv2.imwrite(str(production_project / ADDED), to_uint8(image))
    _run(production_project, "dvc", "add", RAW["hospital"])
    status = _run(production_project, "dvc", "status").stdout
    assert "data/raw/hospital" in status
    proc = _run(production_project, "dvc", "repro")
    expected = ["ingest", "validate", "split", "preprocess", "train", "evaluate", "explain", "report", "register"]
    assert sorted(ran_stages(proc)) == sorted(expected)
    log = proc.stdout + proc.stderr
    cached = re.search(r"preprocess \S+: (\d+) rows cached \((\d+) decoded at [\d.]+ images/s, (\d+) reused\)", log)
    assert cached, log[-3000:]
    rows, decoded, reused = map(int, cached.groups())
    assert decoded == 1 and reused == rows - 1
