"""The model card's one text: what train writes into metadata.json and what the report shows."""

from __future__ import annotations

import json

import pandas as pd

from fracture.model.card import INTENDED_USE, LIMITATIONS, build_model_card, card_limitations

SECTIONS = ("Data", "Preprocessing", "Training", "Input", "Output", "Performance", "Limitations", "Intended use")


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "split": ["train", "train", "train", "val"],
            "source": ["mura", "mura", "kaggle", "mura"],
            "label": [1, 0, 1, 0],
            "patient_id": ["p1", "p1", "p2", "p3"],
        }
    )


def test_card_has_every_section_and_the_one_intended_use(params):
    config = {"backbone": params.model.backbone, "threshold": 0.42, "threshold_method": "youden"}
    card = build_model_card(params, config, _rows(), epochs_run=3, best_epoch=2, best_auroc=0.81)
    assert tuple(card) == SECTIONS and card["Intended use"] == INTENDED_USE
    assert card["Limitations"] == list(LIMITATIONS)
    assert card["Data"]["rows"] == [
        {"split": "train", "source": "kaggle", "images": 1, "positives": 1, "patients": 1},
        {"split": "train", "source": "mura", "images": 2, "positives": 1, "patients": 1},
        {"split": "val", "source": "mura", "images": 1, "positives": 0, "patients": 1},
    ]
    assert "3 of" in card["Training"] and "best epoch 2" in card["Training"]
    assert card["Performance"]["val_auroc"] == 0.81 and card["Performance"]["threshold"] == 0.42
    json.dumps(card)  # metadata.json must serialise it


def test_report_limitations_list_each_statement_once():
    assert card_limitations({}) == list(LIMITATIONS)
    assert card_limitations({"Limitations": list(LIMITATIONS)}) == list(LIMITATIONS)
    assert card_limitations({"Limitations": "older card: one string"}) == [*LIMITATIONS, "older card: one string"]
    assert card_limitations({"Limitations": [LIMITATIONS[0], "site-specific"]}) == [*LIMITATIONS, "site-specific"]
