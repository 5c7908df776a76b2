"""`run_train`, the train step: runtime -> data -> session -> MLflow run -> epochs -> model dir."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch.distributed as dist

from fracture.base.outputs import out_dir_lock, prepare_out_dir
from fracture.config import Params, dump_params
from fracture.tracking import GIT_COMMIT_TAG, flatten, git_commit, run_name, short_http_timeouts
from fracture.train.checkpoint import LoopState
from fracture.train.loader import load_training_data
from fracture.train.loop import Session, build_session, fit, maybe_resume
from fracture.train.modeldir import collect_lineage, finalize
from fracture.train.runtime import deterministic, setup_runtime

# Tags that find the run to reopen on --resume (the checkpoint holds no run id: it is a DVC output, kept reproducible).
CHECKPOINT_TAG = "fracture.checkpoint"
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


def checkpoint_tag(s: Session) -> str:
    """Which checkpoint a training run writes: the resume key and the model dir's absolute path, hashed."""
    return hashlib.sha256(f"{s.key}:{s.out_dir.resolve()}".encode()).hexdigest()[:16]


def training_dataset(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows train reads (train and val), in the columns the Datasets panel describes (schema and size only)."""
    cols = [c for c in ("image_id", "source", "body_part", "label", "split") if c in rows.columns]
    return rows[cols].reset_index(drop=True)


def _start_tracking(s: Session, prog: LoopState, lineage: dict, rows: pd.DataFrame, manifest_path: Path) -> None:
    ckpt = checkpoint_tag(s)
    experiment = s.params.train.experiment
    resume_run_id = s.tracker.find_run(experiment, {CHECKPOINT_TAG: ckpt}, UNFINISHED) if prog.epoch else None
    tags = {"fracture.step": "train", CHECKPOINT_TAG: ckpt, GIT_COMMIT_TAG: git_commit() or "unknown"}
    tags |= {k: str(v) for k, v in lineage.items() if v is not None}
    name = run_name("train", lineage["params_hash"])
    s.tracker.start(experiment, run_name=name, tags=tags, resume_run_id=resume_run_id)
    if not s.tracker.resumed:  # a reopened run has its params already (and MLflow refuses changed values)
        s.tracker.log_params(flatten(s.params.to_dict()))
        s.tracker.log_dataset(
            training_dataset(rows), "manifest", lineage["manifest_hash"], str(manifest_path), "training"
        )
    counts = rows.groupby("split")["label"].agg(["size", "sum"])
    s.tracker.set_tags({f"data.{k}.{c}": int(v) for k, r in counts.iterrows() for c, v in r.items()})
    resolved = s.out_dir / "params.yaml"
    dump_params(s.params, resolved)
    s.tracker.log_artifacts([resolved])


def run_train(
    params: Params, manifest_path: Path, splits_path: Path, cache_dir: Path, out_dir: Path, resume: bool = False
) -> dict:
    """Train on the train split, select on val, and write the model dir (see the module docstring).

    Args:
        params: resolved params.
        manifest_path: manifest.parquet from ingest (labels).
        splits_path: splits.parquet from split (only train/val rows are used).
        cache_dir: preprocess cache.
        out_dir: model dir to write (checkpoints under out_dir/checkpoints).
        resume: continue from out_dir/checkpoints/last.pt when it exists.

    Returns:
        Summary: model_dir, best_epoch, val_auroc, threshold, threshold_method, epochs_run, model_digest,
        mlflow_run_id, mlflow_status (the model dir itself records nothing about the run).
    """
    out_dir = Path(out_dir)
    rt = setup_runtime(params.train)
    try:
        # Two trainings into one model dir would interleave checkpoints and model files: the second refuses at once.
        # Only the main process locks (the others of a torchrun job write nothing there).
        lock = out_dir_lock(prepare_out_dir(out_dir)) if rt.is_main else nullcontext()
        with lock, deterministic(rt.device), short_http_timeouts():
            images, rows = load_training_data(params, Path(manifest_path), Path(splits_path), Path(cache_dir))
            s = build_session(params, rt, images, rows, out_dir)
            prog = maybe_resume(s, resume)
            lineage = collect_lineage(params, Path(manifest_path), Path(splits_path))
            if rt.is_main:
                _start_tracking(s, prog, lineage, rows, Path(manifest_path))
            try:
                fit(s, prog)
            except Exception:
                s.tracker.end("FAILED")
                raise
            except BaseException:
                s.tracker.end("KILLED")
                raise
            result = finalize(s, prog, images, rows, lineage) if rt.is_main else {"model_dir": str(out_dir)}
            if rt.distributed:
                dist.barrier()
            return result
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
