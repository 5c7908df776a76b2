"""Out-of-fold pooling of a cross-validation study (fracture.cv.pool): each image once, each fold's own threshold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.base.io import read_parquet, write_json, write_parquet
from fracture.config import dump_params
from fracture.cv.folds import fold_params
from fracture.cv.pool import FoldResult, oof_predictions, pool_folds, run_pool
from fracture.cv.recipe import recipe_hash
from fracture.stats.operating_points import tune_thresholds


def _rows(prefix: str, labels: list[int], probs: list[float], source: str = "mura") -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({
        "image_id": [f"{prefix}{i}" for i in range(n)],
        "label": labels,
        "prob": probs,
        "cluster_id": [f"{prefix}c{i // 2}" for i in range(n)],  # two images per patient
        "patient_id": [f"{source}:{prefix}p{i // 2}" for i in range(n)],
        "source": source,
    })  # fmt: skip


def _fold(name: str, test: pd.DataFrame, threshold: float, strategy: str = "kfold", recipe: str = "r") -> FoldResult:
    return FoldResult(name=name, strategy=strategy, threshold=threshold, method="youden", test=test, recipe=recipe)


def _random_fold(rng: np.random.Generator, name: str, n: int, source: str = "mura") -> pd.DataFrame:
    labels = rng.integers(0, 2, n)
    probs = np.clip(0.3 * labels + rng.uniform(0, 0.7, n), 0, 1)
    return _rows(name, labels.tolist(), probs.tolist(), source)


def test_every_held_out_image_is_scored_exactly_once(params):
    rng = np.random.default_rng(0)
    folds = [_fold(f"fold-{k}", _random_fold(rng, f"k{k}-", 20), 0.5) for k in range(3)]
    result = pool_folds(folds, params.evaluate, 0)
    ids = pd.concat([f.test["image_id"] for f in folds])
    assert sorted(result.oof["image_id"]) == sorted(ids) and result.oof["image_id"].is_unique
    assert result.pooled["n_images"] == 60 and result.pooled["n_folds"] == 3
    assert result.pooled["n_clusters"] == 30
    assert list(result.folds["fold"]) == ["fold-0", "fold-1", "fold-2"]
    assert result.pooled["auroc_lo"] <= result.pooled["auroc"] <= result.pooled["auroc_hi"]


def test_an_image_held_out_by_two_folds_is_refused(params):
    a = _rows("x", [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    b = _rows("x", [0, 1], [0.3, 0.7])  # x0, x1 again
    with pytest.raises(InputError, match="held out by several folds"):
        oof_predictions([_fold("fold-0", a, 0.5), _fold("fold-1", b, 0.5)])


def test_folds_of_different_recipes_are_not_pooled(params):
    a, b = _rows("a", [0, 1], [0.2, 0.8]), _rows("b", [0, 1], [0.2, 0.8])
    with pytest.raises(InputError, match="differ in recipe"):
        pool_folds([_fold("fold-0", a, 0.5, recipe="r1"), _fold("fold-1", b, 0.5, recipe="r2")], params.evaluate, 0)


def _val_tuned(labels: list[int], probs: list[float]) -> float:
    return tune_thresholds(np.array(labels), np.array(probs), 0.9, n_resamples=0)["youden"]


def test_pooled_decisions_use_each_folds_own_val_tuned_threshold(params):
    # Planted: fold 0's val puts the cut low (0.3), fold 1's val high (0.7). The same held-out score 0.5 is a
    # positive call in fold 0 and a negative call in fold 1.
    t0 = _val_tuned([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    t1 = _val_tuned([0, 0, 1, 1], [0.5, 0.6, 0.7, 0.8])
    assert (t0, t1) == (0.3, 0.7)
    test0 = _rows("a", [1, 1, 0, 0], [0.5, 0.5, 0.1, 0.1])
    test1 = _rows("b", [1, 1, 0, 0], [0.9, 0.9, 0.5, 0.5])
    result = pool_folds([_fold("fold-0", test0, t0), _fold("fold-1", test1, t1)], params.evaluate, 0)
    oof = result.oof.set_index("image_id")
    assert list(oof.loc[["a0", "a1", "b2", "b3"], "decision"]) == [1, 1, 0, 0]
    assert list(oof.loc[["a0", "b2"], "threshold"]) == [0.3, 0.7]
    # every call right with the folds' own thresholds; one pooled threshold could not separate 0.5 from 0.5
    assert result.pooled["sens"] == 1.0 and result.pooled["spec"] == 1.0
    assert list(result.folds["threshold"]) == [0.3, 0.7]
    assert list(result.folds["sens"]) == [1.0, 1.0] and list(result.folds["spec"]) == [1.0, 1.0]


def test_loso_gives_one_row_per_held_out_source(params):
    rng = np.random.default_rng(1)
    sources = ("hospital", "kaggle", "mura")
    folds = [_fold(f"fold-{k}", _random_fold(rng, f"{s}-", 16, s), 0.5, "loso") for k, s in enumerate(sources)]
    result = pool_folds(folds, params.evaluate, 0)
    assert list(result.folds["held_out"]) == list(sources)
    assert result.study["strategy"] == "loso"
    assert list(result.folds["n_images"]) == [16, 16, 16]
    assert list(result.folds["n_patients"]) == [8, 8, 8]


def _eval_dir(tmp_path, params, fold: int, test: pd.DataFrame, threshold: float, strategy: str = "kfold"):
    """A fold's eval dir as evaluate writes it: predictions (val + test rows), thresholds.json, params.yaml."""
    out = tmp_path / f"fold-{fold}"
    val = _rows(f"val{fold}-", [0, 1], [0.2, 0.8]).assign(split="val")
    write_parquet(pd.concat([val, test.assign(split="test")], ignore_index=True), out / "predictions.parquet")
    write_json(out / "thresholds.json", {"frozen": threshold, "method": "youden", "matches_config": True})
    dump_params(fold_params(params, fold, strategy), out / "params.yaml")
    return out


def test_run_pool_writes_the_contract_from_eval_dirs(tmp_path, params):
    dirs = [
        _eval_dir(tmp_path, params, 0, _rows("a", [1, 1, 0, 0], [0.5, 0.6, 0.1, 0.2]), 0.3),
        _eval_dir(tmp_path, params, 1, _rows("b", [1, 1, 0, 0], [0.9, 0.8, 0.5, 0.4]), 0.7),
    ]
    pooled = run_pool(params, dirs, tmp_path / "pool")
    oof = read_parquet(tmp_path / "pool" / "oof_predictions.parquet")
    assert list(oof.columns[:6]) == ["image_id", "fold", "label", "prob", "threshold", "decision"]
    assert len(oof) == 8 and not oof["image_id"].str.startswith("val").any()  # val rows are never pooled
    assert set(oof["fold"]) == {"fold-0", "fold-1"}
    assert {"auroc", "auroc_lo", "auroc_hi", "sens", "spec", "n_images", "n_clusters", "n_folds"} <= set(pooled)
    on_disk = json.loads((tmp_path / "pool" / "pooled.json").read_text())
    assert on_disk["n_images"] == 8 and on_disk["sens"] == 1.0
    assert all(isinstance(v, int | float) or v is None for v in on_disk.values())  # a DVC metric: numbers only
    folds = pd.read_csv(tmp_path / "pool" / "folds.csv")
    assert len(folds) == 2 and list(folds["threshold"]) == [0.3, 0.7]
    study = json.loads((tmp_path / "pool" / "study.json").read_text())
    assert study["recipe"] == recipe_hash(fold_params(params, 0)) and "conditional" in study["ci"]
    roc = pd.read_csv(tmp_path / "pool" / "plots" / "roc.csv")
    assert set(roc["curve"]) == {"pooled", "fold-0", "fold-1"}


def test_recipe_ignores_the_split_but_not_the_training(params):
    assert recipe_hash(fold_params(params, 0)) == recipe_hash(fold_params(params, 2, "loso"))
    other = params.model_copy(update={"train": params.train.model_copy(update={"lr": params.train.lr * 2})})
    assert recipe_hash(fold_params(other, 0)) != recipe_hash(fold_params(params, 0))


def _pool_dir(tmp_path, params):
    dirs = [
        _eval_dir(tmp_path, params, 0, _rows("a", [1, 1, 0, 0], [0.5, 0.6, 0.1, 0.2]), 0.3, "loso"),
        _eval_dir(tmp_path, params, 1, _rows("b", [1, 1, 0, 0], [0.9, 0.8, 0.5, 0.4], "kaggle"), 0.7, "loso"),
    ]
    run_pool(params, dirs, tmp_path / "pool")
    return tmp_path / "pool"


def test_report_section_reads_the_pool_dir(tmp_path, params):
    from fracture.report.cv import cv_context

    (study,) = cv_context([_pool_dir(tmp_path, params)])
    assert study["strategy"] == "loso" and "never saw" in study["title"]
    assert [r["held_out"] for r in study["folds"]] == ["mura", "kaggle"]
    assert study["roc_png"] and "conditional on the fold models" in study["ci_note"]


def test_register_attaches_a_cv_study_only_to_a_model_of_the_same_recipe(tmp_path, params):
    from fracture.registry.cv_evidence import cv_evidence

    pool = _pool_dir(tmp_path, params)
    model = tmp_path / "model"
    dump_params(fold_params(params, 0, "loso"), model / "params.yaml")  # trained on another split: same recipe
    evidence = cv_evidence(model, pool)
    assert evidence["tags"]["cv.strategy"] == "loso" and evidence["tags"]["cv.n_folds"] == "2"
    assert {p.name for p in evidence["files"]} >= {"folds.csv", "oof_predictions.parquet", "pooled.json"}
    other = params.model_copy(update={"train": params.train.model_copy(update={"lr": params.train.lr * 2})})
    dump_params(fold_params(other, 0), model / "params.yaml")
    assert cv_evidence(model, pool) is None


def test_cv_folds_are_checked_against_n_folds(make_params):
    from fracture.base.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cv.folds: \[0, 1, 2\] must be < n_folds 2"):
        make_params({"cv": {"strategy": "loso", "n_folds": 2, "folds": [0, 1, 2]}})
    with pytest.raises(ConfigError, match="distinct"):
        make_params({"cv": {"folds": [0, 0]}})
