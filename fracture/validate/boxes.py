"""Great Expectations checks of boxes.parquet, the radiologists' boxes from ingest.

`validate` runs them beside the manifest's suite: every box names an image of the manifest, lies inside [0, 1], has
an upright image size, and a known class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe

from fracture.sources.boxes import CLASS_NAMES, TABLE_COLUMNS

SUITE_NAME = "boxes"
BOX_SEVERITY: dict[str, str] = {
    "boxes_columns_present": "blocking",
    "boxes_image_known": "blocking",
    "boxes_inside_image": "blocking",
    "boxes_upright_size": "blocking",
    "boxes_class_known": "warning",  # a names file may bring other class names; figures need fracture/text/metal
}


def build_box_suite(meta: Callable[[str], dict[str, Any]], image_ids: Sequence[str]) -> gx.ExpectationSuite:
    """The box table's suite; `meta(name)` gives an expectation's name and severity kwargs (validate._meta)."""
    out: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(TABLE_COLUMNS), exact_match=False, **meta("boxes_columns_present")
        ),
        gxe.ExpectColumnValuesToBeInSet(column="image_id", value_set=list(image_ids), **meta("boxes_image_known")),
        gxe.ExpectColumnValuesToBeInSet(column="class", value_set=list(CLASS_NAMES), **meta("boxes_class_known")),
    ]
    out += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1, **meta(f"boxes_inside_image:{c}"))
        for c in ("x", "y", "w", "h")
    ]
    out += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=1, **meta(f"boxes_upright_size:{c}"))
        for c in ("image_width", "image_height")
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=out)
