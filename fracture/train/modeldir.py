"""The end of a run: thresholds tuned on val, metadata.json (contract, model card, lineage), the model dir."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracture.config import Params
from fracture.io import hash_file, read_json, write_json
from fracture.model import METADATA_FILE, model_config, predict_proba, save_model_dir
from fracture.modelcard import build_model_card
from fracture.operating_points import tune_thresholds
from fracture.tracking import Tracker, git_commit, params_hash, redact
from fracture.train.checkpoint import LoopState, load_checkpoint
from fracture.train.loop import Session


def collect_lineage(params: Params, manifest_path: Path, splits_path: Path) -> dict[str, Any]:
    """The git commit, the manifest / splits / params hashes and the split strategy the model comes from."""
    summary_path = Path(splits_path).with_name("split_summary.json")
    strategy = read_json(summary_path).get("strategy") if summary_path.is_file() else params.split.strategy
    return {
        "git_commit": git_commit(),
        "manifest_hash": hash_file(manifest_path),
        "splits_hash": hash_file(splits_path),
        "params_hash": params_hash(params),
        "split_strategy": strategy,
    }


def build_metadata(
    params: Params, prog: LoopState, config: dict, lineage: dict, rows: pd.DataFrame, tracker: Tracker
) -> dict[str, Any]:
    """metadata.json: the input/output contract, the model card and the lineage."""
    s, mp = params.base.image_size, params.model
    best = prog.best_auroc if math.isfinite(prog.best_auroc) else None
    return {
        "input": {
            "shape": [1, s, s],
            "dtype": "uint8",
            "description": f"1-channel grayscale radiograph, {s} x {s} px, bone bright, windowed and resized by "
            "fracture.imaging.prepare_image; the model sees float (x / 255 - mean) / std",
            "mean": mp.mean,
            "std": mp.std,
        },
        "output": {
            "shape": [1],
            "description": "one logit; sigmoid gives the probability of a visible fracture; "
            f"fracture when probability >= threshold ({config['threshold']:.4f}, {config['threshold_method']} on val)",
        },
        "model_card": build_model_card(params, config, rows, prog.epoch, prog.best_epoch, best),
        "best_epoch": prog.best_epoch,
        "val_auroc": best,
        "epochs_run": prog.epoch,
        **lineage,
        "mlflow_run_id": tracker.run_id if tracker.status == "ok" else None,
        "mlflow_status": tracker.status,
        "mlflow_tracking_uri": redact(tracker.uri),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def best_checkpoint_thresholds(s: Session, images: np.ndarray, rows: pd.DataFrame) -> dict[str, float]:
    """Operating points from the best checkpoint's probabilities on the val split (never test)."""
    s.model.load_state_dict(load_checkpoint(s.out_dir / "checkpoints" / "best.pt"))
    val, mp = rows[rows["split"] == "val"], s.params.model
    probs = predict_proba(
        s.model, images[val["row"].to_numpy()], mp.mean, mp.std, s.params.evaluate.batch_size, s.rt.device
    )
    ep = s.params.evaluate
    # The conservative rule resamples the split's leakage groups, exactly as evaluate re-derives it.
    groups = val["cluster_id"].to_numpy()
    return tune_thresholds(
        val["label"].to_numpy(), probs, ep.target_sensitivity, groups, ep.n_bootstrap, s.params.base.seed
    )


def finalize(s: Session, prog: LoopState, images: np.ndarray, rows: pd.DataFrame, lineage: dict) -> dict[str, Any]:
    """Best weights -> thresholds tuned on val -> model dir (always written) -> MLflow; returns the run summary."""
    params = s.params
    thresholds = best_checkpoint_thresholds(s, images, rows)
    config = model_config(params.model, params.base.image_size, thresholds, params.evaluate.threshold_method)
    final = {"best_val_auroc": prog.best_auroc, "threshold": config["threshold"], "best_epoch": prog.best_epoch}
    s.tracker.log_metrics(final, step=prog.epoch)
    metadata = build_metadata(params, prog, config, lineage, rows, s.tracker)
    history = pd.DataFrame(prog.history, columns=["epoch", "train_loss", "val_loss", "val_auroc", "lr", "seconds"])
    save_model_dir(s.out_dir, s.model.cpu(), config, metadata, history, params)
    names = ("config.json", "metadata.json", "history.csv", "params.yaml")
    s.tracker.log_artifacts([s.out_dir / n for n in names], artifact_path="model_dir")
    s.tracker.end("FINISHED")
    if metadata["mlflow_status"] != s.tracker.status:  # MLflow failed while uploading: say so in the model dir
        metadata = build_metadata(params, prog, config, lineage, rows, s.tracker)
        write_json(s.out_dir / METADATA_FILE, metadata)
    return {
        "model_dir": str(s.out_dir),
        "best_epoch": prog.best_epoch,
        "val_auroc": metadata["val_auroc"],
        "threshold": config["threshold"],
        "threshold_method": config["threshold_method"],
        "epochs_run": prog.epoch,
        "mlflow_run_id": metadata["mlflow_run_id"],
        "mlflow_status": metadata["mlflow_status"],
    }
