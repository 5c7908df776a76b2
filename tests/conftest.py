"""Shared fixtures: the demo params, and a session-scoped chain of demo artifacts built by the real steps.

The chain (synth -> ingest -> split -> preprocess -> train -> evaluate) is built once per test session on a
small synthetic set, so tests downstream of a step exercise the real upstream code, not hand-made stand-ins.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_KEY = "fracture-test-key-not-secret"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FRACTURE_NO_PROGRESS", "1")
    os.environ.setdefault("FRACTURE_PSEUDONYM_KEY", TEST_KEY)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session", autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never write to the repo's embedded MLflow store from tests."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def demo_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


# Small and fast versions of the demo params for the artifact chain.
TEST_OVERRIDES = {
    "synth": {"n_per_source": 48, "min_side": 128, "max_side": 192},
    "base": {"num_workers": 1},
    "train": {"epochs": 2, "batch_size": 16, "effective_batch_size": 16},
    "evaluate": {"n_bootstrap": 200, "min_subgroup_n": 10},
}


@pytest.fixture(scope="session")
def make_params(demo_params_dict: dict):
    """Factory: demo params with nested overrides, validated."""
    from fracture.config import parse_params

    def factory(overrides: dict | None = None):
        return parse_params(_merge(demo_params_dict, overrides or {}), "test-params")

    return factory


@pytest.fixture(scope="session")
def params(make_params):
    """The demo params, shrunk for tests."""
    return make_params(TEST_OVERRIDES)


@pytest.fixture(scope="session")
def params_file(tmp_path_factory: pytest.TempPathFactory, params) -> Path:
    """The test params written to a file, for CLI tests (`--params`)."""
    from fracture.config import dump_params

    path = tmp_path_factory.mktemp("params") / "params.yaml"
    dump_params(params, path)
    return path


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory: pytest.TempPathFactory, params) -> Path:
    """Synthetic raw data in the three real layouts."""
    from fracture.synth import run_synth

    out = tmp_path_factory.mktemp("raw")
    run_synth(params, out)
    return out


@pytest.fixture(scope="session")
def demo_ingest(tmp_path_factory: pytest.TempPathFactory, params, demo_raw: Path) -> Path:
    """Ingest output dir (manifest.parquet, quarantine.csv, summary.json)."""
    from fracture.ingest import run_ingest

    out = tmp_path_factory.mktemp("ingest")
    run_ingest(
        params,
        out,
        kaggle_dir=demo_raw / "GRAZPEDWRI-DX",
        mura_dir=demo_raw / "MURA-v1.1",
        hospital_dir=demo_raw / "hospital",
    )
    return out


@pytest.fixture(scope="session")
def demo_manifest(demo_ingest: Path) -> Path:
    return demo_ingest / "manifest.parquet"


@pytest.fixture(scope="session")
def demo_splits(tmp_path_factory: pytest.TempPathFactory, params, demo_manifest: Path) -> Path:
    from fracture.split.run import run_split

    out = tmp_path_factory.mktemp("split") / "splits.parquet"
    run_split(params, demo_manifest, out)
    return out


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory, params, demo_manifest: Path) -> Path:
    from fracture.preprocess.run import run_preprocess

    out = tmp_path_factory.mktemp("cache")
    run_preprocess(params, demo_manifest, out)
    return out


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory, params, demo_manifest: Path, demo_splits: Path, demo_cache: Path) -> Path:
    from fracture.train import run_train

    out = tmp_path_factory.mktemp("model")
    run_train(params, demo_manifest, demo_splits, demo_cache, out)
    return out


@pytest.fixture(scope="session")
def demo_eval(tmp_path_factory, params, demo_model, demo_manifest, demo_splits, demo_cache) -> Path:
    from fracture.evaluate import run_evaluate

    out = tmp_path_factory.mktemp("eval")
    run_evaluate(params, demo_model, demo_manifest, demo_splits, demo_cache, out)
    return out


# ------------------------------------------------------------------------------------------- shared factories
UNTRAINED_THRESHOLDS = {"youden": 0.5, "f1_max": 0.45, "target_sensitivity": 0.3, "fixed": 0.5}


def write_model_dir(
    model_dir: Path, params, seed: int = 0, metadata: dict | None = None, thresholds: dict | None = None
) -> Path:  # noqa: ANN001
    """An untrained model dir in the contract format, written through fracture.model.core's own save path.

    The weights are random from `seed`; `params.base.image_size` sets the input size. Predict, serving and the
    registry need only a loadable model in the right format, never a trained one.
    """
    import pandas as pd
    import torch

    from fracture.model.core import build_model, model_config, save_model_dir

    torch.manual_seed(seed)
    size = params.base.image_size
    model = build_model(params.model, size, pretrained=False)
    config = model_config(params.model, size, thresholds or UNTRAINED_THRESHOLDS, "youden")
    history = pd.DataFrame([{"epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_auroc": 0.5, "lr": 1e-3}])
    save_model_dir(Path(model_dir), model, config, metadata or {"val_auroc": 0.5}, history, params)
    return Path(model_dir)


def manifest_row(source: str, path: str, label: int, patient: str | None = None, **extra) -> dict:
    """One manifest row with the contract's columns (schema.MANIFEST_COLUMNS); `extra` sets or overrides any.

    Defaults: a stable 16-hex `image_id` from source and path, patient `<source>:<first path part>`, the image as
    its own study and augmentation group, a 64 x 64 8-bit image whose sha256 is that of `<source>:<path>`.
    """
    import hashlib

    from fracture.contracts.schema import MANIFEST_COLUMNS

    row = dict.fromkeys(MANIFEST_COLUMNS)
    image_id = hashlib.sha256(f"{source}:{path}".encode()).hexdigest()[:16]
    row.update(
        image_id=image_id,
        source=source,
        path=path,
        patient_id=patient if patient is not None else f"{source}:{path.split('/')[0]}",
        study_id=image_id,
        label=label,
        label_source="folder",
        body_part="wrist",
        group_id=image_id,
        width=64,
        height=64,
        bit_depth=8,
        sha256=hashlib.sha256(f"{source}:{path}".encode()).hexdigest(),
    )
    row.update(extra)
    return row
