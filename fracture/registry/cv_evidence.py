"""Cross-validation evidence on a registered version: a CV study of the same recipe, attached beside the test result.

A pool dir (`fracture pool`) is evidence for a model only when both come from the same training recipe
(`fracture.cv.recipe`: the train, model and preprocess sections and the image size; the split is not part of it).
The study's files are logged under `evaluation/cv/` and its pooled numbers become `cv.*` version tags, so a
reviewer sees the CV estimate beside the single test result. A study of another recipe is not attached (a warning
says why).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fracture.base.errors import InputError
from fracture.base.io import read_json
from fracture.config import load_params
from fracture.cv import FILES
from fracture.cv.recipe import recipe_hash

log = logging.getLogger(__name__)

CV_DIR = "evaluation/cv"  # the run's artifact dir for the study's files
TAGGED = ("auroc", "auroc_lo", "auroc_hi", "sens", "spec", "n_images", "n_folds")


def cv_evidence(model_dir: Path, cv_dir: Path) -> dict | None:
    """The CV study's tags and files when it is of the model's recipe, else None.

    Raises:
        InputError: the pool dir or the model dir's params.yaml cannot be read.
    """
    cv_dir = Path(cv_dir)
    study, pooled = read_json(cv_dir / FILES["study"]), read_json(cv_dir / FILES["pooled"])
    params_path = Path(model_dir) / "params.yaml"
    if not params_path.is_file():
        raise InputError(f"{params_path}: missing; the model's recipe is unknown, the CV study cannot be matched")
    model_recipe = recipe_hash(load_params(params_path))
    if study.get("recipe") != model_recipe:
        log.warning("%s: a CV study of another training recipe (%s, model %s): not attached",
                    cv_dir, str(study.get("recipe"))[:12], model_recipe[:12])  # fmt: skip
        return None
    tags = {f"cv.{k}": str(pooled[k]) for k in TAGGED if pooled.get(k) is not None}
    tags |= {"cv.strategy": str(study.get("strategy")), "cv.recipe": model_recipe}
    files = [cv_dir / FILES[k] for k in ("folds", "oof", "pooled", "study")]
    return {"tags": tags, "files": [f for f in files if f.is_file()]}


def log_cv_evidence(client: Any, run_id: str, evidence: dict | None) -> dict[str, str]:
    """Upload the study's files to the run; returns the version tags (empty without evidence)."""
    if evidence is None:
        return {}
    for path in evidence["files"]:
        client.log_artifact(run_id, str(path), CV_DIR)
    return {**evidence["tags"], "cv.evidence": f"runs:/{run_id}/{CV_DIR}"}
