"""Grad-CAM on the Swin classifier: NHWC handling, shapes at two input sizes, the example rule, overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fracture.explain import (
    CATEGORIES,
    SELECTION_RULE,
    cam_grid,
    coarseness_note,
    content_box,
    gradcam,
    render_overlay,
    select_examples,
    swin_reshape_transform,
)


def tiny_model(make_params, size: int, window: int) -> torch.nn.Module:
    """The project's classifier (backbone -> head) with a tiny Swin at `size` px."""
    from fracture.model.core import build_model

    params = make_params(
        {"base": {"image_size": size}, "model": {"backbone_kwargs": {"img_size": size, "window_size": window}}}
    )
    torch.manual_seed(0)
    return build_model(params.model, size, pretrained=False).eval()


def blobs(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size]: a dark field with a few bright discs, so the maps have structure."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), dtype=np.uint8)
    for img in out:
        for _ in range(3):
            x, y = rng.integers(size // 8, size - size // 8, 2)
            cv2.circle(img, (int(x), int(y)), size // 8, int(rng.integers(120, 255)), -1)
        img += rng.integers(0, 30, img.shape, dtype=np.uint8)
    return out


@pytest.mark.parametrize(("size", "window", "grid"), [(64, 4, 2), (128, 4, 4)])
def test_gradcam_maps_cover_the_input_at_two_sizes(make_params, size, window, grid):
    model = tiny_model(make_params, size, window)
    images = blobs(5, size)
    maps = gradcam(model, images, mean=0.5, std=0.5, batch_size=2)  # 3 batches: 2 + 2 + 1
    assert maps.shape == (5, size, size)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert any(m.std() > 0.01 for m in maps), "every map is constant"
    assert np.isclose(maps.max(), 1.0, atol=1e-3)
    assert cam_grid(model, size) == (grid, grid)


def test_gradcam_is_batch_size_independent_and_leaves_model_clean(make_params):
    model = tiny_model(make_params, 64, 4)
    images = blobs(4, 64, seed=3)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    one = gradcam(model, images, 0.5, 0.5, batch_size=1)
    four = gradcam(model, images, 0.5, 0.5, batch_size=4)
    np.testing.assert_allclose(one, four, atol=1e-4)
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert not model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters()), "weights touched by Grad-CAM"


def test_gradcam_matches_a_reference_computed_on_nhwc_tokens(make_params):
    """Grad-CAM by hand on the raw [B, H, W, C] tokens: a wrong permute (e.g. H and W swapped) would not match."""
    model = tiny_model(make_params, 128, 4)
    images = blobs(3, 128, seed=5)
    tokens: list[torch.Tensor] = []
    handle = model.backbone.layers[-1].blocks[-1].norm1.register_forward_hook(lambda m, i, o: tokens.append(o))
    x = ((torch.from_numpy(images).float() / 255 - 0.5) / 0.5)[:, None]
    logits = model(x)
    handle.remove()
    grads = torch.autograd.grad(logits.sum(), tokens[0])[0]  # [B, H, W, C]
    weights = grads.mean(dim=(1, 2))  # [B, C]
    raw = torch.relu(torch.einsum("bhwc,bc->bhw", tokens[0], weights)).detach().numpy()
    expected = []
    for r in raw:
        r = (r - r.min()) / (r.max() - r.min() + 1e-7)
        r = cv2.resize(r.astype(np.float32), (128, 128))
        expected.append((r - r.min()) / (r.max() - r.min() + 1e-7))
    np.testing.assert_allclose(gradcam(model, images, 0.5, 0.5, batch_size=3), np.stack(expected), atol=1e-3)
    assert not np.allclose(np.stack(expected), np.stack(expected).transpose(0, 2, 1), atol=1e-2)


def test_reshape_transform_is_nhwc_to_nchw_and_derives_the_grid():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)  # [B, H, W, C]
    y = swin_reshape_transform(x)
    assert y.shape == (2, 7, 3, 5)
    assert torch.equal(y[1, 4, 2, 3], x[1, 2, 3, 4])
    tokens = torch.randn(2, 144, 8)  # [B, L, C] from older timm
    assert swin_reshape_transform(tokens).shape == (2, 8, 12, 12)
    with pytest.raises(ValueError, match="square"):
        swin_reshape_transform(torch.randn(1, 10, 8))


def predictions_frame() -> pd.DataFrame:
    rows = []
    probs = {"TP": [0.9, 0.95, 0.95, 0.6], "FN": [0.1, 0.3, 0.1], "FP": [0.7, 0.8], "TN": [0.05, 0.2, 0.05]}
    label = {"TP": 1, "FN": 1, "FP": 0, "TN": 0}
    for source in ("kaggle", "mura"):
        for cat, ps in probs.items():
            for k, p in enumerate(ps):
                rows.append(
                    {
                        "image_id": f"{source[0]}{cat}{k}",
                        "split": "test",
                        "source": source,
                        "prob": p,
                        "label": label[cat],
                    }
                )
    rows.append({"image_id": "val0", "split": "val", "source": "kaggle", "prob": 0.99, "label": 1})
    return pd.DataFrame(rows)


def test_select_examples_follows_the_documented_rule():
    chosen = select_examples(predictions_frame(), threshold=0.5, n_per_category=2)
    assert set(chosen["category"]) == set(CATEGORIES)
    assert "val0" not in set(chosen["image_id"]), "validation rows must never be shown"
    k = chosen[chosen["source"] == "kaggle"].groupby("category")["image_id"].apply(list).to_dict()
    assert k["TP"] == ["kTP1", "kTP2"]  # highest prob, tie 0.95/0.95 broken by image_id
    assert k["FN"] == ["kFN0", "kFN2"]  # lowest prob among FN, tie by image_id
    assert k["FP"] == ["kFP1", "kFP0"]  # highest prob among FP
    assert k["TN"] == ["kTN0", "kTN2"]  # lowest prob among TN
    assert len(chosen) == 16  # 2 sources x 4 categories x 2
    assert "most confident true positives" in SELECTION_RULE and "image_id" in SELECTION_RULE


def test_select_examples_uses_the_given_threshold_not_a_default():
    df = predictions_frame()
    chosen = select_examples(df, threshold=0.75, n_per_category=10)
    kaggle = chosen[chosen["source"] == "kaggle"]
    assert set(kaggle.loc[kaggle["category"] == "FN", "image_id"]) == {"kFN0", "kFN1", "kFN2", "kTP3"}
    assert set(kaggle.loc[kaggle["category"] == "FP", "image_id"]) == {"kFP1"}


def test_coarseness_note_computes_the_cell_size():
    assert "32 x 32 px of the 384 px input" in coarseness_note((12, 12), 384)
    assert "32 x 32 px of the 64 px input" in coarseness_note((2, 2), 64)


def test_overlay_crops_the_letterbox_and_has_a_colour_bar():
    image = np.zeros((64, 64), dtype=np.uint8)
    image[16:48, :] = 200  # a wide image letterboxed top and bottom
    assert content_box(image) == (16, 48, 0, 64)
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[20:30, 10:20] = 1.0

    def render(heat: np.ndarray) -> np.ndarray:
        png = render_overlay(image, heat, "TP (kaggle)", coarseness_note((2, 2), 64), alpha=0.4)
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(int)  # BGR

    hot, cold = render(cam), render(np.zeros_like(cam))
    assert hot.shape[1] > hot.shape[0], "a wide image must give a wide figure"

    def reddish(fig: np.ndarray) -> int:
        return int((fig[..., 2] - np.maximum(fig[..., 0], fig[..., 1]) > 30).sum())

    assert reddish(hot) - reddish(cold) > 1000, "the hot spot is not drawn in warm colours"
    saturated = (np.ptp(cold, axis=2) > 200).sum()
    assert saturated > 1000, "no opaque colour bar"


def test_gallery_overlay_has_no_text_above_or_under_the_panels():
    """explain bakes no title or caveat into its PNGs (the report's figure caption says them); predict's still print."""
    image = np.zeros((64, 64), dtype=np.uint8)
    image[16:48, :] = 200
    cam = np.zeros((64, 64), dtype=np.float32)

    def ink_outside_panels(title: str | None, note: str | None) -> tuple[int, int]:
        png = render_overlay(image, cam, title, note, alpha=0.4)
        fig = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(int)
        panel = np.flatnonzero((np.abs(fig[:, : fig.shape[1] * 2 // 5] - 200) <= 3).any(axis=1))  # input, grey 200
        text = fig[:, : int(fig.shape[1] * 0.85)] < 200  # the colour bar column and its labels left out
        return int(text[: panel.min() - 25].sum()), int(text[panel.max() + 3 :].sum())  # 25 px: the panel titles

    above, under = ink_outside_panels("TP (kaggle) image 0001: p = 0.912, label 1", coarseness_note((2, 2), 64))
    assert above > 200 and under > 200, "the measure must see a printed title and note"
    assert ink_outside_panels(None, None) == (0, 0), "text baked into the Grad-CAM figure"


@pytest.fixture(scope="module")
def explain_inputs(tmp_path_factory, make_params):
    from fracture.base.io import write_json, write_parquet
    from tests.unit.report.test_report import write_model_dir

    params = make_params({"explain": {"n_per_category": 2, "batch_size": 3}})
    root = tmp_path_factory.mktemp("explain-inputs")
    write_model_dir(params, root / "model")
    preds = predictions_frame()
    (root / "eval").mkdir()
    write_parquet(preds, root / "eval" / "predictions.parquet")
    (root / "cache").mkdir()
    np.save(root / "cache" / "images.npy", blobs(len(preds), 64, seed=2))
    index = pd.DataFrame({"image_id": preds["image_id"], "row": np.arange(len(preds)), "sha256": "0" * 64})
    write_parquet(index, root / "cache" / "index.parquet")
    meta = {"image_size": 64, "count": len(preds), "window_percentiles": [0.5, 99.5], "format": 1}
    write_json(root / "cache" / "meta.json", meta)
    return params, root


def test_run_explain_writes_the_rule_s_examples(explain_inputs, make_params, tmp_path):
    import json

    from fracture.explain import run_explain

    params, root = explain_inputs
    meta = run_explain(params, root / "model", root / "eval", root / "cache", tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    expected = select_examples(predictions_frame(), 0.5, 2)  # write_model_dir freezes 0.5
    pairs = list(zip(expected["image_id"], expected["category"], strict=True))
    assert [(e["image_id"], e["category"]) for e in index] == pairs
    for e in index:
        png = cv2.imread(str(tmp_path / e["file"]))
        assert png is not None and png.shape[1] > png.shape[0]
        assert set(e) == {"image_id", "source", "category", "prob", "label", "file"}
    assert meta["grid"] == [2, 2] and meta["cell_px"] == 32
    assert meta["counts"] == {"TP": 4, "FN": 4, "FP": 4, "TN": 4}
    assert json.loads((tmp_path / "meta.json").read_text())["rule"] == SELECTION_RULE
    assert (tmp_path / "params.yaml").is_file()
    fewer = make_params({"explain": {"n_per_category": 1}})
    run_explain(fewer, root / "model", root / "eval", root / "cache", tmp_path)
    assert len(list(tmp_path.glob("*.png"))) == 8, "stale overlays from the earlier run were left behind"


def test_run_explain_refuses_a_cache_of_another_size(explain_inputs, tmp_path):
    import json
    import shutil

    from fracture.base.errors import InputError
    from fracture.explain import run_explain

    params, root = explain_inputs
    shutil.copytree(root / "cache", tmp_path / "cache")
    np.save(tmp_path / "cache" / "images.npy", np.zeros((25, 32, 32), dtype=np.uint8))
    meta = json.loads((root / "cache" / "meta.json").read_text())
    (tmp_path / "cache" / "meta.json").write_text(json.dumps({**meta, "image_size": 32}))
    with pytest.raises(InputError, match="32 px but the model's input contract takes 64 px"):
        run_explain(params, root / "model", root / "eval", tmp_path / "cache", tmp_path / "out")


def test_run_explain_with_boxes_writes_localization_and_box_overlays(explain_inputs, tmp_path):
    import json

    from fracture.base.io import write_parquet
    from fracture.explain import LOCALIZATION_FILE, run_explain

    params, root = explain_inputs
    preds = predictions_frame().assign(
        pred=lambda d: (d["prob"] >= 0.5).astype(int), cluster_id=lambda d: d["image_id"]
    )
    (root / "eval-boxes").mkdir(exist_ok=True)
    write_parquet(preds, root / "eval-boxes" / "predictions.parquet")
    boxed = ["kTP0", "kTP1", "kFN0", "kFP0", "kTN0", "val0"]  # val0: never scored (not test)
    boxes = pd.DataFrame(
        {
            "image_id": boxed + ["kTN0"],
            "class": ["fracture", "fracture", "fracture", "text", "text", "fracture", "metal"],
            "x": 0.5, "y": 0.5, "w": 0.25, "h": 0.25, "image_width": 200, "image_height": 100,
            "file": "f.txt", "line": 1,
        }
    )  # fmt: skip
    write_parquet(boxes, tmp_path / "boxes.parquet")
    run_explain(
        params, root / "model", root / "eval-boxes", root / "cache", tmp_path / "out", tmp_path / "boxes.parquet"
    )
    loc = json.loads((tmp_path / "out" / LOCALIZATION_FILE).read_text())
    assert loc["n_cases"] == 5 and loc["pointing_tolerance_px"] == params.explain.pointing_tolerance_px
    assert loc["pointing_game"]["all"]["n"] == 3 and set(loc["pointing_game"]) >= {"all", "TP", "FN"}
    assert loc["energy_inside"]["all"]["chance"] == pytest.approx(16 * 8 / 64**2)  # a 16 x 8 px box on 64 x 64
    assert set(loc["shortcut"]["text"]) == {"negatives"} and loc["shortcut"]["metal"]["negatives"]["all"]["n"] == 1
    assert sorted(e["category"] for e in loc["examples"]) == ["FN", "TP", "TP"]
    for e in loc["examples"]:
        assert (tmp_path / "out" / e["file"]).is_file()
    run_explain(params, root / "model", root / "eval-boxes", root / "cache", tmp_path / "out")
    assert not (tmp_path / "out" / LOCALIZATION_FILE).exists(), "figures of an earlier run with boxes were left"
    assert not list((tmp_path / "out").glob("boxes_*.png"))
