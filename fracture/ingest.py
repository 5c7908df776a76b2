"""Ingest: harmonise GRAZPEDWRI-DX, MURA and hospital data into one manifest; quarantine the rest with a reason.

Flow: each adapter (fracture.sources.*) turns its tables and folders into candidates; every candidate file is then
vetted in parallel from its header alone (format, dimensions, bit depth, truncation, decompression-bomb limits;
fracture.images.header) and hashed; accepted files become manifest rows, everything else a quarantine row.
Candidates = accepted + quarantined, per source, checked before anything is written.

Outputs (each written atomically): manifest.parquet (source roots in its metadata), quarantine.csv
(source, path, reason), summary.json (counts per source and label, quarantine reasons) and params.yaml.
DICOM PHI never leaves the worker that reads the header: only pseudonyms, age, sex and pixel geometry do.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fracture.base.errors import InputError, printable
from fracture.base.io import atomic_write_text, write_json, write_manifest, write_parquet
from fracture.base.outputs import out_dir_lock, prepare_out_dir
from fracture.base.parallel import parallel_map
from fracture.config import IngestParams, Params, PathsParams, dump_params
from fracture.contracts.artifacts import INGEST_SUMMARY, MANIFEST, QUARANTINE
from fracture.contracts.schema import MANIFEST_COLUMNS, QUARANTINE_COLUMNS, coerce_manifest
from fracture.images.decode import check_compressed_dicom
from fracture.images.header import DICOM_SUFFIXES, FILE_MISSING, ImageRejected, Limits, read_header
from fracture.sources import (
    NOT_A_FILE,
    SYMLINK_OUTSIDE,
    UNREADABLE_FILE,
    Candidate,
    SourceScan,
    image_id_for,
    refuse_non_utf8_names,
)
from fracture.sources.ao import ao_summary
from fracture.sources.dicom import DicomIdentity, extract_identity
from fracture.sources.privacy import pseudonym_key

log = logging.getLogger(__name__)

OUTPUT_FILES = (MANIFEST, QUARANTINE, INGEST_SUMMARY, "params.yaml")
COUNT_KEYS = ("candidates", "total", "fracture", "normal", "quarantined", "patients", "studies")


@dataclass(frozen=True)
class InspectConfig:
    """What a worker needs to vet one file."""

    limits: Limits
    hash_contents: bool
    key: bytes | None  # pseudonymisation key for DICOM patient/study keys


@dataclass(frozen=True)
class FileInfo:
    """What an accepted file contributes to its manifest row (no PHI)."""

    width: int
    height: int
    bit_depth: int
    sha256: str | None
    identity: DicomIdentity | None


@dataclass(frozen=True)
class FileResult:
    """An accepted file's info, or the quarantine code and reason."""

    info: FileInfo | None = None
    code: str | None = None
    reason: str | None = None


# ---------------------------------------------------------------- per-file work (runs in worker processes)


@functools.lru_cache(maxsize=65536)
def _real_dir(dirname: str) -> str:
    return os.path.realpath(dirname)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def locate_file(abs_path: str, root_real: str) -> str:
    """Real path of a candidate file, refusing symlinks that lead outside the dataset root.

    Raises:
        ImageRejected: missing, a symlink outside the root, or not a regular file.
    """
    try:
        st = os.lstat(abs_path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejected(FILE_MISSING) from None
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(abs_path)
    else:
        real = os.path.join(_real_dir(os.path.dirname(abs_path)), os.path.basename(abs_path))
    if not _inside(real, root_real):
        raise ImageRejected(SYMLINK_OUTSIDE)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejected(FILE_MISSING, "dangling symlink") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageRejected(NOT_A_FILE)
    return real


def inspect_file(item: tuple[str, str], cfg: InspectConfig) -> FileResult:
    """Vet one file from its header and hash its bytes; never decodes pixels.

    Args:
        item: (path as joined to the source root, real path of that root).
        cfg: limits, hashing and the pseudonymisation key.
    """
    abs_path, root_real = item
    try:
        real = locate_file(abs_path, root_real)
        with open(real, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            header, ds = read_header(fp, size, os.path.splitext(abs_path)[1], cfg.limits)
            if ds is not None:  # whether compressed pixel data decode depends on the installed plugins
                check_compressed_dicom(real, ds, cfg.limits)
            identity = extract_identity(ds, cfg.key) if ds is not None else None
            del ds  # the header Dataset holds PHI: it never leaves this function
            if identity is not None and identity.unreadable:
                log.warning(
                    "%s: malformed DICOM header values left empty: %s", abs_path, ", ".join(identity.unreadable)
                )
            digest = None
            if cfg.hash_contents:
                fp.seek(0)
                digest = hashlib.file_digest(fp, "sha256").hexdigest()
    except ImageRejected as err:
        return FileResult(code=err.code, reason=err.reason)
    except OSError as err:
        return FileResult(code=UNREADABLE_FILE, reason=f"{UNREADABLE_FILE} ({err.strerror or type(err).__name__})")
    return FileResult(FileInfo(header.width, header.height, header.decoded_bit_depth, digest, identity))


# ---------------------------------------------------------------- pure assembly


def build_row(candidate: Candidate, info: FileInfo) -> tuple[dict[str, Any], bool]:
    """Manifest row of an accepted candidate; DICOM identity fills what the tables leave empty.

    Returns:
        The row and whether the patient id fell back to the augmentation group (no id anywhere).
    """
    fields = candidate.fields
    ident = info.identity or DicomIdentity(None, None, None, None)
    image_id = image_id_for(candidate.source, candidate.path)
    row: dict[str, Any] = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(fields)
    row.update(
        image_id=image_id,
        source=candidate.source,
        path=candidate.path,
        width=info.width,
        height=info.height,
        bit_depth=info.bit_depth,
        sha256=info.sha256,
        age=fields.get("age") if fields.get("age") is not None else ident.age,
        sex=fields.get("sex") or ident.sex,
        patient_id=fields.get("patient_id") or ident.patient_id,
        study_id=fields.get("study_id") or ident.study_id,
        group_id=fields.get("group_id") or image_id,
    )
    fallback = row["patient_id"] is None
    if fallback:
        row["patient_id"] = candidate.fallback_patient_id
    return row, fallback


def inherit_group_identity(rows: list[dict[str, Any]], fallbacks: list[bool]) -> list[bool]:
    """Rows without a patient id of their own take the one patient known in their augmentation group (in place).

    A copy missing from metadata.csv (or a PNG copy of a DICOM original) must not get a fallback patient that
    separates it from its original: patient, and study, age and sex where the row lacks them, come from the first
    row of its `group_id` that knows its patient. A group with two different known patients keeps the fallback (the
    split merges such patients anyway).

    Returns:
        Per row, whether its patient id is still a fallback.
    """
    known: dict[str, set[str]] = {}
    donors: dict[str, dict[str, Any]] = {}
    for row, fallback in zip(rows, fallbacks, strict=True):
        if not fallback:
            known.setdefault(row["group_id"], set()).add(row["patient_id"])
            donors.setdefault(row["group_id"], row)
    still = []
    for row, fallback in zip(rows, fallbacks, strict=True):
        if fallback and len(known.get(row["group_id"], ())) == 1:
            donor = donors[row["group_id"]]
            row["patient_id"] = donor["patient_id"]
            for column in ("study_id", "age", "sex"):
                if row[column] is None:
                    row[column] = donor[column]
            fallback = False
        still.append(fallback)
    return still


def assemble(scans: dict[str, SourceScan], results: list[FileResult]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Accepted rows -> manifest; rejections and failed files -> quarantine (with a `code` column).

    Args:
        scans: adapter output per source, in the order their candidates were inspected.
        results: one FileResult per candidate, in that order.

    Returns:
        Manifest (coerced to the schema, sorted), quarantine (sorted), and how many rows used a fallback patient.
    """
    candidates = [c for scan in scans.values() for c in scan.candidates]
    if len(candidates) != len(results):
        raise InputError(f"ingest: {len(results)} file results for {len(candidates)} candidates")
    rows, fallbacks = [], []
    quarantine = [(r.source, r.path, r.reason, r.code) for scan in scans.values() for r in scan.rejected]
    for candidate, result in zip(candidates, results, strict=True):
        if result.info is None:
            quarantine.append((candidate.source, candidate.path, result.reason, result.code))
            continue
        row, fallback = build_row(candidate, result.info)
        rows.append(row)
        fallbacks.append(fallback)
    n_fallback = sum(inherit_group_identity(rows, fallbacks))
    manifest = coerce_manifest(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))
    manifest = manifest.sort_values(["source", "path"], ignore_index=True)
    # Paths and reasons can quote table cells: control characters (a NUL) are escaped, never written raw.
    quarantine = [(src, printable(path), printable(reason), code) for src, path, reason, code in quarantine]
    qdf = pd.DataFrame(quarantine, columns=list(QUARANTINE_COLUMNS)).astype("string")
    return manifest, qdf.sort_values(["source", "path"], ignore_index=True), n_fallback


def summarise(manifest: pd.DataFrame, quarantine: pd.DataFrame, scans: dict[str, SourceScan]) -> dict[str, Any]:
    """Counts per source and in total: candidates, accepted (`total`), fracture, normal, quarantine reasons.

    Raises:
        InputError: when candidates != accepted + quarantined for a source (an ingest bug, never silent).
    """
    sources: dict[str, dict[str, Any]] = {}
    for source, scan in scans.items():
        m = manifest[manifest["source"] == source]
        q = quarantine[quarantine["source"] == source]
        entry = {
            "candidates": len(scan.candidates) + len(scan.rejected),
            "total": len(m),
            "fracture": int((m["label"] == 1).sum()),
            "normal": int((m["label"] == 0).sum()),
            "quarantined": len(q),
            "patients": int(m["patient_id"].nunique()),
            "studies": int(m["study_id"].nunique()),
            "quarantine_reasons": dict(sorted(Counter(q["code"]).items())),
            **scan.stats,
        }
        if m["ao_status"].notna().any():  # a source with AO codes (GRAZPEDWRI-DX): parse statuses and targets
            entry["ao"] = ao_summary(m)
        if entry["candidates"] != entry["total"] + entry["quarantined"] or entry["total"] != (
            entry["fracture"] + entry["normal"]
        ):
            raise InputError(
                f"ingest: {source} counts do not add up: {entry['candidates']} candidates != "
                f"{entry['total']} accepted + {entry['quarantined']} quarantined"
            )
        sources[source] = entry
    totals: dict[str, Any] = {k: sum(s[k] for s in sources.values()) for k in COUNT_KEYS}
    reasons: Counter[str] = Counter()
    for entry in sources.values():
        reasons.update(entry["quarantine_reasons"])
    totals["quarantine_reasons"] = dict(sorted(reasons.items()))
    return {"sources": sources, "totals": totals}


# ---------------------------------------------------------------- orchestration (I/O)


def source_dirs(
    paths: PathsParams,
    kaggle_dir: Path | None,
    mura_dir: Path | None,
    hospital_dir: Path | None,
    data_root: Path = Path("."),
) -> dict[str, Path]:
    """The source roots to ingest: those given, else all three of `paths.kaggle / mura / hospital` from params.

    Relative roots are taken relative to `data_root` (and recorded so in the manifest).

    Raises:
        InputError: a root that is not a directory.
    """
    given = {"kaggle": kaggle_dir, "mura": mura_dir, "hospital": hospital_dir}
    origin = "--{}"
    if all(d is None for d in given.values()):
        given = {"kaggle": paths.kaggle, "mura": paths.mura, "hospital": paths.hospital}
        origin = "params paths.{}"
    dirs = {source: Path(d) for source, d in given.items() if d is not None}
    for source, d in dirs.items():
        if not (data_root / d).is_dir():
            raise InputError(f"{origin.format(source)} {d}: not a directory under the data root {data_root}")
    return dirs


def scan_sources(dirs: dict[str, Path], ingest: IngestParams, key: bytes | None) -> dict[str, SourceScan]:
    """Run the adapters (tables and folders only; image files are not opened here).

    A file whose name is not UTF-8 is quarantined here: the manifest and quarantine.csv are UTF-8.
    """
    from fracture.sources.hospital import scan_hospital
    from fracture.sources.kaggle import scan_kaggle
    from fracture.sources.mura import scan_mura

    scans: dict[str, SourceScan] = {}
    if "kaggle" in dirs:
        scans["kaggle"] = scan_kaggle(dirs["kaggle"])
    if "mura" in dirs:
        scans["mura"] = scan_mura(dirs["mura"], ingest.mura_study_types)
    if "hospital" in dirs:
        scans["hospital"] = scan_hospital(
            dirs["hospital"], key or pseudonym_key("the hospital source"), ingest.augmented_copy_pattern
        )
    for scan in scans.values():
        refuse_non_utf8_names(scan)
    return scans


def inspect_candidates(
    scans: dict[str, SourceScan], dirs: dict[str, Path], params: Params, key: bytes | None
) -> list[FileResult]:
    """Header + hash of every candidate file, in parallel, in candidate order."""
    roots = {source: os.path.realpath(d) for source, d in dirs.items()}
    items = [(os.path.join(dirs[s], c.path), roots[s]) for s, scan in scans.items() for c in scan.candidates]
    ip = params.ingest
    cfg = InspectConfig(Limits(ip.max_pixels, ip.max_side, ip.min_side), ip.hash_contents, key)
    worker = functools.partial(inspect_file, cfg=cfg)
    return list(parallel_map(worker, items, params.base.num_workers, desc="ingest: reading image headers"))


def _needs_dicom_key(scans: dict[str, SourceScan]) -> bool:
    return any(os.path.splitext(c.path)[1].lower() in DICOM_SUFFIXES for s in scans.values() for c in s.candidates)


def _log_summary(summary: dict[str, Any], fallbacks: int) -> None:
    for source, entry in summary["sources"].items():
        log.info(
            "%s: %d candidates -> %d accepted (%d fracture, %d normal), %d quarantined %s",
            source,
            entry["candidates"],
            entry["total"],
            entry["fracture"],
            entry["normal"],
            entry["quarantined"],
            entry["quarantine_reasons"] or "",
        )
        ao = entry.get("ao")
        if ao:
            log.info(
                "%s AO codes: rows %s; %d coded views without a visible fracture (excluded from AO targets), "
                "%d visible fractures without a usable code (unknown); targets known for %d images",
                source,
                ao["row_status"],
                ao["coded_not_visible"],
                ao["visible_without_code"] + ao["visible_code_unusable"],
                ao["targets_known"],
            )
        if ao and ao["malformed"]:
            log.warning("%s: %d rows hold malformed AO codes (listed in summary.json)", source, len(ao["malformed"]))
    if fallbacks:
        log.warning(
            "hospital: %d images have no patient id (no metadata.csv patient_id, no DICOM PatientID); "
            "their patient is their augmentation group, so a patient with several originals may straddle splits",
            fallbacks,
        )


def write_outputs(
    out_dir: Path, manifest: pd.DataFrame, quarantine: pd.DataFrame, summary: dict, roots: dict, params: Params
) -> None:
    """quarantine.csv, summary.json, the resolved params.yaml and manifest.parquet, each atomically; the manifest last.

    An earlier manifest is removed first, so a run killed between these writes leaves no manifest (readers refuse
    the dir by name) rather than an old one beside the new quarantine and summary. Temporary files of a killed
    earlier run (atomic_path names: `.<name>.<random>.tmp`) are removed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    atomic_write_text(out_dir / QUARANTINE, quarantine[list(QUARANTINE_COLUMNS)].to_csv(index=False))
    write_json(out_dir / INGEST_SUMMARY, summary)
    dump_params(params, out_dir / "params.yaml")
    write_manifest(manifest, out_dir / MANIFEST, roots)


def run_ingest(
    params: Params,
    out_dir: Path,
    kaggle_dir: Path | None = None,
    mura_dir: Path | None = None,
    hospital_dir: Path | None = None,
    data_root: Path = Path("."),
    label_corrections: Path | None = None,
    boxes_dir: Path | None = None,
) -> dict:
    """Ingest any subset of the three sources into `out_dir`.

    Args:
        params: resolved params (ingest section, base.num_workers).
        out_dir: gets manifest.parquet, quarantine.csv, summary.json, params.yaml.
        kaggle_dir: GRAZPEDWRI-DX root (holds dataset.csv).
        mura_dir: the MURA-v1.1 folder (holds the four CSVs).
        hospital_dir: hospital root (`<part>/{positive,negative}/...`, optional metadata.csv).
        boxes_dir: GRAZPEDWRI-DX's YOLO labels folder (`folder_structure/yolov5/labels`), relative to `data_root`;
            None, missing or empty means no boxes (boxes.parquet is then written empty).
        data_root: relative source dirs are taken relative to it and recorded so in the manifest, which stays
            valid wherever a later step finds the data root (a Kubeflow task mounts it elsewhere).
        label_corrections: a clinical review's corrections file (fracture.corrections): those rows get the new
            label and `label_source: review`; summary.json counts them under `label_corrections`.

    Returns:
        The summary written to summary.json.

    Raises:
        InputError: no source, a bad table, hospital/DICOM data without FRACTURE_PSEUDONYM_KEY, an unusable
            `out_dir` (checked first), or another run writing into it.
    """
    if boxes_dir is None and kaggle_dir is None and mura_dir is None and hospital_dir is None:
        boxes_dir = Path(params.paths.kaggle_boxes)  # the sources come from params.paths too
    recorded = source_dirs(params.paths, kaggle_dir, mura_dir, hospital_dir, Path(data_root))
    dirs = {source: Path(data_root) / d for source, d in recorded.items()}
    key = pseudonym_key("the hospital source") if "hospital" in dirs else None
    out_dir = prepare_out_dir(Path(out_dir), inputs=list(dirs.values()))  # a bad --out fails before the work
    with out_dir_lock(out_dir):
        summary = _ingest_locked(params, out_dir, dirs, recorded, key, label_corrections)
        summary["boxes"] = ingest_boxes(out_dir, None if boxes_dir is None else Path(data_root) / boxes_dir, dirs)
        write_json(out_dir / INGEST_SUMMARY, summary)
        return summary


def ingest_boxes(out_dir: Path, boxes_dir: Path | None, dirs: dict[str, Path]) -> dict[str, Any]:
    """boxes.parquet and boxes_quarantine.csv beside the manifest (empty without boxes); returns their counts."""
    from fracture.sources.boxes import QUARANTINE_COLUMNS as BOX_QUARANTINE
    from fracture.sources.boxes import TABLE_COLUMNS, boxes_table, empty_table, quarantine_frame, scan_boxes

    has_files = boxes_dir is not None and boxes_dir.is_dir() and any(boxes_dir.glob("*.txt"))
    if not has_files or "kaggle" not in dirs:
        why = "no --kaggle-boxes" if boxes_dir is None else f"no label files in {boxes_dir}"
        log.info("boxes: none (%s)", why if "kaggle" in dirs else "no GRAZPEDWRI-DX source")
        table, quarantine, names = empty_table(), quarantine_frame([]), "none"
    else:
        scan = scan_boxes(boxes_dir)
        table, orphans = boxes_table(scan, _kaggle_images(out_dir, dirs["kaggle"], set(scan.boxes["stem"])))
        quarantine = pd.concat([scan.quarantine, orphans], ignore_index=True)
        names = scan.names_source
        log.info(
            "boxes: %d boxes on %d images from %d label files in %s (class names: %s), %d lines quarantined",
            len(table), table["image_id"].nunique(), scan.files, boxes_dir, names, len(quarantine),
        )  # fmt: skip
    write_parquet(table[list(TABLE_COLUMNS)], out_dir / "boxes.parquet")
    atomic_write_text(out_dir / "boxes_quarantine.csv", quarantine[list(BOX_QUARANTINE)].to_csv(index=False))
    return {
        "boxes": len(table),
        "images": int(table["image_id"].nunique()),
        "quarantined": len(quarantine),
        "per_class": {str(k): int(v) for k, v in table["class"].value_counts().sort_index().items()},
        "class_names": names,
    }


def _kaggle_images(out_dir: Path, kaggle_dir: Path, stems: set[str]) -> pd.DataFrame:
    """The accepted GRAZPEDWRI-DX images (image_id, stem, width, height, orientation) whose stem has boxes."""
    from fracture.base.io import read_manifest
    from fracture.images.decode import read_orientation

    manifest, _ = read_manifest(out_dir / MANIFEST)
    rows = manifest[manifest["source"].astype(str) == "kaggle"]
    stem = rows["path"].astype(str).map(lambda p: Path(p).stem)
    rows = rows.assign(stem=stem)[stem.isin(stems).to_numpy()]
    orientation = [read_orientation(kaggle_dir / p) for p in rows["path"].astype(str)]  # header only, no pixels
    return rows.assign(orientation=orientation)[["image_id", "stem", "width", "height", "orientation"]]


def _ingest_locked(
    params: Params, out_dir: Path, dirs: dict[str, Path], recorded: dict[str, Path], key: bytes | None,
    corrections: Path | None = None,
) -> dict:  # fmt: skip
    """The body of `run_ingest`, run while this process holds the output dir's lock."""
    scans = scan_sources(dirs, params.ingest, key)
    if key is None and _needs_dicom_key(scans):
        key = pseudonym_key("DICOM files")
    results = inspect_candidates(scans, dirs, params, key)
    manifest, quarantine, fallbacks = assemble(scans, results)
    if manifest["image_id"].duplicated().any():
        raise InputError("ingest: duplicate image_id in the manifest (the same file listed twice)")
    n_corrected = None
    if corrections is not None:
        from fracture.corrections import apply_corrections, read_corrections

        manifest, n_corrected = apply_corrections(manifest, read_corrections(corrections), str(corrections))
        log.info("%s: %d labels corrected by clinical review (label_source: review)", corrections, n_corrected)
    summary = summarise(manifest, quarantine, scans)
    if n_corrected is not None:
        summary["label_corrections"] = n_corrected
    _log_summary(summary, fallbacks)
    write_outputs(out_dir, manifest, quarantine, summary, {s: str(d) for s, d in recorded.items()}, params)
    return summary
