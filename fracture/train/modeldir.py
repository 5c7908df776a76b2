"""The end of a run: thresholds tuned on val, metadata.json (contract, model card, lineage), the model dir.

The model dir is a pure function of the step's inputs (no run id, time or tracking URI in it): on CPU two
trainings on the same inputs write the same bytes, so a rerun leaves dvc.lock unchanged. The MLflow run points
at the model instead, through the model digest tag.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracture.base.io import hash_file, read_json
from fracture.config import Params
from fracture.contracts.artifacts import BEST_CHECKPOINT, HISTORY, MODEL_CONFIG, MODEL_METADATA, SPLIT_SUMMARY_JSON
from fracture.contracts.plan import BLOCK, PLAN_TAG, plan_block
from fracture.contracts.tasks import CLASSES, DESCRIPTIONS, patient_hashes
from fracture.model.card import build_model_card
from fracture.model.core import model_config, predict_proba, save_model_dir
from fracture.stats.operating_points import tune_thresholds
from fracture.tracking import MODEL_DIGEST_TAG, NOTE_TAG, model_digest, params_hash, sig4
from fracture.train.checkpoint import LoopState, load_checkpoint
from fracture.train.init import PATIENTS_KEY, init_record, read_init_source
from fracture.train.loop import Session

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_auroc", "lr"]


def collect_lineage(params: Params, manifest_path: Path, splits_path: Path) -> dict[str, Any]:
    """The manifest / splits / params hashes and the split strategy the model comes from.

    No git commit: the model dir is a DVC output and must be a pure function of its inputs (dvc.lock pins the code
    by hash); the commit is a tag of the training run, and the registered version's `git_commit` comes from it.
    """
    summary_path = Path(splits_path).with_name(SPLIT_SUMMARY_JSON)
    strategy = read_json(summary_path).get("strategy") if summary_path.is_file() else params.split.strategy
    init_dir = Path(params.model.init_from) if params.model.init_from else None
    source = read_init_source(init_dir, params.model) if init_dir else None
    return {
        "manifest_hash": hash_file(manifest_path),
        "splits_hash": hash_file(splits_path),
        "params_hash": params_hash(params),
        "split_strategy": strategy,
        "init_from": init_record(init_dir, source),  # null: trained from `model.pretrained` / scratch
    }


def build_metadata(params: Params, prog: LoopState, config: dict, lineage: dict, rows: pd.DataFrame) -> dict[str, Any]:
    """metadata.json: the input/output contract, the model card and the lineage (nothing run-specific)."""
    s, task = params.base.image_size, params.base.task
    best = prog.best_auroc if math.isfinite(prog.best_auroc) else None
    return {
        # The input contract itself is config.json's `input` block (read_contract); this is its reader's summary.
        "input": {
            "contract": "config.json input",
            "description": f"1-channel grayscale radiograph, {s} x {s} px, bone bright, windowed and resized by "
            "fracture.images.decode.prepare_image; the model sees float (x / 255 - mean) / std",
        },
        "output": {
            "shape": [1],
            "classes": list(CLASSES[task]),
            "description": f"one logit; sigmoid gives {DESCRIPTIONS[task]}; "
            f"{task} when probability >= threshold ({config['threshold']:.4f}, {config['threshold_method']} on val)",
        },
        "model_card": build_model_card(params, config, rows, prog.epoch, prog.best_epoch, best),
        "best_epoch": prog.best_epoch,
        "val_auroc": best,
        "epochs_run": prog.epoch,
        "task": task,
        PATIENTS_KEY: patient_hashes(rows["patient_id"]),  # train + val: what a task started from it must not test on
        **lineage,
        BLOCK: plan_block(params),  # the locked analysis plan (fracture.contracts.plan)
    }


def best_checkpoint_thresholds(s: Session, images: np.ndarray, rows: pd.DataFrame) -> dict[str, float]:
    """Operating points from the best checkpoint's probabilities on the val split (never test)."""
    s.model.load_state_dict(load_checkpoint(s.out_dir / "checkpoints" / BEST_CHECKPOINT))
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


def run_note(prog: LoopState, config: dict, digest: str) -> str:
    """The training run's description (markdown, `mlflow.note.content`): the headline and what to look at next."""
    return (
        f"**Training**: best val AUROC {sig4(prog.best_auroc)} at epoch {prog.best_epoch} of {prog.epoch}; "
        f"threshold {sig4(config['threshold'])} ({config['threshold_method']}, tuned on val).\n\n"
        f"Model digest `{digest[:12]}`. The test metrics, the evaluation report and the validation results are "
        "logged by `fracture register` (on this run when it finds it by the digest)."
    )


def _track_result(s: Session, prog: LoopState, config: dict, digest: str) -> None:
    """One-off results as rounded tags (not single-point charts), the digest, the note; files; end the run."""
    tags = {
        MODEL_DIGEST_TAG: digest,
        "val/best_auroc": sig4(prog.best_auroc),
        "best_epoch": str(prog.best_epoch),
        "threshold": sig4(config["threshold"]),
        "threshold_method": config["threshold_method"],
        PLAN_TAG: plan_block(s.params)["sha256"],
        NOTE_TAG: run_note(prog, config, digest),
    }
    s.tracker.set_tags(tags)
    names = (MODEL_CONFIG, MODEL_METADATA, HISTORY, "params.yaml")
    s.tracker.log_artifacts([s.out_dir / n for n in names], artifact_path="model_dir")
    s.tracker.end("FINISHED")


def finalize(s: Session, prog: LoopState, images: np.ndarray, rows: pd.DataFrame, lineage: dict) -> dict[str, Any]:
    """Best weights -> thresholds tuned on val -> model dir (always written) -> MLflow; returns the run summary."""
    params = s.params
    thresholds = best_checkpoint_thresholds(s, images, rows)
    config = model_config(
        params.model, params.base.image_size, thresholds, params.evaluate.threshold_method, params.base.task
    )
    metadata = build_metadata(params, prog, config, lineage, rows)
    history = pd.DataFrame(prog.history, columns=HISTORY_COLUMNS)
    save_model_dir(s.out_dir, s.model.cpu(), config, metadata, history, params)
    digest = model_digest(s.out_dir)
    _track_result(s, prog, config, digest)
    if s.tracker.status != "ok":
        log.warning("model dir %s written without an MLflow run (%s)", s.out_dir, s.tracker.status)
    return {
        "model_dir": str(s.out_dir),
        "best_epoch": prog.best_epoch,
        "val_auroc": metadata["val_auroc"],
        "threshold": config["threshold"],
        "threshold_method": config["threshold_method"],
        "epochs_run": prog.epoch,
        "model_digest": digest,
        "mlflow_run_id": s.tracker.run_id if s.tracker.status == "ok" else None,
        "mlflow_status": s.tracker.status,
    }
