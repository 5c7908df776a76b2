"""GRAZPEDWRI-DX detection boxes: the YOLO label files of the dataset's `folder_structure` download.

Layout: `yolov5/labels/<image file stem>.txt`, one `class x_center y_center width height` line per box, each value
normalised to the stored image ([0, 1]). An image without findings has an empty file or none. Class names come from
the dataset's own names list when the download ships one (a YOLO dataset yaml with `names:`, or a `classes.txt` /
`*.names` file, in the labels folder or up to two folders above it); otherwise the documented alphabetical order.

A line that does not parse, has a class index out of range, or a box outside [0, 1] is quarantined with its file and
line number (nothing is dropped silently). A line with more than five columns (a detector's confidence, a polygon)
is quarantined too: guessing which columns are the box would misplace it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fracture.base.errors import InputError
from fracture.sources import decode_text

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "boneanomaly",
    "bonelesion",
    "foreignbody",
    "fracture",
    "metal",
    "periostealreaction",
    "pronatorsign",
    "softtissue",
    "text",
)
BOX_COLUMNS = ("stem", "class", "x", "y", "w", "h", "file", "line")
QUARANTINE_COLUMNS = ("file", "line", "reason")
NAME_FILES = ("classes.txt", "obj.names", "classes.names")
_EDGE_TOLERANCE = 1e-5  # labels written with 6 decimals overshoot an edge by up to 1e-6 by rounding


@dataclass(frozen=True)
class BoxScan:
    """The parsed boxes (one row per box, BOX_COLUMNS), the quarantined lines and the names used."""

    boxes: pd.DataFrame
    quarantine: pd.DataFrame
    class_names: tuple[str, ...]
    files: int
    names_source: str


def parse_names_yaml(text: str, name: str) -> tuple[str, ...] | None:
    """Class names from a YOLO dataset yaml (`names:` a list, or a mapping index -> name); None without `names`.

    Raises:
        InputError: `names` present but neither a list of strings nor a mapping 0..K-1 -> string.
    """
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{name}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or "names" not in doc:
        return None
    names = doc["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise InputError(f"{name}: `names` must map 0..{len(names) - 1} to class names")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"{name}: `names` must be a non-empty list of class names")
    return tuple(n.strip() for n in names)


def find_class_names(labels_dir: Path) -> tuple[tuple[str, ...], str]:
    """The dataset's own class names near `labels_dir`, else the documented order.

    Returns:
        (names, where they came from: a file path or "documented order").
    """
    labels_dir = Path(labels_dir)
    for folder in (labels_dir, labels_dir.parent, labels_dir.parent.parent):
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            names = parse_names_yaml(decode_text(path.read_bytes(), str(path)), str(path))
            if names is not None:
                return names, str(path)
        for file_name in NAME_FILES:
            path = folder / file_name
            if path.is_file():
                names = tuple(n.strip() for n in decode_text(path.read_bytes(), str(path)).splitlines() if n.strip())
                if names:
                    return names, str(path)
    return CLASS_NAMES, "documented order"


def parse_label_line(line: str, n_classes: int) -> tuple[int, float, float, float, float] | str:
    """One label line -> (class, x, y, w, h), or the reason it cannot be used."""
    parts = line.split()
    if len(parts) != 5:
        return f"expected 5 columns (class x_center y_center width height), got {len(parts)}"
    try:
        cls = int(parts[0])
    except ValueError:
        return f"class {parts[0]!r} is not an integer"
    if not 0 <= cls < n_classes:
        return f"class {cls} out of range 0..{n_classes - 1}"
    try:
        x, y, w, h = (float(v) for v in parts[1:])
    except ValueError:
        return "box values are not numbers"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return "box values are not finite"
    if w <= 0 or h <= 0:
        return "box has zero or negative size"
    lo, hi = -_EDGE_TOLERANCE, 1 + _EDGE_TOLERANCE
    if not (lo <= x - w / 2 and x + w / 2 <= hi and lo <= y - h / 2 and y + h / 2 <= hi):
        return "box outside [0, 1]"
    return cls, x, y, w, h


def parse_label_text(text: str, file: str, class_names: tuple[str, ...]) -> tuple[list[tuple], list[tuple]]:
    """A label file's text -> (box rows as BOX_COLUMNS, quarantine rows as QUARANTINE_COLUMNS).

    Blank lines (an empty file, a trailing newline, CRLF endings) are not boxes; surrounding spaces are ignored.
    """
    stem = Path(file).stem
    boxes, quarantined = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = parse_label_line(line, len(class_names))
        if isinstance(parsed, str):
            quarantined.append((file, number, parsed))
            continue
        cls, x, y, w, h = parsed
        boxes.append((stem, class_names[cls], x, y, w, h, file, number))
    return boxes, quarantined


def scan_boxes(labels_dir: Path) -> BoxScan:
    """Every `*.txt` label file directly in `labels_dir`, parsed.

    Raises:
        InputError: `labels_dir` is not a directory, or a names file there is malformed.
    """
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise InputError(f"{labels_dir}: box labels folder not found")
    class_names, names_source = find_class_names(labels_dir)
    files = sorted(p for p in labels_dir.glob("*.txt") if p.name not in NAME_FILES and p.is_file())
    rows, quarantined = [], []
    for path in files:
        try:
            text = decode_text(path.read_bytes(), str(path))
        except (InputError, OSError) as err:
            quarantined.append((path.name, 0, f"unreadable label file ({err})"))
            continue
        got, bad = parse_label_text(text, path.name, class_names)
        rows.extend(got)
        quarantined.extend(bad)
    return BoxScan(box_frame(rows), quarantine_frame(quarantined), class_names, len(files), names_source)


def box_frame(rows: list[tuple]) -> pd.DataFrame:
    """Typed frame of parsed boxes (BOX_COLUMNS)."""
    df = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    return df.astype(
        {"stem": "string", "class": "string", "x": "float64", "y": "float64", "w": "float64", "h": "float64"}
    ).astype({"file": "string", "line": "int64"})


def quarantine_frame(rows: list[tuple]) -> pd.DataFrame:
    """Typed frame of quarantined label lines (QUARANTINE_COLUMNS; line 0 = the whole file)."""
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)).astype(
        {"file": "string", "line": "int64", "reason": "string"}
    )


TABLE_COLUMNS = ("image_id", "class", "x", "y", "w", "h", "image_width", "image_height", "file", "line")
NO_IMAGE = "no accepted image with this file stem"


def boxes_table(scan: BoxScan, images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """boxes.parquet rows: each parsed box on the upright image of the accepted manifest row with its file stem.

    Args:
        scan: from `scan_boxes`.
        images: one row per accepted GRAZPEDWRI-DX image: image_id, stem, width, height (as stored, px) and
            orientation (EXIF 1-8).

    Returns:
        (boxes, TABLE_COLUMNS, normalised to the upright image; the boxes' quarantine rows for stems without an
        accepted image).
    """
    from fracture.images.geometry import orient_boxes, upright_size

    by_stem = images.drop_duplicates("stem").set_index("stem")
    known = scan.boxes["stem"].isin(by_stem.index)
    orphans = scan.boxes[~known]
    orphan_rows = [(str(f), int(n), NO_IMAGE) for f, n in zip(orphans["file"], orphans["line"], strict=True)]
    boxes = scan.boxes[known].reset_index(drop=True)
    meta = by_stem.loc[boxes["stem"].to_numpy()].reset_index(drop=True)
    xywh = boxes[["x", "y", "w", "h"]].to_numpy(dtype="float64")
    for orientation in sorted(set(meta["orientation"].astype(int)) - {1}):
        rows = (meta["orientation"].astype(int) == orientation).to_numpy()
        xywh[rows] = orient_boxes(xywh[rows], orientation)
    dims = zip(meta["height"], meta["width"], meta["orientation"], strict=True)
    sizes = [upright_size(int(h), int(w), int(o)) for h, w, o in dims]
    table = pd.DataFrame(
        {
            "image_id": meta["image_id"].astype("string"),
            "class": boxes["class"].astype("string"),
            "x": xywh[:, 0],
            "y": xywh[:, 1],
            "w": xywh[:, 2],
            "h": xywh[:, 3],
            "image_width": pd.array([s[1] for s in sizes], dtype="int64"),
            "image_height": pd.array([s[0] for s in sizes], dtype="int64"),
            "file": boxes["file"].astype("string"),
            "line": boxes["line"].astype("int64"),
        },
        columns=list(TABLE_COLUMNS),
    )
    return table, quarantine_frame(orphan_rows)


def empty_table() -> pd.DataFrame:
    """boxes.parquet without boxes (TABLE_COLUMNS, typed)."""
    table, _ = boxes_table(
        BoxScan(box_frame([]), quarantine_frame([]), CLASS_NAMES, 0, "none"),
        pd.DataFrame({"image_id": [], "stem": [], "width": [], "height": [], "orientation": []}),
    )
    return table
