"""Starting a task from another model's backbone (`model.init_from`): load it, freeze it first, refuse leaks.

The source is a model dir (the demo's binary `models/demo`, or a registered version downloaded to one). Its
backbone weights start the new model; the head is new. The new model's val and test patients must not be among the
patients the backbone trained on (train and val of its own split, recorded hashed in its metadata.json as
`training_patients_sha256`): a backbone that saw them would leak their labels into the task's evaluation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from fracture.base.errors import InputError
from fracture.base.io import hash_file, read_json
from fracture.config import ModelParams
from fracture.contracts.tasks import leaked_patients, patient_hashes
from fracture.model.core import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, load_backbone_weights

log = logging.getLogger(__name__)

PATIENTS_KEY = "training_patients_sha256"  # metadata.json: hashed patient ids of a model's train and val rows


def read_init_source(init_dir: Path, mp: ModelParams) -> dict[str, Any]:
    """The source model dir's config and metadata, checked against the configured backbone.

    Raises:
        InputError: a file is missing, the backbone differs, or the dir predates the patient record.
    """
    init_dir = Path(init_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE, METADATA_FILE):
        if not (init_dir / name).is_file():
            raise InputError(f"model.init_from {init_dir}: no {name} (a model dir written by `fracture train`)")
    config, metadata = read_json(init_dir / CONFIG_FILE), read_json(init_dir / METADATA_FILE)
    if config.get("backbone") != mp.backbone or dict(config.get("backbone_kwargs") or {}) != dict(mp.backbone_kwargs):
        raise InputError(
            f"model.init_from {init_dir}: its backbone {config.get('backbone')} {config.get('backbone_kwargs')} "
            f"differs from model.backbone {mp.backbone} {dict(mp.backbone_kwargs)}"
        )
    if PATIENTS_KEY not in metadata:
        raise InputError(
            f"model.init_from {init_dir}: metadata.json does not record its training patients ({PATIENTS_KEY}); "
            "retrain it with this version, or the task's val/test patients cannot be checked for leakage"
        )
    return {"config": config, "metadata": metadata}


def check_no_leak(source: dict[str, Any], held_out: pd.Series, init_dir: Path) -> None:
    """Refuse when any val / test patient of this task was in the backbone's training data.

    Raises:
        InputError: naming how many patients.
    """
    n = leaked_patients(source["metadata"][PATIENTS_KEY], patient_hashes(held_out.dropna().astype(str)))
    if n:
        raise InputError(
            f"model.init_from {init_dir}: {n} patient(s) of this task's val/test split were in the backbone's "
            "training data; split so that they are held out there too, or start from a backbone that never saw them"
        )


def init_record(init_dir: Path | None, source: dict[str, Any] | None) -> dict[str, Any] | None:
    """metadata.json's `init_from`: the backbone's weights digest, task and model version lineage (null: scratch)."""
    if init_dir is None or source is None:
        return None
    meta, config = source["metadata"], source["config"]
    return {
        "weights_sha256": hash_file(Path(init_dir) / WEIGHTS_FILE),
        "task": config.get("task", "fracture"),
        "manifest_hash": meta.get("manifest_hash"),
        "splits_hash": meta.get("splits_hash"),
    }


def init_backbone(model: nn.Module, init_dir: Path) -> None:
    """Load the source model's backbone into `model.backbone` (the head stays newly initialised)."""
    load_backbone_weights(model.backbone, Path(init_dir) / WEIGHTS_FILE)
    log.info("backbone initialised from %s; new head", init_dir)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze or unfreeze the backbone (frozen parameters get no gradient, so AdamW leaves them alone)."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
