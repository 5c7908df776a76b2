"""Tasks: which target split, train and evaluate learn from one manifest (`base.task`); the one owner of that choice.

- `fracture`: a visible fracture (`label`), every source.
- `physeal`: growth plate involved (the manifest's `physeal`: an `E` code with child pattern 1-6, fracture.sources.ao)
  among GRAZPEDWRI-DX images with a visible fracture whose AO codes are all PCCF. Every other row is outside the
  task, with its reason: no AO codes in that source, no visible fracture, a fracture without a code (unknown, not
  negative), a code that is not PCCF or malformed.

Every step reads the manifest through `apply_task`, which replaces `label` with the task's target, so the same code
splits, trains and evaluates every task. A backbone started from another model (`model.init_from`) must not have
trained on a patient the task validates or tests on: `leaked_patients` counts them from the backbone's record of its
training patients (hashed, `patient_hashes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from fracture.base.errors import InputError

TASKS = ("fracture", "physeal")
CLASSES = {"fracture": ("fracture",), "physeal": ("physeal",)}  # the model's output, one probability per class
NEGATIVE = {"fracture": "normal", "physeal": "not physeal"}  # predict's decision below the threshold
DESCRIPTIONS = {
    "fracture": "the probability of a visible fracture",
    "physeal": "the probability that a visible wrist fracture involves the growth plate (physis: Salter-Harris "
    "I-IV, Tillaux, triplane)",
}
TASK_REASON = "task_reason"  # column apply_task adds: why a row is outside the task (null: inside)
_AO_REASONS = {
    "none": "fracture without an AO code (target unknown)",
    "not_pccf": "AO code not PCCF (target unknown)",
    "malformed": "AO code malformed (target unknown)",
}


def task_reasons(df: pd.DataFrame, task: str) -> pd.Series:
    """Why each manifest row is outside `task` (`task physeal: ...`), null for rows inside it."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    reasons = pd.Series(pd.NA, index=df.index, dtype="string")
    if task == "fracture":
        return reasons
    status = df["ao_status"].astype("string")
    why = np.select(
        [
            df["source"].astype("string").ne("kaggle").fillna(True).to_numpy(bool),
            df["label"].ne(1).to_numpy(bool),
            status.isna().to_numpy(bool),
            *(status.eq(s).fillna(False).to_numpy(bool) for s in _AO_REASONS),
            df["physeal"].isna().to_numpy(bool),
        ],
        ["source has no AO codes", "no visible fracture", "no AO parse", *_AO_REASONS.values(), "target unknown"],
        default="",
    )
    return reasons.mask(why != "", pd.Series([f"task {task}: {w}" for w in why], index=df.index, dtype="string"))


def apply_task(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """The manifest as `task` sees it.

    `label` becomes the task's target (0 outside the task) and `task_reason` says why a row is outside (null inside).
    """
    reasons = task_reasons(df, task)
    out = df.copy()
    if task == "physeal":
        target = df["physeal"].astype("boolean").fillna(False).astype("int8")
        out["label"] = target.where(reasons.isna(), 0).astype(df["label"].dtype)
    out[TASK_REASON] = reasons
    return out


def check_in_task(rows: pd.DataFrame, task: str, what: str) -> None:
    """Refuse rows (with `task_reason`) that are outside the task: a splits file made for another task.

    Raises:
        InputError: naming how many rows and the first reason.
    """
    outside = rows[TASK_REASON].notna() if TASK_REASON in rows else pd.Series(False, index=rows.index)
    if outside.any():
        raise InputError(
            f"{what}: {int(outside.sum())} row(s) are outside task {task!r} "
            f"(e.g. {rows.loc[outside, TASK_REASON].iloc[0]}); rerun `fracture split` with base.task: {task}"
        )


def check_split_classes(splits: pd.DataFrame, labels: pd.Series, task: str) -> None:
    """Every scored split of a task needs positives and negatives (per-class metrics and tuned thresholds).

    Args:
        splits: splits.parquet rows, aligned with `labels`.
        labels: the task's target per row.
        task: the task's name (for the message).

    Raises:
        InputError: naming the split and its counts.
    """
    for name in ("train", "val", "test"):
        y = labels[(splits["split"] == name).to_numpy()]
        pos = int((y == 1).sum())
        if pos == 0 or pos == len(y):
            raise InputError(
                f"task {task!r}: the {name} split has {pos} positive and {len(y) - pos} negative image(s); every "
                "split needs both (more data, fewer folds, or another seed)"
            )


def patient_hashes(patients: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated sha256 prefixes (16 hex) of patient ids: a model dir's record of its training patients."""
    return sorted({hashlib.sha256(str(p).encode()).hexdigest()[:16] for p in patients})


def leaked_patients(backbone_patients: Iterable[str], held_out: Iterable[str]) -> int:
    """How many held-out (val / test) patients the backbone trained on; both as `patient_hashes` lists."""
    return len(set(backbone_patients) & set(held_out))
