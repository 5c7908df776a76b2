"""A tiny review setup built from real artifacts: an untrained model dir, source PNGs (8- and 16-bit), a manifest
with its roots, a preprocess cache decoded by the model's own contract, an eval dir, and a users file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tests.conftest import manifest_row, write_model_dir

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


def source_image(rng: np.random.Generator, deep: bool) -> np.ndarray:
    """A 96 x 80 radiograph-like image: a bright bar (bone) on noise; 16-bit when `deep`."""
    img = rng.normal(0.25, 0.05, (96, 80)).clip(0, 1)
    img[20:76, 30:50] += 0.5
    img = img.clip(0, 1)
    return (img * 4095).astype(np.uint16) if deep else (img * 255).astype(np.uint8)


def write_review_inputs(root: Path, params, n: int = 24, seed: int = 0) -> dict[str, Path]:
    """Write everything `fracture review serve` reads under `root`; return the paths by name."""
    from fracture.base.io import write_json, write_manifest, write_parquet
    from fracture.model.core import CONFIG_FILE, read_contract
    from fracture.preprocess.cache import cache_meta
    from fracture.review.auth import add_user

    rng = np.random.default_rng(seed)
    model_dir = write_model_dir(root / "model", params, seed=seed)
    contract = read_contract(__import__("json").loads((model_dir / CONFIG_FILE).read_text()), model_dir)
    raw = root / "raw" / "kaggle"
    raw.mkdir(parents=True)
    rows = []
    for i in range(n):
        rel = f"p{i:03d}/img{i:03d}.png"
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / rel), source_image(rng, deep=i % 3 == 0))
        rows.append(manifest_row("kaggle", rel, int(i % 2), age=8 + i % 9, sex="MF"[i % 2], projection="ap"))
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, root / "manifest.parquet", {"kaggle": str(raw)})
    images = np.stack([contract.decode(raw / r["path"]) for r in rows])
    cache = root / "cache"
    cache.mkdir()
    np.save(cache / "images.npy", images)
    write_parquet(pd.DataFrame({"image_id": manifest["image_id"], "row": np.arange(n)}), cache / "index.parquet")
    write_json(cache / "meta.json", cache_meta(contract.image_size, contract.window_percentiles, n, "test"))
    probs = np.linspace(0.02, 0.98, n)
    rng.shuffle(probs)
    preds = manifest[["image_id", "label", "source", "sex", "projection", "patient_id", "study_id"]].copy()
    preds["split"] = np.where(np.arange(n) % 4 == 0, "val", "test")
    preds["prob"] = probs
    preds["age_band"] = np.where(np.arange(n) % 2 == 0, "6-11", "12-17")
    preds["clinically_relevant"] = np.arange(n) % 3 != 0
    threshold = 0.5  # the untrained model's frozen youden threshold (tests/conftest.py UNTRAINED_THRESHOLDS)
    preds["pred"] = (preds["prob"] >= threshold).astype("int8")
    eval_dir = root / "eval"
    eval_dir.mkdir()
    write_parquet(preds, eval_dir / "predictions.parquet")
    write_json(eval_dir / "thresholds.json", {"frozen": threshold, "method": "youden"})
    users = root / "users.yaml"
    for name, password in PASSWORDS.items():
        add_user(users, name, password, name=f"Dr {name.title()}")
    return {"model": model_dir, "eval": eval_dir, "cache": cache, "manifest": root / "manifest.parquet",
            "users": users, "raw": raw}  # fmt: skip


def outcome_ids(eval_dir: Path, outcome: str, threshold: float = 0.5) -> list[str]:
    """The image ids of one outcome, from the eval dir."""
    preds = pd.read_parquet(eval_dir / "predictions.parquet")
    pred, label = preds["prob"] >= threshold, preds["label"] == 1
    mask = {"TP": pred & label, "FP": pred & ~label, "FN": ~pred & label, "TN": ~pred & ~label}[outcome]
    return preds.loc[mask, "image_id"].tolist()
