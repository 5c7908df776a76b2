"""A case's pictures: the model's input (cache or the contract's decode), full resolution windowed, Grad-CAM.

The Grad-CAM map of a case is computed on demand with `fracture.explain.gradcam` on the exact input the model
saw and cached as `.npy` under the app's state dir, so a second look costs nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fracture.base.errors import InputError

log = logging.getLogger(__name__)

DISPLAY_MAX_SIDE = 2048  # px: full-resolution views are shrunk to this for the browser (window first, then shrink)
# One model call at a time: Grad-CAM hooks the model and toggles requires_grad, which a concurrent forward pass
# (another request's Grad-CAM or an upload's score) must not see half done.
MODEL_LOCK = threading.Lock()


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 gray `[H, W]` or BGRA `[H, W, 4]` array."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def heatmap_rgba(cam: np.ndarray) -> np.ndarray:
    """A Grad-CAM map `[S, S]` in [0, 1] as a BGRA jet heatmap whose alpha follows the map (cold parts clear)."""
    cam8 = (np.clip(cam, 0, 1) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(cam8, cv2.COLORMAP_JET)
    return np.dstack([bgr, cam8])


def window_png(raw: np.ndarray, lo: float, hi: float, max_side: int = DISPLAY_MAX_SIDE) -> bytes:
    """Raw values windowed to [lo, hi] -> uint8, then shrunk to `max_side` (area averaging) -> PNG."""
    from fracture.images.decode import apply_linear_window, quantize

    img = quantize(apply_linear_window(raw, lo, hi)) if hi > lo else np.zeros(raw.shape, np.uint8)
    scale = max_side / max(img.shape)
    if scale < 1:
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return png_bytes(img)


class CaseImages:
    """Where a case's pixels come from: the preprocess cache and/or the manifest's source files."""

    def __init__(self, predictor: object, state_dir: Path, cache_dir: Path | None, sources: pd.Series | None):
        """Args: the loaded predictor, the app's state dir, the cache dir, and image_id -> source file path."""
        self.predictor = predictor
        self.cam_dir = Path(state_dir) / "cams"
        self.cam_dir.mkdir(parents=True, exist_ok=True)
        self.sources = sources
        self.images, self.rows = None, None
        if cache_dir is not None:
            from fracture.preprocess.cache import load_cache

            self.images, index = load_cache(cache_dir)
            self.rows = pd.Series(index["row"].to_numpy(np.int64), index=index["image_id"].astype(str).to_numpy())

    def source_path(self, image_id: str) -> Path:
        """The case's source file (needs --manifest).

        Raises:
            InputError: no manifest was given or the file is gone.
        """
        if self.sources is None or image_id not in self.sources.index:
            raise InputError(f"{image_id}: no source file known (start the app with --manifest and --data-root)")
        path = Path(self.sources[image_id])
        if not path.is_file():
            raise InputError(f"{image_id}: source file is missing under the data root")
        return path

    def model_input(self, image_id: str) -> np.ndarray:
        """The uint8 `[S, S]` image the model saw: the cache row, else the source decoded by the model's contract."""
        if self.rows is not None and image_id in self.rows.index:
            return np.array(self.images[int(self.rows[image_id])])  # a writable copy, not a memmap view
        return self.predictor.contract.decode(self.source_path(image_id))

    def raw(self, image_id: str) -> np.ndarray:
        """Full-resolution raw values of the source (cached for the last few cases)."""
        return _read_raw_cached(str(self.source_path(image_id)), self.predictor.contract.max_pixels,
                                self.predictor.contract.max_side)  # fmt: skip

    def window_defaults(self, image_id: str) -> dict:
        """The contract's percentile window of the source, and its value range, for the window/level controls."""
        from fracture.images.decode import window_bounds

        raw = self.raw(image_id)
        lo, hi = window_bounds(raw, self.predictor.contract.window_percentiles)
        return {"lo": float(lo), "hi": float(hi), "min": float(raw.min()), "max": float(raw.max()),
                "width": int(raw.shape[1]), "height": int(raw.shape[0])}  # fmt: skip

    def cam(self, image_id: str) -> np.ndarray:
        """Grad-CAM `[S, S]` of the case (computed once, then read from the state dir)."""
        from fracture.explain import gradcam

        path = self.cam_dir / f"{image_id}.npy"
        if path.is_file():
            return np.load(path)
        image = self.model_input(image_id)
        with MODEL_LOCK:
            p = self.predictor
            cam = gradcam(p.model, image[None], p.mean, p.std, 1)[0]
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, cam.astype(np.float16))
        tmp.replace(path)
        return cam


@functools.lru_cache(maxsize=4)
def _read_raw_cached(path: str, max_pixels: int, max_side: int) -> np.ndarray:
    from fracture.images.decode import read_raw

    return read_raw(Path(path), max_pixels=max_pixels, max_side=max_side)
