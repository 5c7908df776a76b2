"""Grad-CAM against boxes: the per-image figures, their CIs, and a planted shortcut the figures must expose."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from fracture.config import ModelParams
from fracture.stats.localization import CaseBoxes, case_scores, grid_boxes, pick_cases, score_cases, summarise

SIZE = 64


# ------------------------------------------------------------------------------------------------ per image
def test_peak_inside_the_fracture_box_scores_a_hit_and_mass_shares_are_exact() -> None:
    cam = np.zeros((SIZE, SIZE))
    cam[20, 30] = 3.0  # the peak, inside the fracture box
    cam[2, 2] = 1.0  # a quarter of the mass on the side marker
    boxes = CaseBoxes({"fracture": np.array([[28.0, 18.0, 36.0, 24.0]]), "text": np.array([[0.0, 0.0, 4.0, 4.0]])})
    s = case_scores(cam, boxes, tolerance_px=0.0)
    assert s["pointing_hit"] == 1.0
    assert s["fracture_energy"] == pytest.approx(0.75) and s["text_energy"] == pytest.approx(0.25)
    assert s["fracture_area"] == pytest.approx(8 * 6 / SIZE**2) and s["text_area"] == pytest.approx(16 / SIZE**2)
    assert "metal_energy" not in s


def test_the_pointing_tolerance_counts_a_near_miss_and_widens_chance() -> None:
    cam = np.zeros((SIZE, SIZE))
    cam[20, 40] = 1.0  # 4 px right of the box
    boxes = CaseBoxes({"fracture": np.array([[28.0, 18.0, 36.0, 24.0]])})
    strict, tolerant = case_scores(cam, boxes, 0.0), case_scores(cam, boxes, 5.0)
    assert strict["pointing_hit"] == 0.0 and tolerant["pointing_hit"] == 1.0
    assert tolerant["pointing_chance"] > strict["pointing_chance"]


def test_an_empty_map_points_nowhere() -> None:
    s = case_scores(np.zeros((SIZE, SIZE)), CaseBoxes({"fracture": np.array([[0.0, 0.0, 64.0, 64.0]])}), 0.0)
    assert s["pointing_hit"] == 0.0 and np.isnan(s["fracture_energy"])


def test_grid_boxes_maps_the_box_table_onto_the_input() -> None:
    table = pd.DataFrame(
        {"image_id": ["a"], "class": ["fracture"], "x": [0.5], "y": [0.5], "w": [1.0], "h": [1.0],
         "image_width": [300], "image_height": [100]}
    )  # fmt: skip
    assert grid_boxes(table, SIZE)["a"].get("fracture")[0] == pytest.approx([0, 21, 64, 42])


def test_the_sample_is_seeded_and_all_cases_are_kept_when_few() -> None:
    cases = pd.DataFrame({"image_id": [f"i{k:03d}" for k in range(50)]})
    assert pick_cases(cases, 10, 1).equals(pick_cases(cases, 10, 1))
    assert len(pick_cases(cases, 10, 1)) == 10 and len(pick_cases(cases, 80, 1)) == 50


def test_summary_splits_by_category_and_subgroup_with_patient_cis() -> None:
    rng = np.random.default_rng(0)
    n = 40
    scored = pd.DataFrame(
        {
            "image_id": [str(i) for i in range(n)],
            "label": [1] * 30 + [0] * 10,
            "pred": [1] * 20 + [0] * 10 + [0] * 10,
            "cluster_id": [str(i // 2) for i in range(n)],
            "cast": [0, 1] * 20,
            "pointing_hit": [1.0] * 20 + [0.0] * 10 + [np.nan] * 10,
            "pointing_chance": [0.05] * 30 + [np.nan] * 10,
            "fracture_energy": list(rng.uniform(0.3, 0.5, 30)) + [np.nan] * 10,
            "fracture_area": [0.05] * 30 + [np.nan] * 10,
            "text_energy": rng.uniform(0, 0.1, n),
            "text_area": [0.02] * n,
        }
    )
    out = summarise(scored, 200, 0.95, 0)
    pointing = out["pointing_game"]
    assert pointing["TP"]["value"] == 1.0 and pointing["FN"]["value"] == 0.0
    assert pointing["all"]["n"] == 30 and pointing["all"]["n_patients"] == 15
    assert pointing["all"]["ci"][0] < 2 / 3 < pointing["all"]["ci"][1]
    assert {"cast=0", "cast=1"} <= set(pointing)
    assert out["energy_inside"]["all"]["above_chance"] is True
    assert set(out["shortcut"]["text"]) == {"positives", "negatives"}
    assert out["shortcut"]["text"]["negatives"]["all"]["n"] == 10
    assert out["shortcut"]["metal"] == {}


# ------------------------------------------------------------------------------------------ planted shortcut
def make_set(n: int, planted: bool, seed: int) -> tuple[np.ndarray, np.ndarray, list[CaseBoxes]]:
    """64 px radiograph-like images: a bone, a side marker (text box), a fracture on positives (fracture box).

    Honest: every image carries the marker in a random corner; a positive's bone is broken and displaced.
    Planted: the marker only on positives (it carries the label) and the fracture only a faint line.
    """
    rng = np.random.default_rng(seed)
    images, labels = np.zeros((n, SIZE, SIZE), np.uint8), rng.permutation(np.arange(n) % 2)
    boxes = []
    for i in range(n):
        img = rng.normal(0.1, 0.03, (SIZE, SIZE))
        c0 = int(rng.integers(18, 30))
        img[6:58, c0 : c0 + 14] += 0.6  # the bone
        found = {}
        if not planted or labels[i] == 1:
            mx, my = [(2, 2), (50, 2), (2, 50), (50, 50)][int(rng.integers(4))]
            img[my : my + 10, mx : mx + 10] += 0.35
            img[my + 2 : my + 8, mx + 3 : mx + 5] += 0.5  # an "L"-ish stroke
            found["text"] = np.array([[mx, my, mx + 10, my + 10]], float)
        if labels[i] == 1:
            fy = int(rng.integers(14, 46))
            if planted:
                img[fy : fy + 3, c0 : c0 + 14] -= 0.12
            else:  # the distal fragment steps sideways; the gap is background
                img[fy + 3 : 58, c0 : c0 + 14] -= 0.6
                img[fy + 3 : 58, c0 + 5 : c0 + 19] += 0.6
                img[fy : fy + 3, c0 : c0 + 19] = rng.normal(0.1, 0.03, (3, 19))
            found["fracture"] = np.array([[c0 - 1, fy - 3, c0 + 20, fy + 6]], float)
        images[i] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        boxes.append(CaseBoxes(found))
    return images, labels, boxes


def train_and_measure(planted: bool) -> dict:
    """Train a tiny two-stage Swin (8 x 8 Grad-CAM grid at 64 px) and score its Grad-CAMs on a held-out set."""
    from fracture.explain import gradcam
    from fracture.model.core import build_model
    from fracture.model.data import normalise

    torch.manual_seed(0)
    x, y, _ = make_set(192, planted, 1)
    xt, yt, bt = make_set(96, planted, 2)
    mp = ModelParams(
        backbone="swin_tiny_patch4_window7_224",
        backbone_kwargs={"window_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]},
        pretrained=False, weights_path=None, init_from=None, head_hidden=32, dropout=0.0, mean=0.5, std=0.5,
    )  # fmt: skip
    model = build_model(mp, SIZE)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    inputs = normalise(torch.from_numpy(x).float() / 255, 0.5, 0.5).unsqueeze(1)
    targets = torch.from_numpy(y).float()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        model.train()
        for idx in torch.randperm(len(inputs), generator=g).split(16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(inputs[idx]), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(normalise(torch.from_numpy(xt).float() / 255, 0.5, 0.5).unsqueeze(1))).numpy()
    cams = gradcam(model, xt, 0.5, 0.5, 32)
    cases = pd.DataFrame(
        {
            "image_id": [str(i) for i in range(len(xt))],
            "label": yt,
            "pred": (probs >= 0.5).astype(int),
            "cluster_id": [str(i // 2) for i in range(len(xt))],  # two images per patient
        }
    )
    scored = score_cases(cams, cases, {str(i): b for i, b in enumerate(bt)}, tolerance_px=2.0)
    return {"accuracy": float(((probs >= 0.5) == yt).mean()), **summarise(scored, 1000, 0.95, 0)}


@pytest.mark.slow
def test_a_planted_side_marker_shortcut_is_exposed_and_an_honest_model_points_at_the_fracture() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: a second thread costs more than it gives on a shared CPU
    start = time.perf_counter()
    try:
        honest, planted = train_and_measure(planted=False), train_and_measure(planted=True)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    text = planted["shortcut"]["text"]["positives"]["all"]
    pointing = honest["pointing_game"]["all"]
    print(
        f"\nplanted: accuracy {planted['accuracy']:.2f}, text attention on positives {text['value']:.3f} "
        f"CI {text['ci'][0]:.3f}-{text['ci'][1]:.3f} vs area share {text['chance']:.3f}"
        f"\nhonest: accuracy {honest['accuracy']:.2f}, pointing game {pointing['value']:.3f} "
        f"CI {pointing['ci'][0]:.3f}-{pointing['ci'][1]:.3f} vs chance {pointing['chance']:.3f} ({seconds:.0f} s)"
    )
    assert planted["accuracy"] > 0.8  # the shortcut works for the model (the faint fracture alone does not)
    assert text["ci"][0] > text["chance"]  # and the figure says where it looks
    assert honest["accuracy"] > 0.8
    assert pointing["ci"][0] > pointing["chance"]
    # the honest model's marker attention is no shortcut: the marker is on every image
    honest_text = honest["shortcut"]["text"]["positives"]["all"]
    assert honest_text["ci"][0] <= honest_text["chance"]
