"""The cross-validation study through DVC (cv/dvc.yaml) on a small copy: out of fold, cached per fold, LOSO too."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from tests.e2e.conftest import WIRING_OVERRIDES, copy_project, demo_env, shrink_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STUDY = "reports/cv"


def _repro(project, *args):
    proc = subprocess.run(["dvc", "repro", *args], cwd=project, env=demo_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def cv_project(tmp_path_factory):
    """A small copy whose 3-fold CV study has run once through `dvc repro cv/dvc.yaml`."""
    project = copy_project(tmp_path_factory.mktemp("cv"))
    cv = {"strategy": "kfold", "n_folds": 3, "folds": [0, 1, 2], "epochs": 1}
    shrink_params(project, {**WIRING_OVERRIDES, "cv": cv})
    _repro(project, "cv/dvc.yaml")
    return project


def _test_ids(project, fold: int) -> set[str]:
    splits = pd.read_parquet(project / STUDY / f"folds/fold-{fold}/splits.parquet")
    return set(splits.loc[splits["split"] == "test", "image_id"])


def test_every_development_image_is_scored_once_at_its_folds_threshold(cv_project):
    oof = pd.read_parquet(cv_project / STUDY / "pool/oof_predictions.parquet")
    assert oof["image_id"].is_unique
    held_out = [_test_ids(cv_project, k) for k in range(3)]
    assert not (held_out[0] & held_out[1]) and not (held_out[1] & held_out[2]) and not (held_out[0] & held_out[2])
    assert set(oof["image_id"]) == set().union(*held_out)  # every development image, each by the fold holding it out
    for k in range(3):
        frozen = json.loads((cv_project / STUDY / f"eval/fold-{k}/thresholds.json").read_text())["frozen"]
        rows = oof[oof["fold"] == f"fold-{k}"]
        assert set(rows["image_id"]) == held_out[k] and (rows["threshold"] == frozen).all()
        assert (rows["decision"] == (rows["prob"] >= frozen).astype(int)).all()
    folds = pd.read_csv(cv_project / STUDY / "pool/folds.csv")
    assert list(folds["fold"]) == ["fold-0", "fold-1", "fold-2"]
    pooled = json.loads((cv_project / STUDY / "pool/pooled.json").read_text())
    assert pooled["n_images"] == len(oof) and pooled["n_folds"] == 3


def test_second_cv_repro_is_a_no_op_and_a_change_to_one_fold_reruns_that_fold_only(cv_project):
    out = _repro(cv_project, "cv/dvc.yaml")
    assert "Data and pipelines are up to date" in out and "Running stage" not in out
    history = cv_project / STUDY / "models/fold-1/history.csv"  # a change that touches fold 1 only
    text = history.read_text()
    history.write_text(text + "\n")
    try:
        status = subprocess.run(["dvc", "status", "cv/dvc.yaml"], cwd=cv_project, env=demo_env(), capture_output=True,
                                text=True).stdout  # fmt: skip
    finally:
        history.write_text(text)
    stale = {line.rstrip(":") for line in status.splitlines() if line.startswith("cv/dvc.yaml:")}
    assert stale == {"cv/dvc.yaml:train@1", "cv/dvc.yaml:evaluate@1"}, status
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=cv_project, env=demo_env(), capture_output=True,
                           text=True)  # fmt: skip
    assert "reports/cv/pool/pooled.json" in shown.stdout, shown.stderr[-2000:]


def test_loso_is_the_same_fan_out_with_one_row_per_source(cv_project):
    params = yaml.safe_load((cv_project / "params.yaml").read_text())
    shrink_params(cv_project, {"cv": {"strategy": "loso", "folds": [0, 1, 2]}})
    try:
        out = _repro(cv_project, "cv/dvc.yaml")
        assert "Running stage 'cv/dvc.yaml:train@2'" in out
        folds = pd.read_csv(cv_project / STUDY / "pool/folds.csv")
        assert list(folds["held_out"]) == ["hospital", "kaggle", "mura"]  # the transfer table
        study = json.loads((cv_project / STUDY / "pool/study.json").read_text())
        assert study["strategy"] == "loso"
    finally:
        (cv_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
