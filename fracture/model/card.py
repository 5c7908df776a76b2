"""The model card: its fixed text (intended use, limitations) and the card that train writes into metadata.json.

The one home of the card's wording: `train` writes `build_model_card(...)` into the model dir's metadata.json, and
the report shows `INTENDED_USE` once and `card_limitations(card)` (the fixed list plus any other limitation a
model dir's card states).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fracture.config import Params

INTENDED_USE = (
    "Decision support for trained readers of wrist radiographs: a second look that flags images likely to show a "
    "fracture. It is not a diagnosis, must not be used without a clinician reading the image, and is not a "
    "cleared medical device."
)
LIMITATIONS = (
    "MURA labels are per study and mean 'abnormal' (fracture, hardware, degenerative change...), not only "
    "fracture; they are image labels here only by inheritance from the study.",
    "GRAZPEDWRI-DX is paediatric and confounded: casts are on about 41 % of positives vs 3.5 % of negatives, and "
    "follow-up exams dominate the positives. The clinically relevant subset (initial exam, no cast, no metal) is "
    "reported as its own subgroup; read it before the overall figures.",
    "The hospital set is cropped by part and holds offline-augmented copies; copies are grouped with their "
    "original so they never straddle a split.",
    "Grad-CAM maps are coarse (one cell per 32 px of input at the last Swin stage) and show where the model "
    "looks, not why; they are not evidence of a fracture.",
    "Performance is reported for the listed sources, age groups and body parts only; other populations, devices, "
    "projections or modalities are untested.",
)


def data_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Images, positives and patients per (split, source) of the manifest rows training saw."""
    grouped = rows.groupby(["split", "source"], observed=True)
    table = grouped.agg(images=("label", "size"), positives=("label", "sum"), patients=("patient_id", "nunique"))
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in table.reset_index().to_dict("records")
    ]


def build_model_card(
    params: Params, config: dict, rows: pd.DataFrame, epochs_run: int, best_epoch: int, best_auroc: float | None
) -> dict[str, Any]:
    """The model card written into metadata.json.

    Its sections: Data, Preprocessing, Training, Input, Output, Performance, Limitations, Intended use.

    Args:
        params: the resolved params training ran with.
        config: the model dir's config.json (backbone, threshold, threshold_method).
        rows: the train and val manifest rows (test never reaches training).
        epochs_run: epochs trained.
        best_epoch: the epoch whose weights were kept (best val AUROC).
        best_auroc: val AUROC at that epoch, None when it was not finite.
    """
    tp, s = params.train, params.base.image_size
    window = list(params.preprocess.window_percentiles)
    return {
        "Data": {"summary": "train/val splits only (test untouched by training)", "rows": data_rows(rows)},
        "Preprocessing": f"decode (8/16-bit PNG, JPEG, DICOM with VOI LUT), window to percentiles {window}, "
        f"MONOCHROME1 inverted, resize to {s} x {s}, uint8",
        "Training": f"{config['backbone']} (in_chans 1, pretrained={params.model.pretrained}) + MLP head; weighted "
        f"BCE, AdamW lr {tp.lr}, warmup {tp.warmup_epochs} epochs + cosine, {tp.effective_batch_size} images per "
        f"step (batch {tp.batch_size} per process), {epochs_run} of {tp.epochs} epochs, best epoch {best_epoch} "
        "by val AUROC",
        "Input": f"one grayscale wrist radiograph, {s} x {s} uint8 after preprocessing",
        "Output": "probability of a visible fracture and a yes/no decision at the frozen threshold",
        "Performance": {
            "val_auroc": best_auroc,
            "threshold": config["threshold"],
            "threshold_method": config["threshold_method"],
            "note": "test metrics are in the evaluate step's metrics.json",
        },
        "Limitations": list(LIMITATIONS),
        "Intended use": INTENDED_USE,
    }


def card_limitations(card: dict) -> list[str]:
    """`LIMITATIONS`, then any other limitation a model dir's card states (older cards hold one free-text string)."""
    stated = card.get("Limitations") or []
    stated = [stated] if isinstance(stated, str) else [str(item) for item in stated]
    return [*LIMITATIONS, *(item for item in stated if item not in LIMITATIONS)]
