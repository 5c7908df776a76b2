"""Dataset adapters: each turns one on-disk dataset into candidate manifest rows.

An adapter reads its tables (trusting a table over a glob wherever a table exists), decides which files are
candidates, fills the manifest fields that the tables know, and rejects rows that cannot become images (a path
escaping the root, a label outside {0,1}) with a reason. Opening the image files (header + hash, in parallel) is
ingest's job. This module holds what the adapters share: the candidate types, safe path handling, the table
reader, and value parsers. Everything here except `read_text` and `walk_files` is pure.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.base.errors import InputError

log = logging.getLogger(__name__)

# Reason codes decided from tables and paths (image-level codes live in fracture.images.header).
PATH_ESCAPE = "path escapes dataset root"
SYMLINK_OUTSIDE = "symlink outside dataset root"
LABEL_INVALID = "label not in {0,1}"
NO_LABEL = "no label"
CONFLICTING_LABELS = "conflicting labels"
CONFLICTING_METADATA = "conflicting metadata"
APPLEDOUBLE = "AppleDouble metadata file"
BAD_LAYOUT = "unexpected path layout"
MISSING_ID = "missing identifier"
NOT_A_FILE = "not a regular file"
UNREADABLE_FILE = "unreadable file"
SHORT_ROW = "short table row"
NAME_NOT_UTF8 = "file name not UTF-8"
CASE_MISMATCH = "path differs in case from metadata.csv"
SHORT_ROWS_ATTR = "short_rows"  # DataFrame.attrs key: {row label: fields found} of rows shorter than the header

# Each source's folder under a raw-data root, as the datasets ship (and as `fracture synth` writes them).
SOURCE_DIRS = {"kaggle": "GRAZPEDWRI-DX", "mura": "MURA-v1.1", "hospital": "hospital"}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".dic"})
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "pipes"}
_AGE_STRING = re.compile(r"^(\d{1,3})([DWMY])$")


@dataclass(frozen=True)
class Candidate:
    """A file that should become a manifest row once its header checks out.

    Attributes:
        source: kaggle | mura | hospital.
        path: POSIX path relative to the source root.
        fields: manifest fields known from the tables and folders (the rest come from the file or defaults).
        fallback_patient_id: patient id used when neither the tables nor a DICOM header give one (hospital).
    """

    source: str
    path: str
    fields: dict[str, Any]
    fallback_patient_id: str | None = None


@dataclass(frozen=True)
class Rejected:
    """A candidate refused before its file is opened."""

    source: str
    path: str
    code: str
    reason: str


@dataclass
class SourceScan:
    """What an adapter found: candidates, rejections, and extra counts for summary.json."""

    source: str
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WalkResult:
    """Files under a root (POSIX, relative, sorted) and what the walk skipped."""

    files: list[str]
    junk_files: int  # hidden files, AppleDouble `._*`, Thumbs.db
    symlinked_dirs: int  # never followed


def reject(source: str, path: str, code: str, detail: str = "") -> Rejected:
    """A Rejected whose reason is the code, with an optional detail in brackets."""
    return Rejected(source, path, code, f"{code} ({detail})" if detail else code)


def image_id_for(source: str, path: str) -> str:
    """Stable image id: first 16 hex of sha256("source:path")."""
    return hashlib.sha256(f"{source}:{path}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def safe_relpath(raw: str) -> str | None:
    """Normalise a path from a table to a POSIX path relative to the dataset root.

    Returns:
        The normalised relative path, or None when it is absolute, empty, or climbs out of the root.
    """
    path = raw.strip().replace("\\", "/")
    if not path or path.startswith("/") or re.match(r"^[A-Za-z]:", path) or "\x00" in path:
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


def name_is_utf8(path: str) -> bool:
    """Whether a path from a directory walk is valid UTF-8 (Python holds other bytes as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refuse_non_utf8_names(scan: SourceScan) -> int:
    """Move candidates whose path is not valid UTF-8 (Latin-1 bytes, e.g. `0xf6`) to the rejections, in place.

    Such a name cannot be written to the manifest or quarantine.csv (both UTF-8) nor looked up again by name by
    the later steps; the quarantine row shows its bytes escaped. Returns how many were moved.
    """
    bad = [c for c in scan.candidates if not name_is_utf8(c.path)]
    if bad:
        scan.candidates = [c for c in scan.candidates if name_is_utf8(c.path)]
        scan.rejected += [reject(scan.source, c.path, NAME_NOT_UTF8, "rename the file in UTF-8") for c in bad]
        log.warning("%s: %d files have names that are not UTF-8; quarantined", scan.source, len(bad))
    return len(bad)


def is_junk(name: str) -> bool:
    """Hidden files, AppleDouble `._*` resource forks and OS thumbnails: never images."""
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def walk_files(root: Path) -> WalkResult:
    """Every regular-looking file under `root` in one os.walk (symlinked directories are not followed)."""
    files: list[str] = []
    junk = linked = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                linked += 1
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if is_junk(name):
                junk += 1
            else:
                files.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    if linked:
        log.warning("%s: %d symlinked directories were not followed (links must stay inside the root)", root, linked)
    return WalkResult(sorted(files), junk, linked)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text with or without a BOM.

    Raises:
        InputError: naming the file and the first offending byte.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{name}: the file is UTF-16 encoded; re-save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        byte = data[err.start]
        raise InputError(
            f"{name}: not UTF-8 text (byte 0x{byte:02x} at offset {err.start}); re-save the file as UTF-8"
        ) from None


def read_text(path: Path) -> str:
    """Read a table file as UTF-8 (BOM-safe).

    Raises:
        InputError: missing, unreadable, or not UTF-8.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    return decode_text(data, str(path))


def check_delimiter(header_line: str, name: str) -> None:
    """Refuse a table whose header is separated by something other than commas.

    Raises:
        InputError: naming the file and the delimiter found.
    """
    if "," in header_line:
        return
    for delim, word in _DELIMITERS.items():
        if delim in header_line:
            raise InputError(f"{name}: columns are separated by {word}, expected commas (save it as comma-separated)")


def parse_csv(text: str, name: str, required: tuple[str, ...]) -> pd.DataFrame:
    """Parse a comma-separated table with a header line into a DataFrame of strings ("" for empty cells).

    A line repeating the header (two exports concatenated) is dropped with one warning. Rows with fewer fields
    than the header stay in the frame (their missing cells read as empty) and are listed in
    `df.attrs[SHORT_ROWS_ATTR]`: a missing cell must not read as a value, so adapters take them out with
    `take_short_rows` and quarantine them.

    Args:
        text: the decoded file contents.
        name: file name for messages.
        required: columns that must be present (extra columns are fine).

    Raises:
        InputError: empty, wrong delimiter, malformed, or missing required columns (named).
    """
    header = next((line for line in text.splitlines() if line.strip()), "")
    if not header:
        raise InputError(f"{name}: empty table (expected columns: {', '.join(required)})")
    check_delimiter(header, name)
    widths = check_row_widths(text, name)
    try:
        # index_col=False: pandas would otherwise take the first column as the index when data rows have one
        # field more than the header (a trailing delimiter), shifting every column by one. The field it then
        # drops is empty (check_row_widths), so its warning about lost data is moot.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=True, index_col=False
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error, OverflowError) as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(f"{name}: not a valid CSV table ({detail[:200]})") from None
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = ", ".join(list(df.columns)[:20])
        raise InputError(f"{name}: missing required column(s): {', '.join(missing)} (found: {found})")
    if widths.trailing:
        log.warning("%s: %d data rows end with a delimiter the header does not have; the empty field is ignored",
                    name, widths.trailing)  # fmt: skip
    df = df.astype(object).fillna("")
    short = {}
    if len(df) == widths.rows:
        short = dict(zip(df.index[widths.short_rows], widths.short_fields, strict=True))
    elif widths.short_rows:  # the csv module and pandas disagree on what a row is: say so, never guess
        log.warning("%s: %d rows have fewer fields than the header (missing cells read as empty)", name,
                    len(widths.short_rows))  # fmt: skip
    df = drop_repeated_headers(df, name)
    df.attrs[SHORT_ROWS_ATTR] = {i: n for i, n in short.items() if i in df.index}
    return df


def drop_repeated_headers(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Drop data rows that repeat the header line (a file concatenated with its header), with one warning."""
    names = [str(c) for c in df.columns]
    cells = df.apply(lambda col: col.astype(str).str.strip().str.lstrip("\ufeff"))
    repeated = (cells == names).all(axis=1)
    if repeated.any():
        log.warning("%s: dropped %d repeated header line(s) inside the table", name, int(repeated.sum()))
    return df[~repeated]


def take_short_rows(df: pd.DataFrame, key: str, name: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Split off the rows that `parse_csv` found shorter than the header.

    Returns:
        The complete rows, and per short row its `key` cell and a reason detail ("8 of 17 fields").
    """
    short = {i: n for i, n in df.attrs.get(SHORT_ROWS_ATTR, {}).items() if i in df.index}
    if not short:
        return df, []
    width = len(df.columns)
    log.warning(
        "%s: %d rows have fewer fields than the header's %d; quarantined (a missing cell is not a value)",
        name, len(short), width,
    )  # fmt: skip
    found = [
        (str(df.at[i, key]).strip(), f"{n} of {width} fields in {posixpath.basename(name)}") for i, n in short.items()
    ]
    return df.drop(index=list(short)), found


@dataclass(frozen=True)
class RowWidths:
    """What `check_row_widths` found: data rows in pandas' sense, the short ones, and trailing delimiters."""

    rows: int
    short_rows: list[int]  # positions among the data rows
    short_fields: list[int]  # fields each of those rows has
    trailing: int


def _pandas_skips(row: list[str]) -> bool:
    # pd.read_csv(skip_blank_lines=True) skips empty and whitespace-only lines, not a quoted empty field ("").
    return not row or (len(row) == 1 and row[0] != "" and not row[0].strip())


def check_row_widths(text: str, name: str) -> RowWidths:
    """Compare every data row's field count with the header's.

    A row with one extra, empty, last field (a trailing delimiter on data rows only) is counted; a row with
    more fields than that is refused, since its columns cannot be told apart; a row with fewer fields is listed.

    Raises:
        InputError: naming the file, the line and both field counts.
    """
    reader = csv.reader(io.StringIO(text))
    short_rows: list[int] = []
    short_fields: list[int] = []
    try:
        width = next((len(row) for row in reader if any(f.strip() for f in row)), 0)
        trailing = rows = 0
        for row in reader:
            if _pandas_skips(row):
                continue
            if len(row) == width + 1 and not row[-1].strip():
                trailing += 1
            elif len(row) > width and any(f.strip() for f in row[width:]):
                raise InputError(
                    f"{name}: line {reader.line_num}: {len(row)} fields but the header has {width} columns "
                    "(a stray delimiter or an unquoted comma in a value)"
                )
            elif len(row) < width:
                short_rows.append(rows)
                short_fields.append(len(row))
            rows += 1
    except csv.Error as err:
        raise InputError(f"{name}: not a valid CSV table ({err})") from None
    return RowWidths(rows, short_rows, short_fields, trailing)


def parse_binary(value: str) -> int | None:
    """0/1 from "0", "1", "1.0", "true", "false" (any case, padded); None for an empty cell.

    Raises:
        ValueError: anything else.
    """
    text = str(value).strip().lower()
    if not text:
        return None
    if text in ("true", "false"):
        return int(text == "true")
    number = float(text)
    if number not in (0.0, 1.0):
        raise ValueError(f"not 0 or 1: {text[:20]!r}")
    return int(number)


def parse_age(value: str) -> float | None:
    """Age in years from "14.5", "34" or a DICOM age string ("034Y", "006M", "010W", "003D"); else None."""
    text = str(value).strip().upper()
    if not text:
        return None
    match = _AGE_STRING.match(text)
    if match:
        n, unit = int(match[1]), match[2]
        years = n / {"Y": 1.0, "M": 12.0, "W": 365.25 / 7, "D": 365.25}[unit]
        return round(years, 2)
    try:
        years = float(text)
    except ValueError:
        return None
    return years if math.isfinite(years) and 0 <= years <= 150 else None


def normalise_sex(value: str) -> str | None:
    """M / F / O from M, F, O, male, female, other (any case); None for anything else."""
    text = str(value).strip().upper()
    mapping = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
    return mapping.get(text)


def label_key(value: object) -> str:
    """A label cell compared by value: "1", "1.0" and " true " are one label; other text is compared as written."""
    try:
        return str(parse_binary(str(value)))
    except ValueError:
        return str(value).strip()


def table_conflicts(
    df: pd.DataFrame, key: str, label: str | None, name: str
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Take out every key listed more than once with different values; exact repeats stay (for `dedupe_rows`).

    Which of two contradicting rows is right cannot be told from the table, so neither is kept: a key whose rows
    disagree on `label` (compared by value) is `conflicting labels`, one whose rows disagree on another column is
    `conflicting metadata` naming the columns.

    Returns:
        The rows of keys without conflicts, and per conflicting key (key, reason code, detail).
    """
    columns = [c for c in df.columns if c != key]
    cells = df[columns].apply(lambda col: col.astype(str).str.strip())
    if label is not None and label in cells.columns:
        cells[label] = cells[label].map(label_key)
    differing = cells.groupby(df[key]).nunique() > 1  # [keys, columns]
    found = []
    for value in differing.index[differing.any(axis=1)]:
        names = [c for c in columns if differing.loc[value, c]]
        if label in names:
            found.append((str(value), CONFLICTING_LABELS, f"{posixpath.basename(name)} rows disagree on {label}"))
        else:
            detail = f"{posixpath.basename(name)} rows disagree on {', '.join(names)}"
            found.append((str(value), CONFLICTING_METADATA, detail))
    if found:
        log.warning("%s: %d entries are listed with contradicting values; quarantined", name, len(found))
    return df[~df[key].isin([k for k, _, _ in found])], found


def dedupe_rows(df: pd.DataFrame, key: str, name: str) -> tuple[pd.DataFrame, int, int]:
    """Drop exact duplicate rows, then later rows that repeat `key` with different values.

    Returns:
        The deduplicated frame, the number of exact duplicates and the number of conflicting duplicates.
    """
    exact = df.duplicated()
    df = df[~exact]
    conflicting = df.duplicated(subset=[key])
    if exact.any():
        log.warning("%s: dropped %d exact duplicate rows", name, int(exact.sum()))
    if conflicting.any():
        log.warning("%s: %d rows repeat a %s with other values; kept the first of each", name, conflicting.sum(), key)
    return df[~conflicting].reset_index(drop=True), int(exact.sum()), int(conflicting.sum())
