"""The training recipe a cross-validation result speaks for: a hash of what shapes the model, not of the split.

Two models share a recipe when their `train`, `model` and `preprocess` sections (and `base.image_size`, the
preprocess cache's size) are equal: a CV study of that recipe is evidence for a version trained with it, whatever
data split the version was trained on.
"""

from __future__ import annotations

import hashlib
import json

from fracture.config import Params

RECIPE_SECTIONS = ("train", "model", "preprocess")


def recipe_record(params: Params) -> dict:
    """The recipe's values: the three sections and the image size."""
    data = params.to_dict()
    return {**{name: data[name] for name in RECIPE_SECTIONS}, "image_size": data["base"]["image_size"]}


def recipe_hash(params: Params) -> str:
    """sha256 of the recipe (canonical JSON)."""
    return hashlib.sha256(json.dumps(recipe_record(params), sort_keys=True).encode()).hexdigest()
