"""Training: weighted BCE, AdamW, warmup + cosine, AMP, DDP, checkpoint/resume, early stopping on val AUROC.

Only the `train` and `val` rows of the splits are ever selected; the test split is filtered out before the cache
is opened and is never read here. Model choice, early stopping and the operating point use val only. The same
code runs on a laptop CPU, one GPU, or several under `torchrun` (rank 0 writes and logs).

Layout of `out_dir` (the model dir): model.pt, config.json, metadata.json, history.csv, params.yaml, and
checkpoints/{last.pt (everything needed to resume), best.pt (weights of the best val epoch)}.

Modules, in the order a run uses them: `runtime` (device, DDP, precision, seeding), `loader` (train/val rows and
DataLoaders), `optim` (optimizer, schedule, scaler, loss), `epoch` (`train_one_epoch`, `score_val`),
`checkpoint` (progress, RNG state, last.pt / best.pt), `loop` (the session and the epoch loop), `modeldir`
(thresholds on val, metadata.json, the model dir), `run` (`run_train`, the step).
"""

from fracture.train.run import run_train

__all__ = ["run_train"]
