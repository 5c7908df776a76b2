"""The search-space file: checked against the params before Ray starts; a sampled recipe is a valid params file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fracture.base.errors import ConfigError
from fracture.config import load_params
from fracture.tune.space import apply_config, dvc_overrides, load_space, ray_param_space, trial_params

REPO = Path(__file__).resolve().parents[3]
GOOD = {
    "scheduler": {"grace_period": 1, "reduction_factor": 2},
    "max_concurrent_trials": 0,
    "resources_per_trial": {"cpu": 1, "gpu": "auto"},
    "space": {"train.lr": {"loguniform": [1.0e-4, 1.0e-2]}, "model.head_hidden": {"choice": [32, 64]}},
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/production.yaml"])
def test_the_shipped_space_fits_both_profiles(params_file):
    space = load_space(REPO / "configs" / "search_space.yaml", load_params(REPO / params_file))
    assert {"train.lr", "train.weight_decay", "model.dropout", "model.head_hidden"} <= set(space.space)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"train.lrr": {"uniform": [0.1, 0.2]}}}, "space.train.lrr: not a key of params.yaml"),
        ({"space": {"evaluate.n_bootstrap": {"choice": [10]}}}, "only the training recipe is searched"),
        ({"space": {"train.epochs": {"choice": [3, 5]}}}, "space.train.epochs: only the training recipe"),
        ({"space": {"train.lr": {"uniform": [0.1]}}}, "uniform takes [low, high]"),
        ({"space": {"train.lr": {"normal": [0.1, 0.2]}}}, "needs exactly one of uniform"),
        ({"scheduler": {"grace_period": 99, "reduction_factor": 2}}, "grace_period 99 exceeds train.epochs"),
        ({"resources_per_trial": {"cpu": 1, "gpu": "many"}}, "resources_per_trial.gpu"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_a_bad_space_is_refused_naming_the_file_and_key(params, tmp_path, change, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(ConfigError) as err:
        load_space(path, params)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_sampled_recipe_is_applied_to_a_copy_and_validated(params):
    base = params.to_dict()
    tuned = trial_params(base, {"train.lr": 0.0005, "train.augment.degrees": 3.0}, "trial x")
    assert tuned.train.lr == 0.0005 and tuned.train.augment.degrees == 3.0
    assert tuned.train.batch_size == params.train.batch_size and base["train"]["lr"] == params.train.lr
    with pytest.raises(ConfigError, match="trial x: train.lr"):
        trial_params(base, {"train.lr": 0.0}, "trial x")


def test_dvc_overrides_set_the_same_values(params):
    config = {"train.lr": 0.0005, "model.head_hidden": 128}
    assert dvc_overrides(config) == ["model.head_hidden=128", "train.lr=0.0005"]
    assert apply_config(params.to_dict(), config)["model"]["head_hidden"] == 128


def test_rules_become_ray_sampling_objects(params, tmp_path):
    from ray.tune.search.sample import Categorical, Float

    space = ray_param_space(load_space(_write(tmp_path, GOOD), params))
    assert isinstance(space["train.lr"], Float) and isinstance(space["model.head_hidden"], Categorical)


def test_a_trial_reports_what_asha_and_mlflow_read():
    from fracture.tune.runs import stopped_early, trial_metrics
    from fracture.tune.trial import epoch_report

    row = {"epoch": 2.0, "train_loss": 0.6, "val_loss": 0.5, "val_auroc": 0.8, "lr": 1e-3}
    report = epoch_report(row, 2.0, n_train=64, loop_done=False, resumed_from=1)
    assert report["epoch"] == 2 and report["images_per_s"] == 32.0 and report["resumed_from"] == 1
    assert trial_metrics(report) == {
        "train/loss": 0.6,
        "val/loss": 0.5,
        "val/auroc": 0.8,
        "train/lr": 1e-3,
        "train/epoch_seconds": 2.0,
        "train/images_per_s": 32.0,
    }
    # Ended while its loop would have gone on: ASHA stopped it. Its loop's own end (last epoch, patience) is not.
    assert stopped_early(report) is True
    assert stopped_early({**report, "loop_done": True}) is False
    assert stopped_early({}) is False  # never reported an epoch (failed before)
