"""GRAZPEDWRI-DX ("Kaggle", pediatric wrist) adapter.

`<root>/dataset.csv` (UTF-8 with a BOM, 17 columns) lists one row per image; images live anywhere below the root
(`images_partN/` or a nested `images_partN/images_partN/`) and are found by file stem from one walk of the tree.
The label is `fracture_visible` (1 -> 1, empty -> 0; `1.0` after a pandas re-save). The AO (PCCF) codes in
`ao_classification` are parsed here, once, by fracture.sources.ao (the manifest's `ao_codes`, `ao_status`, `physeal`,
`salter_harris`).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fracture.base.errors import InputError
from fracture.images.header import FILE_MISSING
from fracture.sources import (
    CONFLICTING_LABELS,
    CONFLICTING_METADATA,
    IMAGE_SUFFIXES,
    LABEL_INVALID,
    MISSING_ID,
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
    take_short_rows,
    walk_files,
)
from fracture.sources.ao import ao_fields

log = logging.getLogger(__name__)

SOURCE = "kaggle"
CSV_NAME = "dataset.csv"
FLAG_COLUMNS = ("initial_exam", "cast", "metal", "diagnosis_uncertain", "osteopenia")
REQUIRED_COLUMNS = (
    "filestem",
    "patient_id",
    "study_number",
    "gender",
    "age",
    "projection",
    "ao_classification",
    "fracture_visible",
    *FLAG_COLUMNS,
)
PROJECTIONS = {1: "ap_pa", 2: "lateral", 3: "other"}
_FILESTEM = re.compile(r"^(?P<patient>\d+)_(?P<time>\d+)_(?P<study>\d+)_")


def parse_kaggle_table(text: str, name: str) -> pd.DataFrame:
    """dataset.csv text -> DataFrame of strings.

    Raises:
        InputError: bad delimiter, malformed table, or missing required columns (named).
    """
    return parse_csv(text, name, REQUIRED_COLUMNS)


def index_images(files: list[str]) -> tuple[dict[str, str], int]:
    """Map file stem -> relative path for the image files of a walk.

    When a stem occurs more than once (a mirror holding two copies), the PNG under `images_part*` closest to the
    root wins. Returns the map and how many extra copies were passed over.
    """

    def preference(path: str) -> tuple[bool, bool, int, str]:
        suffix = posixpath.splitext(path)[1].lower()
        return suffix != ".png", "images_part" not in path, path.count("/"), path

    by_stem: dict[str, str] = {}
    extra = 0
    for path in sorted((f for f in files if posixpath.splitext(f)[1].lower() in IMAGE_SUFFIXES), key=preference):
        stem = posixpath.splitext(posixpath.basename(path))[0]
        if stem in by_stem:
            extra += 1
        else:
            by_stem[stem] = path
    return by_stem, extra


def _stem_of(raw: str) -> tuple[str | None, Rejected | None]:
    """The file stem a `filestem` cell refers to, or a rejection (empty, or a path escaping the root)."""
    text = raw.strip()
    if not text:
        return None, reject(SOURCE, raw, MISSING_ID, "empty filestem")
    if "/" in text or "\\" in text:
        rel = safe_relpath(text)
        if rel is None:
            return None, reject(SOURCE, text, PATH_ESCAPE)
        text = posixpath.basename(rel)
    stem, suffix = posixpath.splitext(text)
    return (stem if suffix.lower() in IMAGE_SUFFIXES else text), None


def _integer_text(value: str) -> str | None:
    """Canonical integer text ("01", "1", "1.0" -> "1"); other non-empty text unchanged; empty -> None."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text or None
    return str(int(number)) if number.is_integer() and number >= 0 else text


def _patient_id(value: str, stem: str) -> str | None:
    """Zero-padded 4-digit patient id as in the file stems ("2", "2.0", "0002" -> "0002")."""
    text = _integer_text(value)
    if text is None:
        match = _FILESTEM.match(stem)
        text = str(int(match["patient"])) if match else None
    if text is None:
        return None
    return text.zfill(4) if text.isdigit() else text


def _flag(value: str) -> bool | None:
    """Flags hold 1 or are empty (empty = False); None for a value that is neither."""
    try:
        return bool(parse_binary(value) or 0)
    except ValueError:
        return None


def _projection(value: str) -> str | None:
    text = _integer_text(value)
    return PROJECTIONS.get(int(text)) if text and text.isdigit() else None


def kaggle_row(rec: Mapping[str, str], stem_paths: Mapping[str, str]) -> Candidate | Rejected:
    """One dataset.csv row -> a candidate (path found by stem, fields mapped) or a rejection."""
    stem, problem = _stem_of(rec["filestem"])
    if problem is not None:
        return problem
    path = stem_paths.get(stem)
    if path is None:
        return reject(SOURCE, rec["filestem"].strip(), FILE_MISSING)
    try:
        label = parse_binary(rec["fracture_visible"]) or 0
    except ValueError:
        return reject(SOURCE, path, LABEL_INVALID, f"fracture_visible {rec['fracture_visible'].strip()[:20]!r}")
    patient = _patient_id(rec["patient_id"], stem)
    if patient is None:
        return reject(SOURCE, path, MISSING_ID, "empty patient_id")
    match = _FILESTEM.match(stem)
    study = _integer_text(rec["study_number"]) or (str(int(match["study"])) if match else None)
    fields = {
        "patient_id": f"kaggle:{patient}",
        "study_id": f"kaggle:{patient}_{study}" if study else None,
        "label": label,
        "label_source": "fracture_visible",
        "body_part": "wrist",
        "age": parse_age(rec["age"]),
        "sex": normalise_sex(rec["gender"]),
        "projection": _projection(rec["projection"]),
        "ao_code": rec["ao_classification"].strip() or None,
        **ao_fields(rec["ao_classification"], fracture_visible=label == 1),
        **{flag: _flag(rec[flag]) for flag in FLAG_COLUMNS},
    }
    return Candidate(SOURCE, path, fields)


def _label_key(value: str) -> str:
    try:
        return str(parse_binary(value) or 0)
    except ValueError:
        return str(value).strip()


def label_conflicts(df: pd.DataFrame, stem_paths: Mapping[str, str]) -> tuple[pd.DataFrame, list[Rejected]]:
    """Drop every row of an image listed with different `fracture_visible` values; one quarantine row per image.

    Keeping the first of two contradictory labels would be an arbitrary label; MURA quarantines such studies too.
    """
    conflicted = df["fracture_visible"].map(_label_key).groupby(df["filestem"]).transform("nunique") > 1
    rejected = []
    for filestem in df.loc[conflicted, "filestem"].unique():
        path = stem_paths.get(_stem_of(filestem)[0] or "", filestem)
        rejected.append(reject(SOURCE, path, CONFLICTING_LABELS, "dataset.csv rows disagree on fracture_visible"))
    return df[~conflicted], rejected


def metadata_conflicts(df: pd.DataFrame, stem_paths: Mapping[str, str]) -> tuple[pd.DataFrame, list[Rejected]]:
    """Drop every row of an image listed more than once with different metadata; one quarantine row per image.

    Which row is right cannot be told from the table, so none is kept silently; the reason names the columns.
    Labels are compared by `label_conflicts` first (so `1` and `1.0` are the same label here).
    """
    columns = [c for c in df.columns if c not in ("filestem", "fracture_visible")]
    cells = df[columns].apply(lambda col: col.astype(str).str.strip())
    groups = cells.groupby(df["filestem"])
    differing = groups.nunique() > 1  # [filestems, columns]
    conflicted_stems = differing.index[differing.any(axis=1)]
    rejected = []
    for filestem in conflicted_stems:
        names = ", ".join(c for c in columns if differing.loc[filestem, c])
        path = stem_paths.get(_stem_of(filestem)[0] or "", filestem)
        rejected.append(reject(SOURCE, path, CONFLICTING_METADATA, f"dataset.csv rows disagree on {names}"))
    return df[~df["filestem"].isin(conflicted_stems)], rejected


def kaggle_candidates(df: pd.DataFrame, stem_paths: Mapping[str, str], name: str = CSV_NAME) -> SourceScan:
    """All dataset.csv rows -> candidates and rejections, with duplicate rows dropped (and counted).

    Rows of one image that disagree on the label quarantine that image (`conflicting labels`); a row with fewer
    fields than the header is quarantined (`short table row`): its missing `fracture_visible` is not a 0.
    """
    df, short = take_short_rows(df, "filestem", name)
    short_rejected = [
        reject(SOURCE, stem_paths.get(_stem_of(stem)[0] or "", stem), SHORT_ROW, why) for stem, why in short
    ]
    df = df.assign(filestem=df["filestem"].str.strip())
    df, label_rejected = label_conflicts(df, stem_paths)
    if label_rejected:
        log.warning("%s: %d images are listed with conflicting labels; quarantined", name, len(label_rejected))
    df, meta_rejected = metadata_conflicts(df, stem_paths)
    if meta_rejected:
        log.warning("%s: %d images are listed with conflicting metadata; quarantined", name, len(meta_rejected))
    df, exact, conflicting = dedupe_rows(df, "filestem", name)
    scan = SourceScan(SOURCE, rejected=short_rejected + label_rejected + meta_rejected)
    for rec in df.to_dict("records"):
        item = kaggle_row(rec, stem_paths)
        (scan.candidates if isinstance(item, Candidate) else scan.rejected).append(item)
    listed = {c.path for c in scan.candidates} | {r.path for r in scan.rejected}
    # flag cells that were neither empty nor 0/1
    bad_flags = sum(1 for c in scan.candidates for f in FLAG_COLUMNS if c.fields[f] is None)
    scan.stats = {
        "duplicate_rows": exact,
        "conflicting_rows": conflicting,
        "unlisted_images": sum(1 for p in stem_paths.values() if p not in listed),
        "invalid_flag_values": bad_flags,
    }
    if bad_flags:
        log.warning("%s: %d flag cells are neither empty nor 0/1; stored as null", name, bad_flags)
    return scan


def scan_kaggle(root: Path) -> SourceScan:
    """Read `<root>/dataset.csv`, walk the tree once, and build the candidates.

    Raises:
        InputError: dataset.csv missing, not UTF-8, malformed, or holding no image rows (a header only).
    """
    csv_path = Path(root) / CSV_NAME
    df = parse_kaggle_table(read_text(csv_path), str(csv_path))
    if df.empty:
        raise InputError(
            f"{csv_path}: header only, no image rows (GRAZPEDWRI-DX lists one row per image); a truncated export?"
        )
    walk = walk_files(Path(root))
    stem_paths, extra_copies = index_images(walk.files)
    scan = kaggle_candidates(df, stem_paths, str(csv_path))
    scan.stats.update({"extra_image_copies": extra_copies, "junk_files": walk.junk_files})
    if scan.stats["unlisted_images"]:
        log.info("kaggle: %d image files are not listed in %s (ignored)", scan.stats["unlisted_images"], CSV_NAME)
    return scan
