"""The GRAZPEDWRI-DX YOLO box reader on real label shapes, and boxes.parquet from ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.sources.boxes import (
    CLASS_NAMES,
    NO_IMAGE,
    boxes_table,
    find_class_names,
    parse_label_text,
    scan_boxes,
)


def parse(text: str) -> tuple[list[tuple], list[tuple]]:
    return parse_label_text(text, "0001_1_1_WRI-L1_M010.txt", CLASS_NAMES)


def test_documented_class_order_puts_fracture_at_3_and_text_at_8() -> None:
    assert CLASS_NAMES.index("fracture") == 3 and CLASS_NAMES.index("text") == 8 and len(CLASS_NAMES) == 9


def test_empty_file_and_blank_lines_are_no_boxes_and_no_quarantine() -> None:
    assert parse("") == ([], [])
    assert parse("\n\r\n  \n") == ([], [])


def test_crlf_trailing_spaces_and_trailing_newline_parse() -> None:
    boxes, bad = parse("3 0.5 0.4 0.1 0.2  \r\n8 0.9 0.1 0.05 0.05\r\n")
    assert bad == []
    assert [(b[1], b[2], b[3], b[4], b[5], b[7]) for b in boxes] == [
        ("fracture", 0.5, 0.4, 0.1, 0.2, 1),
        ("text", 0.9, 0.1, 0.05, 0.05, 2),
    ]
    assert boxes[0][0] == "0001_1_1_WRI-L1_M010"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("3 0.5 0.5 0.1 0.1 0.87", "expected 5 columns"),  # a detector's confidence
        ("3 0.5 0.5 0.1", "expected 5 columns"),
        ("9 0.5 0.5 0.1 0.1", "class 9 out of range 0..8"),
        ("-1 0.5 0.5 0.1 0.1", "class -1 out of range"),
        ("3.0 0.5 0.5 0.1 0.1", "not an integer"),
        ("3 0.5 0.5 abc 0.1", "not numbers"),
        ("3 0.5 0.5 nan 0.1", "not finite"),
        ("3 0.5 0.5 0 0.1", "zero or negative size"),
        ("3 0.98 0.5 0.1 0.1", "outside [0, 1]"),
        ("3 0.5 1.2 0.1 0.1", "outside [0, 1]"),
    ],
)
def test_bad_lines_are_quarantined_with_file_and_line(line: str, reason: str) -> None:
    boxes, bad = parse(f"3 0.5 0.5 0.1 0.1\n{line}\n")
    assert len(boxes) == 1
    assert len(bad) == 1
    file, number, why = bad[0]
    assert (file, number) == ("0001_1_1_WRI-L1_M010.txt", 2)
    assert reason in why


def test_a_box_touching_the_edge_by_rounding_is_kept() -> None:
    boxes, bad = parse("8 0.9750005 0.5 0.050001 0.1\n")
    assert bad == [] and len(boxes) == 1


def test_names_from_a_yolo_yaml_beside_the_labels_win(tmp_path: Path) -> None:
    labels = tmp_path / "yolov5" / "labels"
    labels.mkdir(parents=True)
    (tmp_path / "yolov5" / "meta.yaml").write_text("path: .\nnames:\n  0: text\n  1: fracture\n")
    (labels / "a.txt").write_text("0 0.1 0.1 0.1 0.1\n1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    names, where = find_class_names(labels)
    assert names == ("text", "fracture") and where.endswith("meta.yaml")
    scan = scan_boxes(labels)
    assert list(scan.boxes["class"]) == ["text", "fracture"]
    assert list(scan.quarantine["reason"]) == ["class 2 out of range 0..1"]


def test_without_a_names_file_the_documented_order_is_used(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    scan = scan_boxes(tmp_path)
    assert scan.names_source == "documented order" and list(scan.boxes["class"]) == ["fracture"]
    assert scan.files == 1


def test_a_malformed_names_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: 7\n")
    with pytest.raises(InputError, match="data.yaml"):
        find_class_names(tmp_path)


def test_boxes_table_turns_boxes_upright_and_quarantines_orphans(tmp_path: Path) -> None:
    (tmp_path / "img_a.txt").write_text("3 0.2 0.1 0.1 0.2\n")
    (tmp_path / "img_b.txt").write_text("8 0.5 0.5 0.1 0.1\n")
    (tmp_path / "ghost.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    images = pd.DataFrame(
        {"image_id": ["A", "B"], "stem": ["img_a", "img_b"], "width": [300, 200], "height": [100, 100],
         "orientation": [6, 1]}
    )  # fmt: skip
    table, orphans = boxes_table(scan_boxes(tmp_path), images)
    a = table[table["image_id"] == "A"].iloc[0]
    # rotate 90 clockwise: x' = 1 - y, y' = x, sides swap; the upright image is 100 wide, 300 tall
    assert (a["x"], a["y"], a["w"], a["h"]) == pytest.approx((0.9, 0.2, 0.2, 0.1))
    assert (a["image_width"], a["image_height"]) == (100, 300)
    assert table[table["image_id"] == "B"]["class"].tolist() == ["text"]
    assert orphans.to_dict("records") == [{"file": "ghost.txt", "line": 1, "reason": NO_IMAGE}]
    assert np.all((table[["x", "y", "w", "h"]] >= 0) & (table[["x", "y", "w", "h"]] <= 1))
