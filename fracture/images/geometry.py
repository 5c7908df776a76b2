"""The one owner of the image geometry from a stored file to the model's input grid.

An image takes three geometric steps on its way into the model (fracture/images/decode.py): the EXIF / TIFF orientation
turns it upright, the long side is scaled to the input size (aspect ratio kept), and the short side is padded
symmetrically with background. There is no crop. Pixels and boxes both go through the functions here, so a box drawn
by a radiologist on the stored file lands where the same structure lands on the model's input grid.

Boxes are `[N, 4]` arrays of `(x_center, y_center, width, height)` normalised to [0, 1] (the YOLO convention), or
`(x0, y0, x1, y1)` in input pixels once on the grid (continuous coordinates: pixel `i` covers `[i, i + 1)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# EXIF Orientation -> (transpose, flip x, flip y) applied in that order to normalised coordinates; the pixel ops in
# imaging.apply_orientation are the same maps (a test draws boxes through both).
_ORIENTATION_MAPS: dict[int, tuple[bool, bool, bool]] = {
    1: (False, False, False),
    2: (False, True, False),  # mirror left-right
    3: (False, True, True),  # rotate 180
    4: (False, False, True),  # mirror top-bottom
    5: (True, False, False),  # transpose
    6: (True, True, False),  # rotate 90 clockwise
    7: (True, True, True),  # transverse
    8: (True, False, True),  # rotate 90 counter-clockwise
}


@dataclass(frozen=True)
class Letterbox:
    """Where a `height` x `width` image lands on the square input: scaled to `new_h` x `new_w` at `(top, left)`."""

    scale: float
    new_h: int
    new_w: int
    top: int
    left: int


def letterbox(height: int, width: int, size: int) -> Letterbox:
    """The letterbox of an upright `height` x `width` image on a `size` x `size` input (long side scaled to size)."""
    if height < 1 or width < 1:
        raise ValueError(f"expected a non-empty image, got {height} x {width}")
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return Letterbox(scale, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def upright_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    """(height, width) of a stored `height` x `width` image once its orientation (1-8) is applied."""
    transpose = _ORIENTATION_MAPS.get(orientation, _ORIENTATION_MAPS[1])[0]
    return (width, height) if transpose else (height, width)


def orient_boxes(boxes: np.ndarray, orientation: int) -> np.ndarray:
    """Normalised `(xc, yc, w, h)` boxes of a stored image -> the same boxes on the upright image.

    Args:
        boxes: `[N, 4]` normalised to the stored (not yet rotated) image.
        orientation: EXIF Orientation 1-8 (other values mean upright, as imaging.read_orientation returns 1).
    """
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    transpose, flip_x, flip_y = _ORIENTATION_MAPS.get(orientation, _ORIENTATION_MAPS[1])
    if transpose:
        out = out[:, [1, 0, 3, 2]]
    if flip_x:
        out[:, 0] = 1.0 - out[:, 0]
    if flip_y:
        out[:, 1] = 1.0 - out[:, 1]
    return out


def boxes_to_grid(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """Normalised `(xc, yc, w, h)` boxes of an upright `height` x `width` image -> `(x0, y0, x1, y1)` input px.

    The letterbox scales x and y by `new_w / width` and `new_h / height` (rounding makes them differ by under a
    pixel) and shifts by the padding; a box keeps its place relative to the anatomy.
    """
    box = letterbox(height, width, size)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = (b[:, 0] - b[:, 2] / 2) * box.new_w + box.left
    x1 = (b[:, 0] + b[:, 2] / 2) * box.new_w + box.left
    y0 = (b[:, 1] - b[:, 3] / 2) * box.new_h + box.top
    y1 = (b[:, 1] + b[:, 3] / 2) * box.new_h + box.top
    return np.stack([x0, y0, x1, y1], axis=1)


def box_mask(grid_boxes: np.ndarray, size: int, dilate_px: float = 0.0) -> np.ndarray:
    """Boolean `[size, size]` union of `(x0, y0, x1, y1)` boxes, each grown by `dilate_px` on every side.

    A pixel belongs to a box when its centre lies inside it, so a box smaller than a pixel may cover none.
    """
    centres = np.arange(size, dtype=np.float64) + 0.5
    mask = np.zeros((size, size), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(grid_boxes, dtype=np.float64).reshape(-1, 4):
        rows = (centres >= y0 - dilate_px) & (centres <= y1 + dilate_px)
        cols = (centres >= x0 - dilate_px) & (centres <= x1 + dilate_px)
        mask |= rows[:, None] & cols[None, :]
    return mask
