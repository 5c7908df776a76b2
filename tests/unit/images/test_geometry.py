"""Boxes follow the image: drawn on a stored file, they land where prepare_image puts the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracture.images.decode import prepare_image
from fracture.images.geometry import box_mask, boxes_to_grid, letterbox, orient_boxes, upright_size

SIZE = 64
# normalised (xc, yc, w, h) on the stored image: an off-centre, non-square pair, so a wrong flip or swap shows
BOXES = np.array([[0.25, 0.2, 0.3, 0.16], [0.7, 0.75, 0.2, 0.3]])


def stored_image(width: int, height: int, boxes: np.ndarray) -> np.ndarray:
    img = np.full((height, width), 20, dtype=np.uint8)
    for xc, yc, w, h in boxes:
        x0, x1 = round((xc - w / 2) * width), round((xc + w / 2) * width)
        y0, y1 = round((yc - h / 2) * height), round((yc + h / 2) * height)
        img[y0:y1, x0:x1] = 235
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("width", "height"), [(200, 120), (90, 160)])
def test_boxes_land_on_the_drawn_pixels_of_the_model_input(
    tmp_path: Path, orientation: int, width: int, height: int
) -> None:
    im = Image.fromarray(stored_image(width, height, BOXES))
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "x.png"
    im.save(path, exif=exif.tobytes())
    model_input = prepare_image(path, SIZE, (0.0, 100.0))  # the real decode: orientation, letterbox, padding

    up_h, up_w = upright_size(height, width, orientation)
    grid = boxes_to_grid(orient_boxes(BOXES, orientation), up_h, up_w, SIZE)
    bright = model_input > 128
    assert bright[~box_mask(grid, SIZE, dilate_px=1.0)].sum() == 0  # nothing bright outside the mapped boxes
    for one in grid:
        inner = box_mask(one[None], SIZE, dilate_px=-1.0)
        assert inner.sum() > 0
        assert bright[inner].mean() > 0.95  # and each mapped box is filled by its drawn pixels


def test_letterbox_centres_the_short_side() -> None:
    box = letterbox(100, 300, 64)
    assert (box.new_h, box.new_w, box.top, box.left) == (21, 64, 21, 0)
    grid = boxes_to_grid(np.array([[0.5, 0.5, 1.0, 1.0]]), 100, 300, 64)
    assert grid[0] == pytest.approx([0, 21, 64, 42])


def test_orientations_compose_back_to_the_identity() -> None:
    # 6 (90 clockwise) then 8 (90 counter-clockwise) is upright again; 3 twice too
    assert orient_boxes(orient_boxes(BOXES, 6), 8) == pytest.approx(BOXES)
    assert orient_boxes(orient_boxes(BOXES, 3), 3) == pytest.approx(BOXES)


def test_box_mask_tolerance_grows_every_side() -> None:
    mask = box_mask(np.array([[10, 10, 12, 12]]), 32, dilate_px=2)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 13, 8, 13)
