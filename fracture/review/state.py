"""Everything the review app holds while it runs: the cases, the model, the store, the users."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from fracture.review.auth import User
from fracture.review.images import CaseImages


@dataclass
class ReviewState:
    """The app's state (one instance per app)."""

    model_version: str  # the reviewed model's identity: `fracture.model_digest` of its model dir
    model_label: str  # what the reviewer passed (--model), for the page header
    cases: pd.DataFrame
    threshold: float
    images: CaseImages
    engine: Engine
    users: dict[str, User]
    upload_dir: Path
    page_size: int
    session_hours: float
    upload_retention_hours: float
    explain: dict[str, str] = field(default_factory=dict)  # image_id -> precomputed overlay file
    explain_dir: Path | None = None
    levels: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predictor(self) -> Any:
        """The loaded model (fracture.serving.predict.Predictor)."""
        return self.images.predictor
