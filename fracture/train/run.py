"""`run_train`, the train step: runtime -> data -> session -> MLflow run -> epochs -> model dir."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch.distributed as dist

from fracture.config import Params, dump_params
from fracture.tracking import flatten, short_http_timeouts
from fracture.train.checkpoint import LoopState
from fracture.train.loader import load_training_data
from fracture.train.loop import Session, build_session, fit, maybe_resume
from fracture.train.modeldir import collect_lineage, finalize
from fracture.train.runtime import deterministic, setup_runtime


def _start_tracking(s: Session, prog: LoopState, lineage: dict, rows: pd.DataFrame) -> None:
    s.tracker.start(
        s.params.train.experiment,
        run_name=f"train-{s.out_dir.name}",
        tags={"fracture.step": "train", **{k: str(v) for k, v in lineage.items() if v is not None}},
        resume_run_id=prog.mlflow_run_id,
    )
    prog.mlflow_run_id = s.tracker.run_id
    if not s.tracker.resumed:  # a reopened run has its params already (and MLflow refuses changed values)
        s.tracker.log_params(flatten(s.params.to_dict()))
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
        Summary: model_dir, best_epoch, val_auroc, threshold, threshold_method, epochs_run, mlflow_run_id,
        mlflow_status.
    """
    out_dir = Path(out_dir)
    rt = setup_runtime(params.train)
    try:
        with deterministic(rt.device), short_http_timeouts():
            images, rows = load_training_data(params, Path(manifest_path), Path(splits_path), Path(cache_dir))
            s = build_session(params, rt, images, rows, out_dir)
            prog = maybe_resume(s, resume)
            lineage = collect_lineage(params, Path(manifest_path), Path(splits_path))
            if rt.is_main:
                _start_tracking(s, prog, lineage, rows)
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
