"""Training: weighted BCE, AdamW, warmup + cosine, AMP, DDP, checkpoint/resume, early stopping on val AUROC.

Only the `train` and `val` rows of the splits are ever selected; the test split is filtered out before the cache
is opened and is never read here. Model choice, early stopping and the operating point use val only. The same
code runs on a laptop CPU, one GPU, or several under `torchrun` (rank 0 writes and logs).

Layout of `out_dir` (the model dir): model.pt, config.json, metadata.json, history.csv, params.yaml, and
checkpoints/{last.pt (everything needed to resume), best.pt (weights of the best val epoch)}.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from fracture.config import Params, TrainParams, dump_params
from fracture.data import BatchPrep, SeededSampler, UnifiedFractureDataset, collate_batch, load_cache
from fracture.errors import InputError
from fracture.io import atomic_path, hash_file, read_json, read_manifest, read_parquet, write_json
from fracture.metrics import tune_thresholds
from fracture.model import METADATA_FILE, build_model, model_config, predict_proba, save_model_dir
from fracture.modelcard import build_model_card
from fracture.parallel import progress
from fracture.tracking import Tracker, flatten, git_commit, params_hash, redact, short_http_timeouts

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "val")  # the only splits this module may select; `test` belongs to evaluate


# ---------------------------------------------------------------- runtime: device, DDP, precision, seeding


@dataclass(frozen=True)
class Runtime:
    """Where this process trains and with which precision."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # autocast dtype, None = full precision
    use_scaler: bool = False  # fp16 needs loss scaling

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and logs to MLflow."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Running under torchrun with more than one process."""
        return self.world_size > 1


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Autocast dtype and whether to scale the loss: bf16 on CUDA for `auto`/`bf16`, fp16 + scaler, off on CPU."""
    if device.type != "cuda" or amp == "off":
        return None, False
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False


def setup_runtime(tp: TrainParams) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype, use_scaler = resolve_amp(tp.amp, device)
    if device.type == "cpu" and tp.amp in ("bf16", "fp16"):
        log.info("train.amp=%s ignored on CPU (full precision)", tp.amp)
    return Runtime(device, rank, world_size, amp_dtype, use_scaler)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic(device: torch.device) -> Any:
    """Deterministic kernels on CPU for the block (restored afterwards); on CUDA speed wins."""
    if device.type != "cpu":
        yield
        return
    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


# ---------------------------------------------------------------- data: train/val rows only


def select_rows(manifest: pd.DataFrame, splits: pd.DataFrame, splits_path: Path) -> pd.DataFrame:
    """Train and val rows with their labels; the test split is dropped first.

    Returns:
        image_id, split, label, source, patient_id; only `train` and `val` rows.
    """
    for col in ("image_id", "split"):
        if col not in splits.columns:
            raise InputError(f"{splits_path}: missing column {col!r}")
    rows = splits.loc[splits["split"].isin(TRAIN_SPLITS), ["image_id", "split"]]
    labels = manifest[["image_id", "label", "source", "patient_id"]]
    rows = rows.merge(labels, on="image_id", how="left", validate="one_to_one")
    unknown = rows["label"].isna()
    if unknown.any():
        raise InputError(
            f"{splits_path}: {int(unknown.sum())} train/val image_id(s) are not in the manifest "
            f"(e.g. {rows.loc[unknown, 'image_id'].iloc[0]}); rerun `fracture split` on this manifest"
        )
    if not rows["split"].isin(TRAIN_SPLITS).all():
        raise RuntimeError("a non-train/val row reached training")
    # Canonical order: the run does not depend on how the splits file happens to be sorted.
    return rows.astype({"label": "int64"}).sort_values("image_id", kind="stable").reset_index(drop=True)


def attach_cache_rows(rows: pd.DataFrame, index: pd.DataFrame, cache_dir: Path) -> pd.DataFrame:
    """Add each image's row in images.npy; images the cache lacks (failed to decode) are dropped with a warning."""
    out = rows.merge(index[["image_id", "row"]], on="image_id", how="left")
    missing = out["row"].isna()
    if missing.any():
        log.warning(
            "%d train/val images are not in the cache %s (see its failures.csv); training without them",
            int(missing.sum()),
            cache_dir,
        )
    out = out.loc[~missing].astype({"row": "int64"}).reset_index(drop=True)
    for split in TRAIN_SPLITS:
        part = out.loc[out["split"] == split, "label"]
        if part.empty:
            raise InputError(f"{cache_dir}: no cached images for the {split} split")
    if not (out.loc[out["split"] == "train", "label"] == 1).any():
        raise InputError("the train split has no positive images: cannot weight the loss or learn the class")
    return out


def load_training_data(
    params: Params, manifest_path: Path, splits_path: Path, cache_dir: Path
) -> tuple[np.ndarray, pd.DataFrame]:
    """Select train/val rows, then open the cache (memory-mapped; only those rows are ever read)."""
    manifest, _ = read_manifest(manifest_path)
    rows = select_rows(manifest, read_parquet(splits_path), splits_path)
    images, index = load_cache(cache_dir)
    if images.shape[1] != params.base.image_size:
        raise InputError(
            f"{cache_dir}: cache holds {images.shape[1]} px images but base.image_size is {params.base.image_size}; "
            "rerun `fracture preprocess` with these params"
        )
    return images, attach_cache_rows(rows, index, cache_dir)


def pos_weight(labels: np.ndarray) -> float:
    """n_neg / n_pos of the train split (BCE weight of the positive class)."""
    n_pos = int((labels == 1).sum())
    return (len(labels) - n_pos) / max(n_pos, 1)


def make_loaders(
    params: Params, images: np.ndarray, rows: pd.DataFrame, rt: Runtime, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """Train loader (sharded, shuffled per epoch, per-sample augmentation seeds) and val loader (full, in order).

    Both yield uint8 `Batch`es read a whole batch at a time; `loader.dataset.prep` turns one into the model's
    (augmented, normalised) float input on the training device.
    """
    tp, mp = params.train, params.model
    train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
    train_ds = UnifiedFractureDataset(images, train["row"], train["label"], mp.mean, mp.std, tp.augment)
    val_ds = UnifiedFractureDataset(images, val["row"], val["label"], mp.mean, mp.std)
    shard = DistributedSampler(train_ds, rt.world_size, rt.rank, shuffle=True, seed=params.base.seed)
    workers = tp.num_workers
    common = {
        "batch_size": tp.batch_size,
        "num_workers": workers,
        "pin_memory": workers > 0 and rt.device.type == "cuda",
        "persistent_workers": workers > 0,
        "collate_fn": collate_batch,
    }
    train_dl = DataLoader(train_ds, sampler=SeededSampler(shard, params.base.seed), generator=generator, **common)
    return train_dl, DataLoader(val_ds, shuffle=False, **common)


# ---------------------------------------------------------------- optimisation


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total_steps` (multiplier of the base lr)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress_, 1.0)))


@dataclass
class Optimisation:
    """Everything that steps: optimizer, per-step schedule, loss scaler, loss."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module


def make_optimisation(model: nn.Module, tp: TrainParams, rt: Runtime, steps_per_epoch: int, pw: float) -> Optimisation:
    """AdamW (fused on CUDA), warmup + cosine per optimizer step, GradScaler for fp16, weighted BCE."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay, fused=True if rt.device.type == "cuda" else None
    )
    total, warmup = tp.epochs * steps_per_epoch, round(tp.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, total))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pw], device=rt.device))
    return Optimisation(opt, sched, scaler, loss_fn)


def _autocast(rt: Runtime) -> Any:
    if rt.amp_dtype is None:
        return nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)


def _to_device(batch: Any, rt: Runtime, prep: BatchPrep | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input and labels on the device: `prep` (scale, augment, normalise there) or ready `(x, y)` batches."""
    if prep is not None:
        return prep(batch, rt.device)
    x, y = batch
    return x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)


def train_one_epoch(
    net: nn.Module, loader: DataLoader, opt: Optimisation, rt: Runtime, tp: TrainParams, prep: BatchPrep | None = None
) -> float:
    """One pass over the train shard with gradient accumulation; returns the mean train loss (all ranks).

    Batches are uint8 `Batch`es turned into input on the device by `prep` (the train dataset's), or, without
    `prep`, ready `(x, y)` pairs of normalised float images and labels. The loss is summed on the device and read
    once at the end (no host sync per step).
    """
    net.train()
    total, count = torch.zeros((), device=rt.device), 0
    n, accum = len(loader), tp.accumulation_steps
    params = [p for p in net.parameters() if p.requires_grad]
    for i, batch in enumerate(progress(loader, total=n, desc="train")):
        x, y = _to_device(batch, rt, prep)
        window = min(accum, n - (i // accum) * accum)  # micro-batches in this accumulation window
        step_now = (i + 1) % accum == 0 or i + 1 == n
        sync = nullcontext() if step_now or not rt.distributed else net.no_sync()
        with sync:
            with _autocast(rt):
                loss = opt.loss_fn(net(x).float(), y)
            opt.scaler.scale(loss / window).backward()
        total += loss.detach() * y.shape[0]
        count += y.shape[0]
        if step_now:
            if tp.grad_clip > 0:
                opt.scaler.unscale_(opt.optimizer)
                nn.utils.clip_grad_norm_(params, tp.grad_clip)
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scheduler.step()
    stats = torch.stack([total, torch.tensor(float(count), device=rt.device)])
    if rt.distributed:
        dist.all_reduce(stats)
    return (stats[0] / stats[1].clamp(min=1)).item()


def validate(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, rt: Runtime, prep: BatchPrep | None = None
) -> tuple[float, float]:
    """Val loss and AUROC over the whole val split (every rank computes the same numbers); batches as in training."""
    model.eval()
    logits, labels = [], []
    with torch.inference_mode(), _autocast(rt):
        for batch in progress(loader, total=len(loader), desc="val"):
            x, y = _to_device(batch, rt, prep)
            logits.append(model(x).float())
            labels.append(y)
    z, y = torch.cat(logits), torch.cat(labels)
    loss = loss_fn(z, y).item()
    return loss, auroc(y.cpu().numpy(), torch.sigmoid(z).cpu().numpy())


def auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC, NaN when `y` holds one class only."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, probs))


# ---------------------------------------------------------------- checkpoints


@dataclass
class LoopState:
    """What the epoch loop has achieved so far (saved in the checkpoint)."""

    epoch: int = 0  # epochs completed
    best_score: float = float("-inf")  # val AUROC; -val loss when val holds one class (AUROC undefined)
    best_auroc: float = float("nan")
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None

    def record(self, row: dict[str, float]) -> bool:
        """Append an epoch's row; return whether it is the new best on val."""
        self.history.append(row)
        score = row["val_auroc"] if math.isfinite(row["val_auroc"]) else -row["val_loss"]
        if self.best_epoch and not score > self.best_score:
            return False
        self.best_score, self.best_auroc, self.best_epoch = score, row["val_auroc"], int(row["epoch"])
        return True

    def should_stop(self, patience: int) -> bool:
        """`patience` epochs without a better val AUROC."""
        return self.epoch - self.best_epoch >= patience


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what rng_state saved."""
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["loader"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True, on CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: many exception types
        raise InputError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None


def resume_key(params: Params) -> str:
    """Hash of the params sections that shape the training run; resuming under different ones is refused."""
    shaping = {k: v for k, v in params.to_dict().items() if k in ("base", "preprocess", "model", "train")}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_payload(
    model: nn.Module, opt: Optimisation, prog: LoopState, generator: torch.Generator, key: str
) -> dict[str, Any]:
    """The full training state after an epoch."""
    return {
        "model": model.state_dict(),
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict(),
        "epoch": prog.epoch,
        "best_score": prog.best_score,
        "best_auroc": prog.best_auroc,
        "best_epoch": prog.best_epoch,
        "history": prog.history,
        "mlflow_run_id": prog.mlflow_run_id,
        "rng": rng_state(generator),
        "params_key": key,
    }


def restore_checkpoint(
    path: Path, model: nn.Module, opt: Optimisation, generator: torch.Generator, key: str
) -> LoopState:
    """Load last.pt into the model, optimizer, scheduler, scaler and RNGs; return the loop's progress."""
    ckpt = load_checkpoint(path)
    if ckpt.get("params_key") != key:
        raise InputError(
            f"{path}: written with different model/train/data params; resume with the same params.yaml "
            "or start afresh without --resume (move the checkpoints away)"
        )
    model.load_state_dict(ckpt["model"])
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    opt.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"], generator)
    log.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return LoopState(
        ckpt["epoch"],
        ckpt["best_score"],
        ckpt["best_auroc"],
        ckpt["best_epoch"],
        ckpt["history"],
        ckpt["mlflow_run_id"],
    )


# ---------------------------------------------------------------- the run


@dataclass
class Session:
    """The objects one training run works with."""

    params: Params
    rt: Runtime
    model: nn.Module  # the plain module (state_dict keys without DDP/compile prefixes)
    net: nn.Module  # what the train step calls: maybe DDP- and compile-wrapped
    opt: Optimisation
    train_dl: DataLoader
    val_dl: DataLoader
    generator: torch.Generator
    out_dir: Path
    key: str
    tracker: Tracker


def _build_session(params: Params, rt: Runtime, images: np.ndarray, rows: pd.DataFrame, out_dir: Path) -> Session:
    seed_everything(params.base.seed)
    generator = torch.Generator().manual_seed(params.base.seed)
    train_dl, val_dl = make_loaders(params, images, rows, rt, generator)
    model = build_model(params.model, params.base.image_size).to(rt.device)
    net: nn.Module = model
    if rt.distributed:
        net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if params.train.compile:
        net = torch.compile(net)
    steps = math.ceil(len(train_dl) / params.train.accumulation_steps)
    pw = pos_weight(rows.loc[rows["split"] == "train", "label"].to_numpy())
    if rt.is_main:
        log.info("train %d / val %d images, pos_weight %.3f", len(train_dl.dataset), len(val_dl.dataset), pw)
    opt = make_optimisation(model, params.train, rt, steps, pw)
    return Session(
        params, rt, model, net, opt, train_dl, val_dl, generator, out_dir, resume_key(params), Tracker(rt.is_main)
    )


def _run_epoch(s: Session, prog: LoopState) -> None:
    """Train, validate, record, checkpoint one epoch (rank 0 writes)."""
    start = time.perf_counter()
    s.train_dl.sampler.set_epoch(prog.epoch)
    train_loss = train_one_epoch(s.net, s.train_dl, s.opt, s.rt, s.params.train, s.train_dl.dataset.prep)
    val_loss, val_auc = validate(s.model, s.val_dl, s.opt.loss_fn, s.rt, s.val_dl.dataset.prep)
    prog.epoch += 1
    row = {
        "epoch": prog.epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_auroc": val_auc,
        "lr": s.opt.scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - start,
    }
    improved = prog.record(row)
    if s.rt.is_main:
        log.info("epoch %(epoch)d: train_loss %(train_loss).4f val_loss %(val_loss).4f val_auroc %(val_auroc).4f", row)
        s.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=prog.epoch)
        if improved:
            save_checkpoint(s.out_dir / "checkpoints" / "best.pt", s.model.state_dict())
        payload = checkpoint_payload(s.model, s.opt, prog, s.generator, s.key)
        save_checkpoint(s.out_dir / "checkpoints" / "last.pt", payload)
    if s.rt.distributed:
        dist.barrier()


def fit(s: Session, prog: LoopState) -> LoopState:
    """Epochs until `train.epochs` or early stopping on val AUROC."""
    tp = s.params.train
    while prog.epoch < tp.epochs and not prog.should_stop(tp.early_stopping_patience):
        _run_epoch(s, prog)
    if prog.should_stop(tp.early_stopping_patience) and prog.epoch < tp.epochs:
        log.info("early stop after epoch %d (best val AUROC at epoch %d)", prog.epoch, prog.best_epoch)
    return prog


def _lineage(params: Params, manifest_path: Path, splits_path: Path) -> dict[str, Any]:
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


def tune_on_val(s: Session, images: np.ndarray, rows: pd.DataFrame) -> dict[str, float]:
    """Operating points from the best checkpoint's probabilities on the val split (never test)."""
    s.model.load_state_dict(load_checkpoint(s.out_dir / "checkpoints" / "best.pt"))
    val, mp = rows[rows["split"] == "val"], s.params.model
    probs = predict_proba(
        s.model, images[val["row"].to_numpy()], mp.mean, mp.std, s.params.evaluate.batch_size, s.rt.device
    )
    return tune_thresholds(val["label"].to_numpy(), probs, s.params.evaluate.target_sensitivity)


def finalize(s: Session, prog: LoopState, images: np.ndarray, rows: pd.DataFrame, lineage: dict) -> dict[str, Any]:
    """Best weights -> thresholds tuned on val -> model dir (always written) -> MLflow; returns the run summary."""
    params = s.params
    thresholds = tune_on_val(s, images, rows)
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
            s = _build_session(params, rt, images, rows, out_dir)
            prog = _maybe_resume(s, resume)
            lineage = _lineage(params, Path(manifest_path), Path(splits_path))
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


def _maybe_resume(s: Session, resume: bool) -> LoopState:
    last = s.out_dir / "checkpoints" / "last.pt"
    if not resume:
        return LoopState()
    if not last.is_file():
        log.warning("--resume: no checkpoint at %s; starting from scratch", last)
        return LoopState()
    return restore_checkpoint(last, s.model, s.opt, s.generator, s.key)
