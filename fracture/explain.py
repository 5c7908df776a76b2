"""Grad-CAM for the timm Swin classifier (NHWC-aware) and the TP / FN / FP / TN overlay gallery.

timm >= 0.9 Swin blocks keep tokens as NHWC `[B, H, W, C]`; pytorch-grad-cam wants `[B, C, H, W]`. We hook the
last block's `norm1` (the final stage's tokens before attention), permute to channels-first, and take the
gradient of the single fracture logit (`BinaryClassifierOutputTarget(1)`): the map shows where the model finds
evidence *for* fracture, for every category, so an empty map on a true negative is an answer, not a failure.
The stage-4 grid is 1/32 of the input side (2 x 2 cells at 64 px, 12 x 12 at 384 px): CAMs are coarse.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fracture.base.errors import InputError
from fracture.config import Params
from fracture.contracts.artifacts import EXPLAIN_INDEX, EXPLAIN_META, PREDICTIONS

log = logging.getLogger(__name__)

CATEGORIES = ("TP", "FN", "FP", "TN")
COLORMAP = "jet"

SELECTION_RULE = (
    "Examples come from the TEST split of predictions.parquet, classified with the frozen threshold from the model "
    "config (positive when prob >= threshold). Per source, up to n examples per category: the most confident true "
    "positives (highest prob among TP), the worst false negatives (lowest prob among FN), the worst false "
    "positives (highest prob among FP) and the most confident true negatives (lowest prob among TN). Ties are "
    "broken by image_id (ascending). The Grad-CAM target is the fracture logit in every category."
)

# category -> (label, predicted positive, sort probabilities descending)
_RULE: dict[str, tuple[int, bool, bool]] = {
    "TP": (1, True, True),
    "FN": (1, False, False),
    "FP": (0, True, True),
    "TN": (0, False, False),
}


def select_examples(predictions: pd.DataFrame, threshold: float, n_per_category: int) -> pd.DataFrame:
    """Pick the gallery examples by the fixed rule in `SELECTION_RULE`.

    Args:
        predictions: rows of predictions.parquet (needs image_id, split, source, prob, label).
        threshold: the frozen operating point; a prediction is positive when prob >= threshold.
        n_per_category: examples per (source, category).

    Returns:
        The chosen rows with an added `category` column, ordered by source, then TP, FN, FP, TN, then rank.
    """
    test = predictions[predictions["split"] == "test"].copy()
    test["predicted"] = test["prob"].astype(float) >= threshold
    chosen = []
    for source in sorted(test["source"].astype(str).unique()):
        rows = test[test["source"].astype(str) == source]
        for category in CATEGORIES:
            label, positive, descending = _RULE[category]
            pool = rows[(rows["label"].astype(int) == label) & (rows["predicted"] == positive)]
            pool = pool.assign(_neg=-pool["prob"].astype(float) if descending else pool["prob"].astype(float))
            picked = pool.sort_values(["_neg", "image_id"], kind="mergesort").head(n_per_category)
            chosen.append(picked.drop(columns="_neg").assign(category=category))
    if not chosen:
        return test.assign(category=pd.Series(dtype="string")).iloc[0:0]
    return pd.concat(chosen, ignore_index=True).drop(columns="predicted")


def swin_reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """Swin tokens to channels-first maps; the grid comes from the tensor, never a hard-coded 7 x 7.

    Args:
        tokens: `[B, H, W, C]` (timm >= 0.9, NHWC) or `[B, L, C]` with a square L (older timm).

    Returns:
        `[B, C, H, W]`.
    """
    if tokens.ndim == 4:
        return tokens.permute(0, 3, 1, 2)
    if tokens.ndim == 3:
        b, length, c = tokens.shape
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(f"cannot fold {length} tokens into a square grid")
        return tokens.reshape(b, side, side, c).permute(0, 3, 1, 2)
    raise ValueError(f"unexpected Swin token shape {tuple(tokens.shape)}")


def swin_target_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM target: `norm1` of the last block of the last Swin stage."""
    try:
        return model.backbone.layers[-1].blocks[-1].norm1
    except (AttributeError, IndexError, TypeError) as err:
        raise InputError(f"model has no Swin backbone.layers[-1].blocks[-1].norm1 for Grad-CAM ({err})") from None


class _LogitColumn(nn.Module):
    """Present a single-logit model as `[B, 1]`, the shape BinaryClassifierOutputTarget indexes per sample."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).reshape(x.shape[0], 1)


def _to_tensor(images_uint8: np.ndarray, mean: float, std: float, device: torch.device) -> torch.Tensor:
    """uint8 `[N, S, S]` -> normalised float `[N, 1, S, S]` (the model's input contract)."""
    from fracture.model.data import normalise

    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device=device, dtype=torch.float32)
    return normalise(x / 255.0, mean, std).unsqueeze(1)


def gradcam(model: nn.Module, images_uint8: np.ndarray, mean: float, std: float, batch_size: int) -> np.ndarray:
    """Grad-CAM of the fracture logit for a stack of images.

    Args:
        model: the classifier (`.backbone` a timm Swin, forward `[B, 1, S, S]` -> logits `[B]` or `[B, 1]`).
        images_uint8: `[N, S, S]` uint8 images, as in the preprocess cache.
        mean: input normalisation mean (on the 0..1 scale).
        std: input normalisation std.
        batch_size: images per forward/backward pass.

    Returns:
        float32 `[N, S, S]` in [0, 1], each map normalised by its own maximum (all zeros when no region raises
        the fracture logit).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 3:
        raise ValueError(f"expected [N, S, S] images, got shape {images_uint8.shape}")
    was_training = model.training
    device = next(model.parameters()).device
    # Gradients flow from the input, not into the weights: no parameter .grad buffers (about 0.8 GB for Swin-L).
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    cam = GradCAM(
        model=_LogitColumn(model), target_layers=[swin_target_layer(model)], reshape_transform=swin_reshape_transform
    )
    maps = []
    try:
        with torch.enable_grad():
            for start in range(0, len(images_uint8), batch_size):
                x = _to_tensor(images_uint8[start : start + batch_size], mean, std, device).requires_grad_(True)
                targets = [BinaryClassifierOutputTarget(1)] * x.shape[0]
                maps.append(cam(input_tensor=x, targets=targets))
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)
        for p in trainable:
            p.requires_grad_(True)
    if not maps:
        return np.zeros((0, *images_uint8.shape[1:]), dtype=np.float32)
    return np.clip(np.concatenate(maps).astype(np.float32), 0.0, 1.0)


def cam_grid(model: nn.Module, image_size: int) -> tuple[int, int]:
    """Height and width of the Grad-CAM grid (the target layer's token grid) for a square input."""
    shape: list[tuple[int, ...]] = []
    handle = swin_target_layer(model).register_forward_hook(lambda _m, _i, out: shape.append(tuple(out.shape)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size, device=next(model.parameters()).device))
    finally:
        handle.remove()
        model.train(was_training)
    grid = swin_reshape_transform(torch.empty(shape[-1], device="meta")).shape[-2:]
    return int(grid[0]), int(grid[1])


def coarseness_note(grid: tuple[int, int], image_size: int) -> str:
    """The caption's caveat, with the cell size computed from the grid."""
    cell = image_size / grid[0]
    return (
        f"Grad-CAMs are coarse: a {grid[0]} x {grid[1]} grid from the last Swin stage, so each cell covers about "
        f"{cell:g} x {cell:g} px of the {image_size} px input. Maps are normalised per image (0..1); colours compare "
        "regions within one image, not across images. They show where the model looks, not a diagnosis."
    )


def content_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box `(y0, y1, x0, x1)` inside the letterbox padding (all-zero edge rows and columns)."""
    rows = np.flatnonzero(image.max(axis=1) > 0)
    cols = np.flatnonzero(image.max(axis=0) > 0)
    if rows.size == 0 or cols.size == 0:
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def render_overlay(
    image: np.ndarray,
    cam: np.ndarray,
    title: str | None,
    note: str | None,
    alpha: float,
    boxes: dict[str, np.ndarray] | None = None,
) -> bytes:
    """PNG bytes: the radiograph and its Grad-CAM overlay side by side, fixed 0..1 colour scale with a colour bar.

    `boxes` (class -> `[K, 4]` `(x0, y0, x1, y1)` px on the input grid) are outlined on both panels, one colour per
    class (BOX_COLOURS), so a reader sees the radiologists' box beside the map.

    The letterbox padding is cropped so that the panels keep the image's own aspect ratio. `title` is printed
    above the panels and `note` small under them. explain passes neither: the report's figure caption says both
    (text baked into the PNG was unreadable once a phone scaled the figure down), and index.json / meta.json keep
    them; predict's standalone PNG, seen without a report, passes both.
    """
    import io
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y0, y1, x0, x1 = content_box(image)
    img, heat = image[y0:y1, x0:x1], cam[y0:y1, x0:x1]
    aspect = min(max(img.shape[1] / img.shape[0], 0.5), 2.0)
    fig = plt.figure(figsize=(2 * 3.2 * aspect + 1.3, 4.0), dpi=100)
    grid = fig.add_gridspec(
        1,
        3,
        width_ratios=[1, 1, 0.05],
        left=0.03,
        right=0.9,
        top=0.86 if title else 0.9,
        bottom=0.2 if note else 0.04,
        wspace=0.08,
    )
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    for ax in axes:
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
    axes[1].imshow(heat, cmap=COLORMAP, vmin=0.0, vmax=1.0, alpha=alpha)
    scale = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=COLORMAP)
    fig.colorbar(scale, cax=fig.add_subplot(grid[0, 2]), label="Grad-CAM (0 = none, 1 = image max)")
    draw_boxes(axes, boxes or {}, (x0, y0))
    axes[0].set_title("input", fontsize=9)
    axes[1].set_title("Grad-CAM overlay", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    if note:
        fig.text(0.5, 0.01, "\n".join(textwrap.wrap(note, 110)), ha="center", va="bottom", fontsize=6.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


BOX_COLOURS = {"fracture": "lime", "text": "magenta", "metal": "cyan"}


def draw_boxes(axes: list, boxes: dict[str, np.ndarray], origin: tuple[int, int]) -> None:
    """Outline `(x0, y0, x1, y1)` input-grid boxes on each axis, shifted by the crop's `origin` (x, y)."""
    from matplotlib.patches import Rectangle

    limits = [(ax.get_xlim(), ax.get_ylim()) for ax in axes]
    for name, found in sorted(boxes.items()):
        colour = BOX_COLOURS.get(name, "yellow")
        for bx0, by0, bx1, by1 in np.asarray(found, dtype=float).reshape(-1, 4):
            for ax in axes:  # imshow puts pixel i's centre at i, so its left edge is at i - 0.5
                corner = (bx0 - origin[0] - 0.5, by0 - origin[1] - 0.5)
                ax.add_patch(Rectangle(corner, bx1 - bx0, by1 - by0, fill=False, edgecolor=colour, linewidth=1.2))
    for ax, (xlim, ylim) in zip(axes, limits, strict=True):  # a box past the crop must not zoom the panel out
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)


def _cache_rows(index: pd.DataFrame, image_ids: pd.Series, cache_dir: Path) -> np.ndarray:
    """Rows of images.npy for the given image_ids; raise naming any id the cache lacks."""
    row_of = dict(zip(index["image_id"].astype(str), index["row"].astype(np.int64), strict=True))
    missing = [i for i in image_ids.astype(str) if i not in row_of]
    if missing:
        raise InputError(f"{cache_dir}: cache has no image for {len(missing)} example(s), e.g. {missing[0]}")
    return np.array([row_of[i] for i in image_ids.astype(str)], dtype=np.int64)


def _load_inputs(model_dir: Path, eval_dir: Path) -> tuple[nn.Module, dict, pd.DataFrame]:
    """Model, its config and the eval predictions."""
    from fracture.base.io import read_parquet
    from fracture.model.core import load_model_dir

    model, config = load_model_dir(model_dir)
    predictions = read_parquet(eval_dir / PREDICTIONS)
    needed = {"image_id", "split", "source", "prob", "label"}
    if missing := needed - set(predictions.columns):
        raise InputError(f"{eval_dir / PREDICTIONS}: missing columns {sorted(missing)}")
    return model, config, predictions


def _write_overlays(
    examples: pd.DataFrame, images: np.ndarray, cams: np.ndarray, alpha: float, out_dir: Path
) -> list[dict]:
    """Render every example's overlay PNG; return the index entries."""
    from fracture.base.io import atomic_write_bytes
    from fracture.base.parallel import progress

    index = []
    rows = examples.reset_index(drop=True).itertuples(index=False)
    for i, row in enumerate(progress(rows, total=len(examples), desc="overlays")):
        name = f"{row.source}_{row.category}_{row.image_id}.png"
        atomic_write_bytes(out_dir / name, render_overlay(images[i], cams[i], None, None, alpha))
        index.append(
            {
                "image_id": str(row.image_id),
                "source": str(row.source),
                "category": str(row.category),
                "prob": float(row.prob),
                "label": int(row.label),
                "file": name,
            }
        )
    return index


def explain_meta(config: dict, n_per_category: int, size: int, grid: tuple[int, int], examples: pd.DataFrame) -> dict:
    """meta.json: the rule, threshold, Grad-CAM target and grid, and how many examples each category got."""
    return {
        "threshold": float(config["threshold"]),
        "threshold_method": config.get("threshold_method"),
        "rule": SELECTION_RULE,
        "n_per_category": n_per_category,
        "target": "fracture logit (BinaryClassifierOutputTarget(1))",
        "target_layer": "backbone.layers[-1].blocks[-1].norm1",
        "image_size": size,
        "grid": list(grid),
        "cell_px": size / grid[0],
        "colormap": COLORMAP,
        "note": coarseness_note(grid, size),
        "counts": {c: int((examples["category"] == c).sum()) for c in CATEGORIES},
    }


LOCALIZATION_FILE = "localization.json"
LOCALIZATION_RULE = (
    "Cases: TEST-split predictions whose image has a fracture, text or metal box (all of them, or a seeded sample of "
    "explain.localization_sample). Example overlays: per category (TP, FN) up to explain.n_per_category cases with "
    "a fracture box, lowest image_id first; boxes outlined: fracture lime, text magenta, metal cyan."
)


def localize(
    params: Params, model: nn.Module, predictions: pd.DataFrame, boxes: pd.DataFrame, cache: tuple, contract: Any
) -> tuple[dict, pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """Grad-CAM of the boxed test cases scored against their boxes (fracture/stats/localization.py).

    Returns:
        (localization.json's figures, the scored cases, their images, their CAMs, the cases' grid boxes).
    """
    from fracture.stats.localization import (
        FRACTURE,
        SHORTCUT_CLASSES,
        box_classes,
        grid_boxes,
        pick_cases,
        score_cases,
    )
    from fracture.stats.localization import summarise as summarise_localization

    ep, size = params.explain, contract.image_size
    if missing := {"pred", "cluster_id"} - set(predictions.columns):
        raise InputError(f"predictions.parquet: localization needs columns {sorted(missing)} (re-run evaluate)")
    test = predictions[predictions["split"] == "test"]
    boxed = box_classes(boxes, (FRACTURE, *SHORTCUT_CLASSES))
    cases = pick_cases(test[test["image_id"].astype(str).isin(boxed)], ep.localization_sample, params.base.seed)
    on_grid = grid_boxes(boxes[boxes["image_id"].astype(str).isin(set(cases["image_id"].astype(str)))], size)
    images_all, index, cache_dir = cache
    images = np.asarray(images_all[_cache_rows(index, cases["image_id"], cache_dir)]) if len(cases) else None
    if images is None:
        return {}, cases, np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), np.float32), on_grid
    cams = gradcam(model, images, contract.mean, contract.std, ep.batch_size)
    scored = score_cases(cams, cases, on_grid, ep.pointing_tolerance_px)
    ev = params.evaluate
    return summarise_localization(scored, ev.n_bootstrap, ev.ci_level, params.base.seed), scored, images, cams, on_grid


def _write_box_overlays(
    scored: pd.DataFrame, images: np.ndarray, cams: np.ndarray, on_grid: dict, n: int, alpha: float, out_dir: Path
) -> list[dict]:
    """A few TP / FN overlays with the boxes drawn (LOCALIZATION_RULE); returns their index entries."""
    from fracture.base.io import atomic_write_bytes
    from fracture.stats.localization import categorise

    if scored.empty or "fracture_area" not in scored.columns:
        return []
    scored = scored.assign(category=categorise(scored), row_in_cams=np.arange(len(scored)))
    entries = []
    for category in ("TP", "FN"):
        pool = scored[(scored["category"] == category) & np.isfinite(scored["fracture_area"].astype(float))]
        for row in pool.sort_values("image_id", kind="mergesort").head(n).itertuples(index=False):
            name = f"boxes_{category}_{row.image_id}.png"
            boxes = on_grid[str(row.image_id)].by_class
            atomic_write_bytes(
                out_dir / name, render_overlay(images[row.row_in_cams], cams[row.row_in_cams], None, None, alpha, boxes)
            )
            entries.append(
                {
                    "image_id": str(row.image_id),
                    "category": category,
                    "prob": float(row.prob),
                    "label": int(row.label),
                    "pointing_hit": float(row.pointing_hit),
                    "fracture_energy": None if np.isnan(row.fracture_energy) else float(row.fracture_energy),
                    "file": name,
                }
            )
    return entries


def localization_report(
    params: Params, figures: dict, scored: pd.DataFrame, grid: tuple[int, int], size: int, examples: list[dict]
) -> dict:
    """localization.json: the settings, the figures and the example overlays."""
    return {
        "unit": "image; CIs resample patients (cluster_id)",
        "rule": LOCALIZATION_RULE,
        "n_cases": len(scored),
        "n_patients": int(scored["cluster_id"].nunique()) if len(scored) else 0,
        "localization_sample": params.explain.localization_sample,
        "pointing_tolerance_px": params.explain.pointing_tolerance_px,
        "image_size": size,
        "grid": list(grid),
        "cell_px": size / grid[0],
        "ci_level": params.evaluate.ci_level,
        "n_bootstrap": params.evaluate.n_bootstrap,
        "chance": "pointing game: share of the input inside the tolerance-grown fracture boxes; energy and "
        "shortcut: the boxes' share of the input area",
        **figures,
        "examples": examples,
    }


def run_explain(
    params: Params,
    model_dir: Path,
    eval_dir: Path,
    cache_dir: Path,
    out_dir: Path,
    boxes_path: Path | None = None,
    localization_path: Path | None = None,
) -> dict:
    """Grad-CAM gallery for the test split: overlays, index.json, meta.json and the resolved params.

    With `boxes_path` (boxes.parquet from ingest) also localization.json: the Grad-CAMs of the boxed test cases
    checked against the radiologists' boxes, and a few overlays with the boxes drawn.

    Args:
        params: resolved params (uses `explain.*`, `evaluate.n_bootstrap / ci_level`, `base.seed`).
        model_dir: model dir from train.
        eval_dir: eval dir from evaluate (predictions.parquet).
        cache_dir: preprocess cache (the images the model saw).
        out_dir: output dir.
        boxes_path: boxes.parquet, or None for no localization figures.
        localization_path: where localization.json goes (default: in `out_dir`; the DAG keeps it outside, as a
            DVC metric may not sit inside an output dir).

    Returns:
        meta.json's content (threshold, rule, grid, cell size, counts per category).
    """
    from fracture.base.io import read_json, write_json
    from fracture.config import dump_params
    from fracture.model.core import CONFIG_FILE, check_cache_contract, read_contract
    from fracture.preprocess.cache import load_cache

    model, config, predictions = _load_inputs(model_dir, eval_dir)
    threshold = float(config["threshold"])
    examples = select_examples(predictions, threshold, params.explain.n_per_category)
    contract = read_contract(config, Path(model_dir) / CONFIG_FILE)  # the model's inputs, never the current params
    check_cache_contract(contract, read_json(Path(cache_dir) / EXPLAIN_META), cache_dir)
    images_all, index = load_cache(cache_dir)
    size = contract.image_size
    images = np.asarray(images_all[_cache_rows(index, examples["image_id"], cache_dir)])  # [K, S, S] uint8
    cams = gradcam(model, images, contract.mean, contract.std, params.explain.batch_size)
    grid = cam_grid(model, size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = _write_overlays(examples, images, cams, params.explain.alpha, out_dir)
    box_entries = []
    localization_path = Path(localization_path or out_dir / LOCALIZATION_FILE)
    if boxes_path is not None:
        from fracture.base.io import read_parquet

        figures, scored, box_images, box_cams, on_grid = localize(
            params, model, predictions, read_parquet(Path(boxes_path)), (images_all, index, cache_dir), contract
        )
        box_entries = _write_box_overlays(
            scored, box_images, box_cams, on_grid, params.explain.n_per_category, params.explain.alpha, out_dir
        )
        write_json(localization_path, localization_report(params, figures, scored, grid, size, box_entries))
        log.info("explain: localization of %d boxed test cases in %s", len(scored), localization_path)
    else:
        localization_path.unlink(missing_ok=True)  # an earlier run's figures no longer describe this one
    for stale in set(out_dir.glob("*.png")) - {out_dir / e["file"] for e in entries + box_entries}:
        stale.unlink()  # overlays of an earlier run that this rule no longer picks
    write_json(out_dir / EXPLAIN_INDEX, entries)
    meta = explain_meta(config, params.explain.n_per_category, size, grid, examples)
    write_json(out_dir / EXPLAIN_META, meta)
    dump_params(params, out_dir / "params.yaml")
    log.info("explain: %d overlays in %s (grid %dx%d)", len(entries), out_dir, *grid)
    return meta
