"""Hospital adapter (adult wrist crops by part: radius, scaphoid, styloid).

Layout: `<root>/<part>/{positive,negative}/**/<image>` (a `_set` suffix on the part folder is allowed), plus an
optional `<root>/metadata.csv` with `path` (relative to the root), `patient_id`, `age`, `sex` and optionally
`label` and `body_part`, which override the folders. Files may be PNG, JPEG or DICOM (with or without a suffix).

Offline-augmented copies (`nega_1000_0.png` ... beside `nega_1000.png`) are recognised by name
(`ingest.augmented_copy_pattern`), whether or not the original file is present: they carry `augmented_from` (the
original's group key) and share a `group_id` with the original and each other, so a split never separates them.
Patient ids are pseudonymised with the keyed hash of fracture.sources.privacy; age and sex come only from
metadata.csv or
DICOM headers, never from a default.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.sources import (
    CASE_MISMATCH,
    LABEL_INVALID,
    NO_LABEL,
    PATH_ESCAPE,
    SHORT_ROW,
    Candidate,
    Rejected,
    SourceScan,
    dedupe_rows,
    normalise_sex,
    parse_age,
    parse_binary,
    parse_csv,
    read_text,
    reject,
    safe_relpath,
    table_conflicts,
    take_short_rows,
    walk_files,
)
from fracture.sources.privacy import pseudonymise

log = logging.getLogger(__name__)

SOURCE = "hospital"
META_NAME = "metadata.csv"
META_REQUIRED = ("path", "patient_id", "age", "sex")
LABEL_DIRS = {"positive": 1, "negative": 0}
_AUGMENTED = re.compile(r"^(?P<base>.+)_\d+$")


def part_name(folder: str) -> str:
    """Body part from a part folder or metadata value: lower case, `_set` suffix stripped."""
    return folder.strip().lower().removesuffix("_set")


def folder_info(path: str) -> tuple[str | None, int | None]:
    """(part, label) that the folders give a relative path; None where they say nothing."""
    parts = path.split("/")
    part = part_name(parts[0]) if len(parts) >= 2 else None
    label = LABEL_DIRS.get(parts[1].lower()) if len(parts) >= 3 else None
    return part, label


def augmentation_base(stem: str, stems: set[str], copy_pattern: re.Pattern[str] | None) -> str:
    """The original an augmented copy was made from, decided by the name.

    A stem matching `copy_pattern` is a copy of its `base` group whether or not that file exists
    (`nega_1000_3` -> `nega_1000`); a stem `base_k` beside an existing `base` is a copy too. Repeated, so a copy
    of a copy leads to the first original. A stem that is neither is its own original.
    """
    base = stem
    while True:
        named = copy_pattern.match(base) if copy_pattern is not None else None
        beside = _AUGMENTED.match(base)
        if named and 0 < len(named["base"]) < len(base):  # strictly shorter: a pattern cannot loop forever
            base = named["base"]
        elif beside and beside["base"] in stems:
            base = beside["base"]
        else:
            return base


def parse_metadata(text: str, name: str) -> pd.DataFrame:
    """metadata.csv text -> DataFrame of strings.

    Raises:
        InputError: bad delimiter, malformed, or missing required columns (named).
    """
    return parse_csv(text, name, META_REQUIRED)


def metadata_index(df: pd.DataFrame, name: str = META_NAME) -> tuple[dict[str, dict[str, str]], list[Rejected]]:
    """Normalised relative path -> metadata record, and the rows refused.

    Refused: a path escaping the root, a row with fewer fields than the header, and every row of a path listed
    twice with contradicting values (`conflicting labels` when the labels differ, else `conflicting metadata`,
    e.g. two patient ids): which row is right cannot be told, so none is used. Exact repeats are dropped.
    """
    df, short = take_short_rows(df, "path", name)
    rejected = [reject(SOURCE, safe_relpath(p) or p.strip(), SHORT_ROW, why) for p, why in short]
    df = df.assign(path=[safe_relpath(p) or f"\x00{p}" for p in df["path"]])
    df, conflicts = table_conflicts(df, "path", "label", name)
    rejected += [reject(SOURCE, path.removeprefix("\x00").strip(), code, detail) for path, code, detail in conflicts]
    df, _, _ = dedupe_rows(df, "path", name)
    index: dict[str, dict[str, str]] = {}
    for rec in df.to_dict("records"):
        if rec["path"].startswith("\x00"):
            rejected.append(reject(SOURCE, rec["path"][1:].strip(), PATH_ESCAPE))
        else:
            index[rec["path"]] = rec
    return index, rejected


def case_mismatches(files: list[str], meta: dict[str, dict[str, str]]) -> list[Rejected]:
    """Metadata paths that name an existing file only with other letter case (`Radius/` for `radius/`).

    Paths match case-sensitively (as on Linux); using the file by its folders while its metadata row points
    elsewhere would count one image twice and drop its patient id, so the file is quarantined instead, naming the
    metadata path, and that metadata row is removed from `meta` (in place). One row per image.
    """
    present = set(files)
    by_lower: dict[str, list[str]] = {}
    for f in files:
        by_lower.setdefault(f.lower(), []).append(f)
    rejected = []
    for path in sorted(p for p in meta if p not in present):
        matches = [f for f in by_lower.get(path.lower(), []) if f not in meta]
        if len(matches) == 1:
            del meta[path]
            rejected.append(reject(SOURCE, matches[0], CASE_MISMATCH, f"metadata.csv lists {path}"))
    if rejected:
        log.warning("hospital: %d metadata.csv paths differ from their file only in letter case; those files are "
                    "quarantined (fix the case in metadata.csv)", len(rejected))  # fmt: skip
    return rejected


def _label(path: str, folder_label: int | None, meta: Mapping[str, str]) -> tuple[int, str] | Rejected:
    raw = str(meta.get("label", "")).strip()
    try:
        value = parse_binary(raw)
    except ValueError:
        return reject(SOURCE, path, LABEL_INVALID, f"metadata label {raw[:20]!r}")
    if value is not None:
        return value, "metadata"
    if folder_label is None:
        return reject(SOURCE, path, NO_LABEL, "not under positive/ or negative/ and no metadata label")
    return folder_label, "folder"


def resolve_part(path: str, meta: Mapping[str, str]) -> str:
    """Body part: metadata `body_part` when given, else the part folder ("unknown" for files at the root)."""
    override = str(meta.get("body_part", "")).strip()
    return part_name(override) if override else (folder_info(path)[0] or "unknown")


def hospital_row(
    path: str, meta: Mapping[str, str], stems: set[str], key: bytes, copy_pattern: re.Pattern[str] | None
) -> Candidate | Rejected:
    """One file (or metadata row) -> a candidate with pseudonymised ids, its augmentation group and original."""
    label = _label(path, folder_info(path)[1], meta)
    if isinstance(label, Rejected):
        return label
    part = resolve_part(path, meta)
    stem = posixpath.splitext(posixpath.basename(path))[0]
    base = augmentation_base(stem, stems, copy_pattern)
    group = f"{SOURCE}:{part}/{base}"
    patient = str(meta.get("patient_id", "")).strip()
    fields: dict[str, Any] = {
        "patient_id": pseudonymise(patient, SOURCE, key) if patient else None,
        "study_id": None,
        "label": label[0],
        "label_source": label[1],
        "body_part": part,
        "age": parse_age(meta.get("age", "")),
        "sex": normalise_sex(meta.get("sex", "")),
        "group_id": group,
        "augmented_from": group if base != stem else None,
    }
    return Candidate(SOURCE, path, fields, fallback_patient_id=pseudonymise(f"group:{group}", SOURCE, key))


def candidate_paths(files: list[str], meta_paths: set[str]) -> tuple[list[str], int]:
    """Files under a part folder (one with a positive/ or negative/ child) plus every metadata path.

    Returns the sorted paths and how many files lie outside that layout (ignored).
    """
    part_dirs = {f.split("/")[0] for f in files if folder_info(f)[1] is not None}
    inside = {f for f in files if "/" in f and f.split("/")[0] in part_dirs}
    return sorted(inside | meta_paths), len(set(files) - inside - meta_paths)


def copy_stats(candidates: list[Candidate]) -> dict[str, int]:
    """How many candidates are augmented copies, and how many of those have no original among the candidates."""
    copies = [c for c in candidates if c.fields.get("augmented_from")]
    originals = {c.fields["group_id"] for c in candidates if not c.fields.get("augmented_from")}
    orphans = sum(1 for c in copies if c.fields["augmented_from"] not in originals)
    return {"augmented_copies": len(copies), "copies_without_original": orphans}


def hospital_candidates(
    files: list[str], meta: dict[str, dict[str, str]], key: bytes, copy_pattern: re.Pattern[str] | None
) -> SourceScan:
    """Walked files and metadata records -> candidates and rejections."""
    paths, outside = candidate_paths(files, set(meta))
    stems_by_part: dict[str, set[str]] = {}
    for path in paths:
        stem = posixpath.splitext(posixpath.basename(path))[0]
        stems_by_part.setdefault(resolve_part(path, meta.get(path, {})), set()).add(stem)
    scan = SourceScan(SOURCE, stats={"files_outside_layout": outside})
    for path in paths:
        rec = meta.get(path, {})
        item = hospital_row(path, rec, stems_by_part[resolve_part(path, rec)], key, copy_pattern)
        (scan.candidates if isinstance(item, Candidate) else scan.rejected).append(item)
    scan.stats.update(copy_stats(scan.candidates))
    if outside:
        log.warning("hospital: %d files outside <part>/{positive,negative}/ and not in metadata.csv (ignored)", outside)
    if scan.stats["copies_without_original"]:
        log.warning(
            "hospital: %d augmented copies have no original file; they are grouped by the original's name and "
            "can only be used for training",
            scan.stats["copies_without_original"],
        )
    return scan


def scan_hospital(root: Path, key: bytes, copy_pattern: str | None) -> SourceScan:
    """Walk the hospital root once, read metadata.csv if present, and build the candidates.

    Args:
        root: the hospital root.
        key: pseudonymisation key.
        copy_pattern: `ingest.augmented_copy_pattern` (None: only a copy beside its original is recognised).

    Raises:
        InputError: metadata.csv exists but is not UTF-8 or lacks required columns.
    """
    root = Path(root)
    walk = walk_files(root)
    meta: dict[str, dict[str, str]] = {}
    rejected: list[Rejected] = []
    meta_path = root / META_NAME
    if meta_path.is_file():
        meta, rejected = metadata_index(parse_metadata(read_text(meta_path), str(meta_path)), str(meta_path))
    files = [f for f in walk.files if f != META_NAME]
    rejected += case_mismatches(files, meta)
    refused = {r.path for r in rejected}  # a refused metadata row's file is not used by its folders either
    files = [f for f in files if f not in refused]
    scan = hospital_candidates(files, meta, key, re.compile(copy_pattern) if copy_pattern else None)
    scan.rejected = rejected + scan.rejected
    scan.stats.update({"junk_files": walk.junk_files, "metadata_rows": len(meta) + len(rejected)})
    return scan
