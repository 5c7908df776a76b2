"""MURA v1.1 adapter (adult musculoskeletal radiographs; XR_WRIST by default).

`--mura` is the `MURA-v1.1` folder. Its four CSVs list every image (`{train,valid}_image_paths.csv`, one path per
line) and every study label (`{train,valid}_labeled_studies.csv`, `<study dir>/,<0|1>`). Paths in them start with
`MURA-v1.1/` and resolve against the folder's parent. Images are joined to their study on the first five path
parts; labels are per study (1 = abnormal). Study numbers restart for each study type, so a study id holds the
type (`mura:XR_WRIST/patient00001/study1`); patient ids do not (`mura:patient00001`). Only the CSVs define
candidates, so AppleDouble `._*` junk in an archive never becomes an image.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from fracture.base.errors import InputError
from fracture.sources import (
    APPLEDOUBLE,
    BAD_LAYOUT,
    CONFLICTING_LABELS,
    LABEL_INVALID,
    NO_LABEL,
    PATH_ESCAPE,
    Candidate,
    Rejected,
    SourceScan,
    label_key,
    parse_binary,
    read_text,
    reject,
    safe_relpath,
)

log = logging.getLogger(__name__)

SOURCE = "mura"
PREFIX = "MURA-v1.1"
SPLITS = ("train", "valid")
BODY_PARTS = {"XR_WRIST": "wrist", "XR_FOREARM": "forearm", "XR_HAND": "hand", "XR_ELBOW": "elbow"}


def csv_names(split: str) -> tuple[str, str]:
    """(image paths CSV, labeled studies CSV) of a MURA split."""
    return f"{split}_image_paths.csv", f"{split}_labeled_studies.csv"


def _rows(text: str, name: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank lines; a first line without a path is a header."""
    try:
        rows = [(i + 1, [f.strip() for f in row]) for i, row in enumerate(csv.reader(io.StringIO(text)))]
    except csv.Error as err:
        raise InputError(f"{name}: not a valid CSV file ({err})") from None
    rows = [(n, fields) for n, fields in rows if any(fields)]
    if rows and is_header(rows[0][1]):
        header, rows = rows[0][1], rows[1:]
        repeated = [n for n, fields in rows if fields == header]  # two copies concatenated, header and all
        if repeated:
            log.warning("%s: dropped %d repeated header line(s) inside the file", name, len(repeated))
            rows = [(n, fields) for n, fields in rows if fields != header]
    return rows


def is_header(fields: list[str]) -> bool:
    """Whether a first line is a header (`Img_Path`, `Study_Path,Label`), judged by content.

    Every MURA data line starts with a path that has a folder part, written with a slash or a Windows
    backslash; a header's first cell has neither, and a second cell, when present, is not a 0/1 label.
    """
    first = fields[0].replace("\\", "/") if fields else ""
    label = fields[1].strip() if len(fields) > 1 else ""
    return bool(first) and "/" not in first and label not in ("0", "1")


def parse_image_paths(text: str, name: str) -> list[str]:
    """`*_image_paths.csv` text -> the listed paths (header line optional).

    Raises:
        InputError: a line with more than one value (e.g. a studies file given instead).
    """
    paths = []
    for line, fields in _rows(text, name):
        values = [f for f in fields if f]
        if len(values) != 1:
            raise InputError(f"{name}: line {line}: expected one image path per line, found {len(values)} values")
        paths.append(values[0])
    return paths


def parse_labeled_studies(text: str, name: str) -> list[tuple[str, str]]:
    """`*_labeled_studies.csv` text -> (study path, raw label) pairs (header line optional).

    Raises:
        InputError: a line that is not `<study dir>/,<label>` (a wrong delimiter is named).
    """
    studies = []
    for line, fields in _rows(text, name):
        values = [f for f in fields if f]
        if len(values) == 1 and any(d in values[0] for d in (";", "\t", "|")):
            delim = next(d for d in (";", "\t", "|") if d in values[0])
            raise InputError(f"{name}: line {line}: values are separated by {delim!r}, expected a comma")
        if len(fields) < 2 or len(values) > 2 or not fields[0]:
            raise InputError(f"{name}: line {line}: expected `<study dir>/,<label>`, found {len(values)} values")
        studies.append((fields[0], fields[1]))
    return studies


def mura_relpath(raw: str, root_name: str = PREFIX) -> str | None:
    """A CSV path made relative to the MURA folder; None if it escapes that folder.

    `MURA-v1.1/<rest>` resolves against the folder's parent, which is `<rest>` below the folder itself; a path
    without that prefix is taken as relative to the folder.
    """
    text = raw.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    head, sep, rest = text.partition("/")
    if sep and head in (PREFIX, root_name):
        text = rest
    return safe_relpath(text)


def study_labels(studies: Iterable[tuple[str, str]], root_name: str = PREFIX) -> dict[str, str | None]:
    """Study key (first four parts below the MURA folder) -> raw label, None where two rows disagree.

    Labels are compared by value: `1` and `1.0` (a re-saved CSV) are the same label, not a conflict.
    """
    labels: dict[str, str | None] = {}
    for raw_path, raw_label in studies:
        rel = mura_relpath(raw_path, root_name)
        if rel is None:
            continue
        key = "/".join(rel.split("/")[:4])
        if key in labels and (labels[key] is None or label_key(labels[key]) != label_key(raw_label)):
            labels[key] = None
        else:
            labels.setdefault(key, raw_label)
    return labels


def _study_label(key: str, path: str, labels: dict[str, str | None]) -> int | Rejected:
    if key not in labels:
        return reject(SOURCE, path, NO_LABEL, "study not in the labeled_studies CSVs")
    raw = labels[key]
    if raw is None:
        return reject(SOURCE, path, CONFLICTING_LABELS, "study listed with different labels")
    try:
        label = parse_binary(raw)
    except ValueError:
        label = None
    if label is None:
        return reject(SOURCE, path, LABEL_INVALID, f"study label {raw[:20]!r}")
    return label


def mura_row(split: str, raw: str, labels: dict[str, str | None], root_name: str = PREFIX) -> Candidate | Rejected:
    """One image path -> candidate or rejection (study-type filtering is the caller's job)."""
    rel = mura_relpath(raw, root_name)
    if rel is None:
        return reject(SOURCE, raw.strip(), PATH_ESCAPE)
    parts = rel.split("/")
    if len(parts) != 5:
        return reject(SOURCE, rel, BAD_LAYOUT, "expected <split>/<type>/<patient>/<study>/<image>")
    if parts[4].startswith("._"):
        return reject(SOURCE, rel, APPLEDOUBLE, "not an image")
    label = _study_label("/".join(parts[:4]), rel, labels)
    if isinstance(label, Rejected):
        return label
    study = parts[3].removesuffix("_positive").removesuffix("_negative")
    fields = {
        "patient_id": f"mura:{parts[2]}",
        "study_id": f"mura:{parts[1]}/{parts[2]}/{study}",  # study numbers restart per study type
        "label": label,
        "label_source": "study_abnormal",
        "body_part": BODY_PARTS.get(parts[1], parts[1].removeprefix("XR_").lower()),
        "source_split": split,
    }
    return Candidate(SOURCE, rel, fields)


def _study_type(raw: str, root_name: str) -> str | None:
    rel = mura_relpath(raw, root_name)
    parts = rel.split("/") if rel else []
    return parts[1] if len(parts) == 5 else None


def mura_candidates(
    images: Sequence[tuple[str, str]],
    studies: Iterable[tuple[str, str]],
    study_types: Sequence[str],
    root_name: str = PREFIX,
) -> SourceScan:
    """(split, image path) rows and (study path, label) rows -> candidates of the selected study types.

    Rows of other study types are not candidates (counted as `other_study_types`); repeated paths are dropped.
    """
    labels = study_labels(studies, root_name)
    scan = SourceScan(SOURCE)
    seen: set[str] = set()
    duplicates = other_types = 0
    for split, raw in images:
        key = mura_relpath(raw, root_name) or raw.strip()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        study_type = _study_type(raw, root_name)
        if study_type is not None and study_type not in study_types:
            other_types += 1
            continue
        item = mura_row(split, raw, labels, root_name)
        (scan.candidates if isinstance(item, Candidate) else scan.rejected).append(item)
    if duplicates:
        log.warning("mura: dropped %d repeated image paths", duplicates)
    scan.stats = {"duplicate_rows": duplicates, "other_study_types": other_types}
    return scan


def scan_mura(root: Path, study_types: Sequence[str]) -> SourceScan:
    """Read the four CSVs of the MURA-v1.1 folder and build the candidates.

    Raises:
        InputError: a CSV is missing, not UTF-8, or malformed.
    """
    root = Path(root)
    missing = [n for split in SPLITS for n in csv_names(split) if not (root / n).is_file()]
    if missing:
        raise InputError(f"{root}: not a MURA-v1.1 folder, missing {', '.join(missing)}")
    images: list[tuple[str, str]] = []
    studies: list[tuple[str, str]] = []
    for split in SPLITS:
        paths_csv, studies_csv = (root / n for n in csv_names(split))
        images += [(split, p) for p in parse_image_paths(read_text(paths_csv), str(paths_csv))]
        studies += parse_labeled_studies(read_text(studies_csv), str(studies_csv))
    return mura_candidates(images, studies, study_types, root.name)
