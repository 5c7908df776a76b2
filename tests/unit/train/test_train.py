"""The training loop on tiny synthetic caches: learning, determinism, resume, val-only selection, MLflow failure."""

from __future__ import annotations

import json
import math
import re
import socket
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from fracture.base.errors import InputError
from fracture.base.io import write_json, write_manifest, write_parquet
from fracture.contracts.schema import MANIFEST_COLUMNS, coerce_manifest
from fracture.model.core import load_model_dir, predict_proba
from fracture.stats.operating_points import tune_thresholds
from fracture.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_DIGEST_TAG,
    NOTE_TAG,
    git_commit,
    model_digest,
    tracking_uri,
)
from fracture.train import loop as train_loop
from fracture.train import run_train
from fracture.train.loader import pos_weight, select_rows
from fracture.train.optim import lr_factor

SIZE = 32
# Tiny runs: the demo Swin at 32 px (token grids 8, 4, 2, 1), no augmentation unless a test wants it.
TINY = {
    "base": {"image_size": SIZE},
    "train": {
        "epochs": 3,
        "batch_size": 8,
        "effective_batch_size": 8,
        "lr": 0.002,
        "warmup_epochs": 0.5,
        "augment": {"enabled": False},
    },
    "evaluate": {"batch_size": 16},
}


def tiny_images(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """uint8 [N, size, size]: noisy dark background; positives carry a bright bar (an obvious signal)."""
    rng = np.random.default_rng(seed)
    imgs = rng.normal(70, 12, (len(labels), size, size))
    for i in np.flatnonzero(labels):
        r, c = rng.integers(size // 4, size // 2, 2)
        imgs[i, r : r + size // 3, c : c + 3] += 140
    return imgs.clip(0, 255).astype(np.uint8)


def write_tiny_dataset(root: Path, n: dict[str, int] | None = None, size: int = SIZE, seed: int = 0) -> dict:
    """Manifest, splits and a preprocess cache in the contract formats; returns their paths and tables."""
    n = n or {"train": 40, "val": 16, "test": 16}
    split = np.repeat(list(n), list(n.values()))
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.permutation(np.arange(k) % 2) for k in n.values()]).astype(np.int8)
    ids = [f"{i:016x}" for i in range(len(split))]
    source = np.where(split == "test", "kaggle", "mura")
    manifest = pd.DataFrame({c: [None] * len(ids) for c in MANIFEST_COLUMNS})
    manifest = manifest.assign(
        image_id=ids,
        source=source,
        path=[f"img/{i}.png" for i in ids],
        patient_id=[f"{s}:p{i}" for s, i in zip(source, ids, strict=True)],
        study_id=ids,
        label=labels,
        label_source="fracture_visible",
        body_part="wrist",
        group_id=ids,
        width=size,
        height=size,
        bit_depth=8,
        sha256=ids,
    )
    images = tiny_images(labels, size, seed + 1)
    paths = {"manifest": root / "manifest.parquet", "splits": root / "splits.parquet", "cache": root / "cache"}
    write_manifest(coerce_manifest(manifest), paths["manifest"], {"kaggle": str(root), "mura": str(root)})
    splits = pd.DataFrame(
        {
            "image_id": ids,
            "split": split,
            "fold": pd.array([pd.NA] * len(ids), "Int8"),
            "reason": None,
            "cluster_id": pd.array(ids, "string"),  # one image per patient here
        }
    )
    write_parquet(splits, paths["splits"])
    write_cache(paths["cache"], images, ids)
    return {**paths, "images": images, "ids": ids, "labels": labels, "split": split}


def write_cache(cache_dir: Path, images: np.ndarray, ids: list[str]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache_dir / "images.npy", images)
    write_parquet(
        pd.DataFrame({"image_id": ids, "row": np.arange(len(ids), dtype=np.int64), "sha256": ids}),
        cache_dir / "index.parquet",
    )
    write_json(
        cache_dir / "meta.json",
        {"image_size": images.shape[1], "count": len(images), "window_percentiles": [0.5, 99.5], "format": 1},
    )


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core runner, spinning OMP threads make tiny steps ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def offline_mlflow(monkeypatch) -> str:
    uri = closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# ------------------------------------------------------------------------------------------------ pure parts


def test_lr_warms_up_linearly_then_decays_to_zero():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[-1] < 0.01
    assert lr_factor(0, 0, 10) == 1.0


def test_pos_weight_is_negatives_over_positives():
    assert pos_weight(np.array([1, 0, 0, 0])) == 3.0


def test_select_rows_keeps_train_and_val_only(tiny):
    manifest = pd.read_parquet(tiny["manifest"])
    rows = select_rows(manifest, pd.read_parquet(tiny["splits"]), tiny["splits"])
    assert set(rows["split"]) == {"train", "val"}
    assert len(rows) == 56
    assert rows["label"].tolist() == manifest.set_index("image_id").loc[rows["image_id"], "label"].tolist()


def test_select_rows_names_ids_missing_from_manifest(tiny):
    manifest = pd.read_parquet(tiny["manifest"]).iloc[5:]
    with pytest.raises(InputError, match="not in the manifest"):
        select_rows(manifest, pd.read_parquet(tiny["splits"]), tiny["splits"])


# ------------------------------------------------------------------------------------------------ whole runs


def test_learns_signal_and_writes_model_dir(tiny, make_params, tmp_path):
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": 4}})
    out = tmp_path / "model"
    result = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], out)

    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_auroc", "lr"]  # no wall times
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_auroc"].max() > 0.9
    assert result["val_auroc"] == pytest.approx(history["val_auroc"].max())

    # The model dir follows the contract, and the frozen threshold is tuned on val with the best weights.
    for name in ("model.pt", "config.json", "metadata.json", "history.csv", "params.yaml"):
        assert (out / name).is_file(), name
    model, config = load_model_dir(out)
    val = tiny["split"] == "val"
    probs = predict_proba(model, tiny["images"][val], config["mean"], config["std"], 16)
    ep, ids = params.evaluate, np.asarray(tiny["ids"])[val]  # one image per patient: each its own cluster
    expected = tune_thresholds(tiny["labels"][val], probs, ep.target_sensitivity, ids, ep.n_bootstrap, params.base.seed)
    assert config["thresholds"] == pytest.approx(expected)
    assert config["threshold"] == config["thresholds"][params.evaluate.threshold_method]
    assert config["img_size"] == SIZE and config["in_chans"] == 1

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["best_epoch"] == int(history.loc[history["val_auroc"].idxmax(), "epoch"])
    assert meta["input"]["contract"] == "config.json input" and "shape" not in meta["input"]  # said once
    card = meta["model_card"]
    for key in ("Data", "Preprocessing", "Training", "Input", "Output", "Performance", "Limitations", "Intended use"):
        assert card[key], key
    assert "not a diagnosis" in card["Intended use"]
    assert {r["split"] for r in card["Data"]["rows"]} == {"train", "val"}
    assert len(meta["manifest_hash"]) == 64 and len(meta["params_hash"]) == 64 and meta["split_strategy"]

    # The model dir says nothing about the run; the run (the session's sqlite store) points at the model instead.
    assert not {"mlflow_run_id", "mlflow_status", "mlflow_tracking_uri", "created", "git_commit"} & set(meta)
    from fracture.contracts.plan import BLOCK, plan_block

    assert meta[BLOCK] == plan_block(params)  # the analysis plan train locks (fracture.contracts.plan)
    assert result["mlflow_status"] == "ok" and result["model_digest"] == model_digest(out)
    client = mlflow.MlflowClient(tracking_uri())
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[MODEL_DIGEST_TAG] == model_digest(out)
    assert run.data.tags["git_commit"] == (git_commit() or "unknown")  # the commit lives on the run, not the dir
    assert re.fullmatch(rf"train-{meta['params_hash'][:6]}-\d{{8}}T\d{{6}}", run.info.run_name), run.info.run_name
    assert run.data.params["train.lr"] == "0.002"
    assert run.data.tags["manifest_hash"] == meta["manifest_hash"]
    # Per-epoch curves grouped by split; one-off values are tags with 4 significant digits, not one-point charts.
    names = {"train/loss", "val/loss", "val/auroc", "train/lr", "train/epoch_seconds"}
    assert names <= set(run.data.metrics) and not {"val_auroc", "seconds", "best_val_auroc", "threshold"} & set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/auroc")] == [1, 2, 3, 4]
    assert run.data.tags["val/best_auroc"] == f"{history['val_auroc'].max():.4g}"
    assert run.data.tags["threshold"] == f"{config['threshold']:.4g}" and run.data.tags["best_epoch"] == str(
        meta["best_epoch"]
    )
    note = run.data.tags[NOTE_TAG]
    assert f"best val AUROC {history['val_auroc'].max():.4g} at epoch {meta['best_epoch']} of 4" in note
    # The manifest rows train read, as the run's training dataset (name, digest, context).
    (dataset,) = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == ("manifest", meta["manifest_hash"][:32])
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"
    assert client.get_experiment(run.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"params.yaml", "model_dir"}


def test_mlflow_unreachable_still_saves_the_model(tiny, make_params, tmp_path, offline_mlflow):
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": 1}})
    out = tmp_path / "model"
    result = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], out)
    assert result["mlflow_run_id"] is None
    assert result["mlflow_status"].startswith("unreachable: ")
    model, _ = load_model_dir(out)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_mlflow_failing_mid_run_is_recorded_in_metadata(tiny, make_params, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("artifact store went away")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", refuse)
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": 1}})
    result = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "model")
    assert result["mlflow_run_id"] is None
    assert result["mlflow_status"] == "unreachable: ConnectionError: artifact store went away"
    assert (tmp_path / "model" / "model.pt").is_file()


def test_test_split_is_never_read(tiny, make_params, tmp_path, monkeypatch):
    """Same seed -> same weights; and scrambling, dropping or corrupting test rows changes nothing."""
    params = make_params(TINY)
    tracked = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "a")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_uri())
    untracked = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "b")
    assert tracked["mlflow_status"] == "ok" and untracked["mlflow_status"].startswith("unreachable")
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    # The model dir is a pure function of the inputs, with or without an MLflow run: a DVC rerun changes nothing.
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"metadata.json", "history.csv", "checkpoints/last.pt"} <= {str(f) for f in files}
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel

    # A second cache: test images replaced by noise and shuffled, three test rows gone everywhere.
    split, ids = tiny["split"], np.array(tiny["ids"])
    test_idx = np.flatnonzero(split == "test")
    images = tiny["images"].copy()
    images[test_idx] = np.random.default_rng(9).integers(0, 256, images[test_idx].shape, dtype=np.uint8)
    keep = np.ones(len(ids), bool)
    keep[test_idx[:3]] = False
    order = np.r_[
        np.flatnonzero(keep & (split != "test")),
        np.random.default_rng(3).permutation(np.flatnonzero(keep & (split == "test"))),
    ]
    other = tmp_path / "other"
    write_cache(other / "cache", images[order], ids[order].tolist())
    splits = pd.read_parquet(tiny["splits"])
    write_parquet(splits[keep].iloc[::-1], other / "splits.parquet")
    manifest = pd.read_parquet(tiny["manifest"])
    write_manifest(coerce_manifest(manifest[keep]), other / "manifest.parquet", {})
    run_train(params, other / "manifest.parquet", other / "splits.parquet", other / "cache", tmp_path / "c")
    assert_same_weights(tmp_path / "a", tmp_path / "c")
    ha, hc = (pd.read_csv(tmp_path / d / "history.csv") for d in ("a", "c"))
    pd.testing.assert_frame_equal(ha, hc)


def test_resume_after_interruption_matches_uninterrupted_run(tiny, make_params, tmp_path, offline_mlflow, monkeypatch):
    params = make_params({**TINY, "train": {**TINY["train"], "augment": {"enabled": True}}, "model": {"dropout": 0.3}})
    run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "full")

    real_save = train_loop.save_checkpoint

    def crash_after_first_epoch(path: Path, state: dict) -> None:
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 1:
            raise KeyboardInterrupt("simulated kill after epoch 1")

    monkeypatch.setattr(train_loop, "save_checkpoint", crash_after_first_epoch)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], out)
    assert not (out / "model.pt").exists()
    monkeypatch.setattr(train_loop, "save_checkpoint", real_save)

    result = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], out, resume=True)
    assert result["epochs_run"] == 3
    assert_same_weights(tmp_path / "full", out)
    hf, hr = (pd.read_csv(tmp_path / d / "history.csv") for d in ("full", "resumed"))
    pd.testing.assert_frame_equal(hf, hr)


def test_resume_refuses_a_checkpoint_from_other_params(tiny, make_params, tmp_path, offline_mlflow):
    out = tmp_path / "model"
    run_train(
        make_params({**TINY, "train": {**TINY["train"], "epochs": 1}}),
        tiny["manifest"],
        tiny["splits"],
        tiny["cache"],
        out,
    )
    other = make_params({**TINY, "train": {**TINY["train"], "epochs": 1, "lr": 0.01}})
    with pytest.raises(InputError, match="different model/train/data params"):
        run_train(other, tiny["manifest"], tiny["splits"], tiny["cache"], out, resume=True)


def test_early_stopping_on_flat_val_auroc(tiny, make_params, tmp_path, offline_mlflow):
    # lr ~ 0: val AUROC never improves after epoch 1, so patience 1 stops after epoch 2 of 6.
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": 6, "lr": 1e-12, "early_stopping_patience": 1}})
    result = run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "m")
    assert result["epochs_run"] == 2
    assert result["best_epoch"] == 1
    assert math.isfinite(result["val_auroc"])


def test_cache_of_another_image_size_is_refused(tiny, make_params, tmp_path, offline_mlflow):
    params = make_params({**TINY, "base": {"image_size": 64}})
    with pytest.raises(InputError, match="base.image_size is 64"):
        run_train(params, tiny["manifest"], tiny["splits"], tiny["cache"], tmp_path / "m")
