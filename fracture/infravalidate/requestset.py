"""The infra validation request set: evaluation images with their offline probabilities, and bad inputs.

Images come from the evaluation's `predictions.parquet` (test rows first, then val), joined with the manifest for
their files, spread over file formats (8-bit PNG, 16-bit PNG, JPEG, DICOM). A format the evaluation lacks (the
demo has no JPEG) is covered by a re-encoded copy of an evaluation image, whose offline probability comes from the
candidate's model dir run in this process (the `fracture predict` path). Every image is sent twice: as base64
`image` and as a `path` the server reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.contracts.artifacts import PREDICTIONS
from fracture.infravalidate.checks import Case

log = logging.getLogger(__name__)

KINDS = ("png8", "png16", "jpeg", "dicom")
SUFFIX = {"png8": ".png", "png16": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
MISSING = "missing"
MISSING_NAME = "fracture-infravalidate-missing.png"  # a `path` inside the allowed roots naming no file
OUTSIDE_PATH = "/etc/hostname"  # a `path` outside them: refused without being read
Offline = Callable[[Sequence[Path]], np.ndarray]  # image files -> offline probabilities


def file_kind(path: Path) -> str:
    """`png8`, `png16`, `jpeg`, `dicom`, another format name, or `missing`."""
    from fracture.images.header import sniff_format

    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return MISSING
    fmt = sniff_format(head)
    if fmt == "png":
        return "png16" if len(head) > 24 and head[24] == 16 else "png8"  # IHDR bit depth
    return fmt


def evaluation_rows(predictions: pd.DataFrame, manifest: pd.DataFrame, roots: dict, data_root: Path) -> pd.DataFrame:
    """Scored val/test rows with their image file and its kind.

    Raises:
        InputError: the predictions lack columns or none of their images is in the manifest.
    """
    from fracture.base.io import resolve_image_path

    missing = [c for c in ("image_id", "split", "prob") if c not in predictions.columns]
    if missing:
        raise InputError(f"predictions.parquet: missing columns {', '.join(missing)}")
    rows = predictions[["image_id", "split", "prob"]].astype({"image_id": "string"})
    files = manifest[["image_id", "source", "path"]].astype({"image_id": "string"})
    rows = rows.merge(files, on="image_id", how="inner")
    if rows.empty:
        raise InputError(
            "none of the evaluation's images is in the manifest: is it the manifest the model was evaluated on?"
        )
    rows["file"] = [
        resolve_image_path(roots, s, p, data_root) for s, p in zip(rows["source"], rows["path"], strict=True)
    ]
    rows["kind"] = [file_kind(f) for f in rows["file"]]
    return rows


def select_rows(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` rows (test before val, then by image_id) taken in turn from each file kind, so every kind present is sent.

    Raises:
        InputError: no evaluation image file can be read under the data root.
    """
    usable = rows[rows["kind"] != MISSING].copy()
    if usable.empty:
        raise InputError(f"none of the {len(rows)} evaluation images is readable under the data root")
    usable["_test_first"] = usable["split"] != "test"
    usable = usable.sort_values(["_test_first", "image_id"], kind="stable")
    groups = {kind: list(group.index) for kind, group in usable.groupby("kind", sort=True)}
    order = sorted(groups, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
    picked: list = []
    while len(picked) < n and any(groups.values()):
        for kind in order:
            if groups[kind] and len(picked) < n:
                picked.append(groups[kind].pop(0))
    return usable.loc[picked].drop(columns="_test_first")


def _gray(path: Path) -> np.ndarray:
    """The file's pixels as one channel (uint8 or uint16), as OpenCV or pydicom reads them."""
    import cv2

    if file_kind(path) == "dicom":
        from fracture.images.header import quiet_pydicom

        with quiet_pydicom():
            import pydicom

            return pydicom.dcmread(path).pixel_array.astype(np.uint16)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot re-encode this image for the request set")
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    lo, hi = float(img.min()), float(img.max())
    return np.rint((img.astype(np.float64) - lo) * 255.0 / max(hi - lo, 1.0)).astype(np.uint8)


def write_dicom(path: Path, pixels: np.ndarray) -> Path:
    """A minimal uncompressed MONOCHROME2 secondary-capture DICOM holding `pixels` (uint16, 12 bits stored)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_variant(src: Path, kind: str, dst_dir: Path) -> Path:
    """A copy of `src` re-encoded as `kind` (8-bit PNG, 16-bit PNG, JPEG quality 95, 12-bit DICOM)."""
    import cv2

    img8 = _to_uint8(_gray(src))
    dst = Path(dst_dir) / f"{Path(src).stem}-{kind}{SUFFIX[kind]}"
    if kind == "dicom":
        return write_dicom(dst, img8.astype(np.uint16) * 16)
    data = {"png8": img8, "png16": img8.astype(np.uint16) * 257, "jpeg": img8}[kind]
    flags = [cv2.IMWRITE_JPEG_QUALITY, 95] if kind == "jpeg" else []
    if not cv2.imwrite(str(dst), data, flags):
        raise InputError(f"{dst}: could not write the {kind} variant")
    return dst


def image_cases(name: str, path: Path, expected: float, reference: str) -> list[Case]:
    """The same image as base64 `image` and as `path`."""
    from fracture.serving.pyfunc import encode_image_file

    body = {"dataframe_split": {"columns": ["image"], "data": [[encode_image_file(path)]]}}
    return [
        Case(f"{name}/image", body, float(expected), reference),
        Case(f"{name}/path", {"dataframe_records": [{"path": str(path)}]}, float(expected), reference),
    ]


def good_cases(rows: pd.DataFrame, offline: Offline, work_dir: Path) -> list[Case]:
    """Cases for the selected evaluation rows, plus re-encoded variants for the kinds they lack."""
    cases = []
    for row in rows.itertuples():
        cases += image_cases(f"{row.split}:{row.image_id}/{row.kind}", Path(row.file), row.prob, PREDICTIONS)
    rasters = [Path(f) for f, k in zip(rows["file"], rows["kind"], strict=True) if k in ("png8", "png16", "jpeg")]
    lacking = [k for k in KINDS if k not in set(rows["kind"])]
    if lacking and rasters:
        variants = [write_variant(rasters[0], kind, work_dir) for kind in lacking]
        for kind, path, prob in zip(lacking, variants, offline(variants), strict=True):
            cases += image_cases(f"variant:{path.stem}/{kind}", path, float(prob), "offline model")
    return cases


def path_roots(cases: Sequence[Case]) -> list[str]:
    """The folders of every `path` the cases send: the allowed path roots of the validating server alone."""
    paths = [rec["path"] for c in cases for rec in c.body.get("dataframe_records", []) if rec.get("path")]
    return sorted({str(Path(p).parent) for p in paths})


def bad_cases(sample: Path) -> list[Case]:
    """Inputs the server must refuse with a 4xx naming the problem, and keep serving."""
    from fracture.serving.pyfunc import encode_bytes

    data = Path(sample).read_bytes()
    records = {
        "bad/not-base64": ({"image": "not base64!"}, "base64"),
        "bad/not-an-image": ({"image": encode_bytes(b"plain text, not an image " * 8)}, "row 0"),
        "bad/truncated-image": ({"image": encode_bytes(data[: max(len(data) // 2, 64)])}, "row 0"),
        "bad/missing-path": ({"path": str(Path(sample).parent / MISSING_NAME)}, MISSING_NAME),
        "bad/path-outside-roots": ({"path": OUTSIDE_PATH}, "allowed path roots"),
        "bad/both-columns": ({"path": str(sample), "image": encode_bytes(data)}, "exactly one"),
    }
    records["bad/no-input-column"] = ({"filename": "wrist.png"}, "no rows")  # MLflow drops the column and the row
    return [Case(name, {"dataframe_records": [rec]}, expect_error=frag) for name, (rec, frag) in records.items()]
