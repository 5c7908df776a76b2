"""One preprocessing contract: a trained model's inputs come from its config.json, never from the current params.

After training, params.yaml is edited (window, image size, normalisation, decode limits, batch sizes); predict,
the MLflow pyfunc (in-process) and evaluate must still give the probabilities they gave before.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.base.io import read_json
from fracture.config import load_params
from fracture.images.decode import prepare_image
from fracture.model.core import CONFIG_FILE, check_cache_contract, input_contract, read_contract
from tests.conftest import REPO

# Every setting the input contract records, changed. 32 px still fits the tiny Swin's geometry.
CHANGED = {
    "base": {"image_size": 32, "num_workers": 1},
    "preprocess": {"window_percentiles": [10.0, 90.0]},
    "ingest": {"max_pixels": 1_000_000_000, "max_side": 50_000, "min_side": 4},
    "model": {"mean": 0.2, "std": 0.9},
    "predict": {"batch_size": 3},
    "train": {"epochs": 2, "batch_size": 16},
    "evaluate": {"n_bootstrap": 200, "min_subgroup_n": 10},
    "synth": {"n_per_source": 48, "min_side": 128, "max_side": 192},
}


@pytest.fixture(scope="module")
def changed(make_params):
    return make_params(CHANGED)


@pytest.fixture(scope="module")
def kaggle_png(demo_raw: Path) -> Path:
    return sorted((demo_raw / "GRAZPEDWRI-DX").rglob("*.png"))[0]  # a 16-bit PNG: the window matters


def test_train_records_the_whole_contract(demo_model: Path, params):
    config = read_json(demo_model / CONFIG_FILE)
    contract = read_contract(config, demo_model / CONFIG_FILE)
    assert contract == input_contract(params, params.base.image_size)
    assert set(config["input"]) >= {"image_size", "channels", "window_percentiles", "decode_limits", "normalisation"}


def test_the_changed_params_would_change_the_input(kaggle_png: Path, params, changed):
    before = prepare_image(kaggle_png, 32, params.preprocess.window_percentiles)
    after = prepare_image(kaggle_png, 32, changed.preprocess.window_percentiles)
    assert not np.array_equal(before, after)  # so the equalities below are not vacuous


def test_predict_ignores_the_current_params(demo_model: Path, kaggle_png: Path, params, changed, tmp_path: Path):
    from fracture.serving.predict import run_predict

    before = run_predict(params, kaggle_png, str(demo_model), out_dir=tmp_path / "a")
    after = run_predict(changed, kaggle_png, str(demo_model), out_dir=tmp_path / "b")
    assert after["prob"] == before["prob"]
    assert after["preprocess"]["window_percentiles"] == list(params.preprocess.window_percentiles)


def test_pyfunc_serves_what_predict_gives(demo_model: Path, kaggle_png: Path, params, tmp_path: Path, monkeypatch):
    from fracture.serving.predict import run_predict
    from fracture.serving.pyfunc import MODEL_DIR_ARTIFACT, PATH_ROOTS_ENV, FracturePyfunc

    monkeypatch.setenv(PATH_ROOTS_ENV, str(kaggle_png.parent))  # the `path` column is off unless a root allows it

    served = FracturePyfunc()
    from fracture.registry.lineage import fingerprint_model_dir

    config = {"fingerprint": fingerprint_model_dir(demo_model)}  # what registration puts in the pyfunc's config
    served.load_context(SimpleNamespace(artifacts={MODEL_DIR_ARTIFACT: str(demo_model)}, model_config=config))
    out = served.predict(None, pd.DataFrame({"path": [str(kaggle_png)] * 4}))
    expected = run_predict(params, kaggle_png, str(demo_model), out_dir=tmp_path)["prob"]
    assert out["probability"].to_numpy() == pytest.approx([expected] * 4, abs=1e-6)


def test_evaluate_ignores_the_current_params(
    demo_model, demo_manifest, demo_splits, demo_cache, demo_eval, changed, tmp_path: Path
):
    from fracture.evaluate import run_evaluate

    run_evaluate(changed, demo_model, demo_manifest, demo_splits, demo_cache, tmp_path / "eval")
    before = pd.read_parquet(demo_eval / "predictions.parquet").set_index("image_id")["prob"]
    after = pd.read_parquet(tmp_path / "eval" / "predictions.parquet").set_index("image_id")["prob"]
    assert after.sort_index().to_numpy() == pytest.approx(before.sort_index().to_numpy(), abs=1e-9)


def test_a_cache_made_another_way_is_refused(params):
    contract = input_contract(params, 64)
    meta = {"image_size": 64, "window_percentiles": [0.5, 99.5]}
    check_cache_contract(contract, meta, Path("cache"))
    with pytest.raises(InputError, match=r"cache: cache images are 32 px"):
        check_cache_contract(contract, {**meta, "image_size": 32}, Path("cache"))
    with pytest.raises(InputError, match=r"cache window_percentiles \[1, 99\] differ"):
        check_cache_contract(contract, {**meta, "window_percentiles": [1, 99]}, Path("cache"))


def test_a_model_dir_without_a_contract_names_the_key(tmp_path: Path):
    with pytest.raises(InputError, match=r"config\.json: no 'input' contract"):
        read_contract({"img_size": 64}, tmp_path / "config.json")
    with pytest.raises(
        InputError, match=r"config\.json: input contract is malformed at input: 'channels' is a required"
    ):
        read_contract({"input": {"image_size": 64}}, tmp_path / "config.json")


def test_the_contract_block_is_checked_against_its_schema(tmp_path: Path):
    """One block, one schema: a wrong type deep inside names its path."""
    from fracture.model.core import CONTRACT_SCHEMA

    good = input_contract(load_params(REPO / "params.yaml"), 64).to_dict()
    assert read_contract({"input": good}, tmp_path / "config.json").image_size == 64
    assert set(CONTRACT_SCHEMA["required"]) <= set(good)
    bad = {**good, "normalisation": {**good["normalisation"], "std": 0}}
    with pytest.raises(InputError, match=r"malformed at input\.normalisation\.std"):
        read_contract({"input": bad}, tmp_path / "config.json")
    bad = {**good, "window_percentiles": [1]}
    with pytest.raises(InputError, match=r"malformed at input\.window_percentiles"):
        read_contract({"input": bad}, tmp_path / "config.json")
