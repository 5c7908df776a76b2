"""Decode radiographs into windowed grayscale, bone bright: the one decode path of preprocess, validate, predict.

Formats: 8- and 16-bit PNG, JPEG, TIFF (integer or float) through OpenCV with `IMREAD_UNCHANGED` (never
PIL's RGB conversion, which clips 16-bit radiographs to two grey levels), and DICOM through pydicom 3
(modality LUT -> VOI LUT or window -> MONOCHROME1 inversion). Raster images and DICOM without a VOI are
windowed with robust percentiles, so a 16-bit image keeps its full contrast.

Every failure raises `fracture.base.errors.InputError` naming the file and the reason. Image dimensions are read
from the PNG/JPEG header (or the DICOM Rows/Columns) and checked against the limits before any pixel is
decoded, so a decompression bomb costs nothing; other formats (TIFF) are checked after decoding, within
OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS). DICOM errors never quote header values (PHI).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fracture.base.errors import InputError, decoder_failures, first_line, without_reprs
from fracture.images.dicomlut import displayed_inverted, modality_values, voi_lut_depth
from fracture.images.geometry import letterbox
from fracture.images.header import (
    CORRUPT_PIXELS,
    DICOM_SUFFIXES,
    JPEG_SOI,
    PNG_SIGNATURE,
    TAIL_BYTES,
    UNSUPPORTED_DICOM,
    ImageHeader,
    ImageRejected,
    Limits,
    decoder_problem,
    quiet_pydicom,
    raster_dims,
)
from fracture.images.tiff import TiffLayout, decode_with_pillow, undo_min_is_white
from fracture.images.vetting import vet_file

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)

# Defaults for direct library use only, from their one owner (imageheader.Limits); every pipeline step passes
# params.ingest's limits (or the model's recorded input contract) explicitly.
MAX_PIXELS, MAX_SIDE = Limits().max_pixels, Limits().max_side
_SAMPLE_PIXELS = 1 << 18  # percentiles are estimated on a strided view of about this many pixels
_PNG_HEAD_BYTES = 4096  # signature, IHDR and (for the DICOM check) byte 132
_LUMA_BGR = (0.114, 0.587, 0.299)  # ITU-R BT.601 weights in OpenCV's BGR channel order
_ORIENTATION_TAG = 0x0112  # EXIF / TIFF Orientation


# ----------------------------------------------------------------------------------------------------- public API
def read_grayscale(
    path: Path,
    window_percentiles: tuple[float, float] = (0.5, 99.5),
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """Decode an image file into windowed grayscale.

    Args:
        path: PNG, JPEG, TIFF or DICOM file (DICOM is recognised by its `DICM` preamble or its suffix).
        window_percentiles: low/high percentiles of the pixel values mapped to 0 and 1 when the file carries
            no window of its own (every raster image; DICOM without VOI LUT or window).
        max_pixels: refuse images with more pixels than this (checked from the header, before decoding).
        max_side: refuse images with a side longer than this, px.

    Returns:
        float32 [H, W] in [0, 1], bone bright. A constant image comes back as zeros.

    Raises:
        InputError: naming the file and the reason (missing, empty, not an image, truncated, too large,
            DICOM without pixel data or without the decoder plugin its transfer syntax needs).
    """
    path = Path(path)
    header = vet_file(path, Limits(max_pixels, max_side, 1))
    with decoder_failures(path):
        if header.format == "dicom":
            return _read_dicom(path, _read_bytes(path), window_percentiles, max_pixels, max_side)
        return percentile_window(_decode_raster_file(path, header, max_pixels, max_side), window_percentiles)


def read_raw(path: Path, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode an image file to grayscale in its own units, bone bright, for display windowing (16 bits kept).

    Rasters keep their stored values; monochrome DICOM gets its modality LUT (MONOCHROME1 flipped so bone is
    bright); colour and palette DICOM come back windowed to [0, 1]. The model's input goes through
    `prepare_image`, never through this.

    Returns:
        float32 [H, W].

    Raises:
        InputError: as `read_grayscale`.
    """
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    header = vet_file(path, Limits(max_pixels, max_side, 1))
    if header.format != "dicom":
        return to_gray(_decode_raster_file(path, header, max_pixels, max_side)).astype(np.float32)
    ds = _read_dicom_dataset(path, _read_bytes(path))
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if int(ds.get("SamplesPerPixel") or 1) > 1 or photometric == "PALETTE COLOR":
        return _read_dicom(path, _read_bytes(path), (0.0, 100.0), max_pixels, max_side)
    check_dims(path, int(ds.get("Columns") or 0), int(ds.get("Rows") or 0), max_pixels=max_pixels, max_side=max_side)
    values = np.asarray(apply_modality_lut(_dicom_pixels(path, ds), ds), dtype=np.float32)
    return values.max() + values.min() - values if photometric == "MONOCHROME1" else values


def resize_square(img01: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a [0, 1] image into a `size` x `size` uint8 square.

    The aspect ratio is kept: the long side is scaled to `size` (`INTER_AREA` when shrinking, so fine
    structure is averaged rather than aliased; `INTER_LINEAR` when enlarging) and the short side is padded
    symmetrically with 0. Zero is the background of a bone-bright radiograph after windowing (air, or the
    collimated border), so the padding reads as more background instead of inventing a bright frame or
    stretching the anatomy.

    Args:
        img01: float [H, W] in [0, 1].
        size: side of the output square, px.

    Returns:
        uint8 [size, size].
    """
    small = _letterbox_resize(np.asarray(img01, dtype=np.float32), size)
    return _pad_square(quantize(small), size)


def prepare_image(
    path: Path,
    size: int,
    window_percentiles: tuple[float, float],
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    min_side: int = 1,
) -> np.ndarray:
    """The model's input for one file: `read_grayscale` then `resize_square` (shared by preprocess and predict).

    16-bit rasters take an equivalent, faster route: the window is a linear map clipped to [lo, hi], and a
    linear map commutes with area averaging, so the raw values are clipped in place, resized in their own
    dtype and only the small result is mapped to [0, 1]. This skips a full-resolution float copy (about a
    fifth of the decode time at 5 Mpx); the result differs from `resize_square(read_grayscale(...))` only by
    the resize's rounding to whole raw units (at most one grey level).

    `min_side` refuses images with a shorter side, px: predict passes ingest's limit, so a user cannot score a
    1x1 image that ingest would have quarantined.

    Returns:
        uint8 [size, size].

    Raises:
        InputError: naming the file and the reason it cannot be used.
    """
    path = Path(path)
    header = vet_file(path, Limits(max_pixels, max_side, min_side))
    with decoder_failures(path):
        return _prepare_vetted(path, header, size, window_percentiles, max_pixels, max_side, min_side)


def _prepare_vetted(
    path: Path,
    header: ImageHeader,
    size: int,
    window_percentiles: tuple[float, float],
    max_pixels: int,
    max_side: int,
    min_side: int,
) -> np.ndarray:
    """`prepare_image` after the usable-radiograph rule said yes."""
    if header.format == "dicom":
        img01 = _read_dicom(path, _read_bytes(path), window_percentiles, max_pixels, max_side)
        return resize_square(_check_min_side(path, img01, min_side), size)
    raw = _check_min_side(path, _decode_raster_file(path, header, max_pixels, max_side), min_side)
    if raw.dtype != np.uint16:
        return resize_square(percentile_window(raw, window_percentiles), size)
    lo, hi = window_bounds(raw, window_percentiles)
    if not hi > lo:
        return np.zeros((size, size), dtype=np.uint8)
    np.clip(raw, round(lo), round(hi), out=raw)  # raw is this call's own decoded buffer
    small = _letterbox_resize(raw, size)
    return _pad_square(quantize(apply_linear_window(small, lo, hi)), size)


def _decode_raster_file(path: Path, header: ImageHeader, max_pixels: int, max_side: int) -> np.ndarray:
    """A vetted PNG/JPEG/TIFF decoded to [H, W] in its own units, upright (EXIF / TIFF orientation applied)."""
    if header.format == "tiff" and header.tiff is not None:
        return _decode_tiff_file(path, header.tiff, max_pixels, max_side)
    raw = decode_png_file(path, max_pixels=max_pixels, max_side=max_side) if header.format == "png" else None
    if raw is None:
        raw = decode_raster(path, _read_bytes(path), max_pixels=max_pixels, max_side=max_side)
    return apply_orientation(raw, read_orientation(path))  # OpenCV ignores EXIF in PNG and JPEG (UNCHANGED mode)


def _decode_tiff_file(path: Path, layout: TiffLayout, max_pixels: int, max_side: int) -> np.ndarray:
    """A vetted TIFF by the decoder its layout names (fracture.images.tiff), upright and bone bright."""
    data = _read_bytes(path)
    if layout.decoder == "opencv":  # OpenCV's TIFF decoder applies the Orientation tag itself (libtiff)
        raw = decode_raster(path, data, max_pixels=max_pixels, max_side=max_side)
    else:
        raw = apply_orientation(decode_with_pillow(path, data), read_orientation(path))
        check_dims(path, raw.shape[1], raw.shape[0], max_pixels=max_pixels, max_side=max_side)
    return undo_min_is_white(raw, layout)


def read_orientation(path: Path) -> int:
    """The EXIF / TIFF Orientation tag (1-8) of a raster file, read by Pillow without decoding pixels; 1 if none."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.format == "PNG":  # Pillow's PNG getexif() decodes every pixel to look past IDAT
                    exif = Image.Exif()
                    exif.load(im.info.get("exif") or b"")  # an eXIf chunk before IDAT, parsed by open()
                else:
                    exif = im.getexif()
                value = int(exif.get(_ORIENTATION_TAG, 1))
    except Exception:  # Pillow cannot parse every file OpenCV decodes; no readable tag means upright
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded [H, W] array upright, as Pillow's `ImageOps.exif_transpose` does for orientation 1-8."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.T,
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].T,
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def _letterbox_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Scale the long side to `size`, keeping the aspect ratio (INTER_AREA down, INTER_LINEAR up)."""
    if img.ndim != 2 or min(img.shape) < 1:
        raise ValueError(f"expected a non-empty 2-D image, got shape {img.shape}")
    box = letterbox(*img.shape, size)  # the geometry boxes follow too (fracture/images/geometry.py)
    interp = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (box.new_w, box.new_h), interpolation=interp)


def _pad_square(small: np.ndarray, size: int) -> np.ndarray:
    """Centre a uint8 image on a `size` x `size` canvas of zeros (the windowed background)."""
    out = np.zeros((size, size), dtype=np.uint8)
    h, w = small.shape
    top, left = (size - h) // 2, (size - w) // 2  # geometry.letterbox's offsets
    out[top : top + h, left : left + w] = small
    return out


def quantize(img01: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, rounded to nearest and saturated."""
    return cv2.convertScaleAbs(img01, alpha=255.0)


# ------------------------------------------------------------------------------------------ pure array functions
def to_gray(arr: np.ndarray) -> np.ndarray:
    """Collapse OpenCV's decoded array to one channel: BGR/BGRA -> luminance (alpha dropped), gray+alpha -> gray."""
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"unsupported array shape {arr.shape}")
    channels = arr.shape[2]
    if channels == 1 or channels == 2:  # gray, gray + alpha
        return arr[:, :, 0]
    if arr.dtype in (np.uint8, np.uint16, np.float32):
        code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(arr, code)
    bgr = arr[:, :, :3].astype(np.float64)
    return (bgr @ np.asarray(_LUMA_BGR)).astype(np.float32)


def window_bounds(arr: np.ndarray, window_percentiles: tuple[float, float]) -> tuple[float, float]:
    """Robust low/high values of an image: its percentiles, falling back to min/max when they coincide.

    Percentiles are estimated on a strided view of about 2**18 pixels (exact for small images). Integer
    images up to 16 bits use a histogram (linear time, no sort); other dtypes use `np.nanpercentile`.
    The min/max fallback keeps a small structure on a near-constant background (e.g. 99.9 % air).
    """
    sample = _strided_sample(arr)
    lo_p, hi_p = window_percentiles
    if sample.dtype in (np.uint8, np.uint16):
        lo, hi = _histogram_percentiles(sample, lo_p, hi_p)
    else:
        finite = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample
        if finite.size == 0:
            return 0.0, 0.0
        lo, hi = (float(v) for v in np.percentile(finite, (lo_p, hi_p)))
    if hi <= lo:
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return lo, hi


def apply_linear_window(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 1] with clipping; float32 out; zeros when hi <= lo (constant image)."""
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.float32)
    src = arr if arr.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) else arr.astype(np.float64)
    scale = 1.0 / (hi - lo)
    # One multi-threaded pass to float32 (cheaper than numpy's astype + two arithmetic passes at 5 Mpx).
    out = cv2.addWeighted(src, scale, src, 0.0, -lo * scale, dtype=cv2.CV_32F)
    out = out.reshape(arr.shape)
    if np.issubdtype(arr.dtype, np.floating):
        np.nan_to_num(out, copy=False, nan=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def percentile_window(arr: np.ndarray, window_percentiles: tuple[float, float]) -> np.ndarray:
    """Robust percentile windowing to float32 [0, 1] (see `window_bounds`)."""
    lo, hi = window_bounds(arr, window_percentiles)
    return apply_linear_window(arr, lo, hi)


def _strided_sample(arr: np.ndarray) -> np.ndarray:
    stride = max(1, int(np.sqrt(arr.size / _SAMPLE_PIXELS)))
    return arr[::stride, ::stride] if stride > 1 else arr


def _histogram_percentiles(sample: np.ndarray, lo_p: float, hi_p: float) -> tuple[float, float]:
    """Percentiles of a uint8/uint16 array by counting (lower-value convention, like `method="lower"`)."""
    counts = np.bincount(sample.ravel(), minlength=256)
    cdf = np.cumsum(counts)
    n = cdf[-1]
    lo = int(np.searchsorted(cdf, lo_p / 100.0 * (n - 1), side="right"))
    hi = int(np.searchsorted(cdf, hi_p / 100.0 * (n - 1), side="right"))
    return float(min(lo, len(counts) - 1)), float(min(hi, len(counts) - 1))


# ------------------------------------------------------------------------------------------------ raster decoding
def decode_raster(path: Path, data: bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode PNG/JPEG/TIFF bytes with OpenCV, unchanged bit depth, to one channel.

    Returns:
        [H, W] uint8, uint16 or float array in the file's own units (not windowed).

    Raises:
        InputError: not an image, truncated, or over the size limits.
    """
    dims = raster_dims(data)
    if dims is not None:
        check_dims(path, *dims, max_pixels=max_pixels, max_side=max_side)
    _check_complete(path, data)
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise InputError(f"{path}: cannot decode image ({first_line(err)})") from None
    if arr is None or arr.size == 0:
        kind = "corrupt image data" if dims is not None else "not a PNG, JPEG, TIFF or DICOM image"
        raise InputError(f"{path}: {kind}")
    check_dims(path, arr.shape[1], arr.shape[0], max_pixels=max_pixels, max_side=max_side)
    try:
        return to_gray(arr)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


def decode_png_file(path: Path, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray | None:
    """Decode a plainly complete PNG straight from disk; None when the full-bytes path must decide.

    The checks of `decode_raster` need only the first and last few KiB of a PNG (signature and IHDR; the IEND
    chunk), so those are read and OpenCV reads the file itself. Reading a 10 MB 16-bit radiograph into memory
    first for `imdecode` costs about 7 % of its decode time (benchmarks/bench_preprocess.py). Anything else (not
    a PNG, no IEND in the last 4 KiB, a DICOM preamble or suffix, an unreadable file, a decoder failure) returns
    None, and the caller's full path gives the same answer, or the same error, as before.

    Returns:
        [H, W] array in the file's own units, or None.

    Raises:
        InputError: the header's dimensions break the limits (checked before any pixel is decoded).
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(_PNG_HEAD_BYTES)
            size = os.fstat(fp.fileno()).st_size
            fp.seek(max(0, size - TAIL_BYTES))
            tail = fp.read()
    except OSError:
        return None
    if not head.startswith(PNG_SIGNATURE) or head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
        return None
    if not _utf8_path(path):  # OpenCV crashes (SIGSEGV) on a name that is not UTF-8; imdecode reads the bytes
        return None
    if b"IEND" not in tail:
        return None
    check_dims(path, *raster_dims(head), max_pixels=max_pixels, max_side=max_side)
    try:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if arr is None or arr.size == 0:
        return None
    check_dims(path, arr.shape[1], arr.shape[0], max_pixels=max_pixels, max_side=max_side)
    try:
        return to_gray(arr)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


def _utf8_path(path: Path) -> bool:
    """Whether OpenCV can be handed this path (it takes UTF-8; other bytes are Python's lone surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_dims(path: Path, width: int, height: int, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> None:
    """Refuse zero-sized or oversized images (decompression bombs) by name.

    Raises:
        InputError: naming the file, its size and the limit it breaks.
    """
    if width < 1 or height < 1:
        raise InputError(f"{path}: corrupt image header (size {width}x{height})")
    if max(width, height) > max_side:
        raise InputError(f"{path}: image is {width}x{height} px, a side exceeds the limit of {max_side} px")
    if width * height > max_pixels:
        raise InputError(f"{path}: image is {width}x{height} px, exceeds the limit of {max_pixels} pixels")


def _check_min_side(path: Path, arr: np.ndarray, min_side: int) -> np.ndarray:
    """`arr` [H, W] unchanged, or an InputError when a side is shorter than `min_side`."""
    if min(arr.shape[:2]) < min_side:
        raise InputError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} px, too small (min side {min_side} px)")
    return arr


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse truncated PNG/JPEG files, which decoders may otherwise return half-grey without an error."""
    if data.startswith(PNG_SIGNATURE) and data.rfind(b"IEND") < 0:
        raise InputError(f"{path}: truncated PNG (no IEND chunk)")
    # Inside JPEG entropy-coded data every 0xFF is stuffed, so an EOI after the last SOS means the scan ended.
    if data.startswith(JPEG_SOI) and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not data:
        raise InputError(f"{path}: empty file (0 bytes)")
    return data


# ----------------------------------------------------------------------------------------------------------- DICOM
def check_compressed_dicom(path: Path, ds: Any, limits: Limits) -> None:
    """Decode a compressed DICOM's pixel data once, as preprocess will; uncompressed files return at once.

    Args:
        path: the file.
        ds: its header Dataset (from `read_header`).
        limits: the size limits.

    Raises:
        ImageRejected: CORRUPT_PIXELS with the decoder's reason, the words predict uses for the same file.
    """
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None or not tsyntax.is_compressed:
        return
    try:
        read_grayscale(Path(path), (0.0, 100.0), max_pixels=limits.max_pixels, max_side=limits.max_side)
    except InputError as err:
        raise ImageRejected(CORRUPT_PIXELS, reason=str(err).removeprefix(f"{path}: ")) from None


def _read_dicom(
    path: Path, data: bytes, window_percentiles: tuple[float, float], max_pixels: int, max_side: int
) -> np.ndarray:
    """DICOM -> modality LUT -> VOI LUT / window (else percentiles) -> MONOCHROME1 inverted -> [0, 1]."""
    from pydicom.pixels import apply_color_lut

    ds = _read_dicom_dataset(path, data)
    check_dims(path, int(ds.get("Columns") or 0), int(ds.get("Rows") or 0), max_pixels=max_pixels, max_side=max_side)
    arr = _dicom_pixels(path, ds)
    if int(ds.get("SamplesPerPixel") or 1) > 1:  # colour: pydicom returns RGB (YBR converted); no LUTs apply
        return percentile_window(to_gray(np.ascontiguousarray(arr[..., 2::-1])), window_percentiles)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)  # indices -> the file's own colour table, [H, W, 3]
        return percentile_window(to_gray(np.ascontiguousarray(rgb[..., ::-1])), window_percentiles)
    values = modality_values(path, ds, arr)
    img01 = _dicom_voi(path, ds, values, window_percentiles)
    return 1.0 - img01 if displayed_inverted(ds) else img01  # inverted once, after windowing


def _read_dicom_dataset(path: Path, data: bytes) -> Dataset:
    import pydicom

    try:
        with quiet_pydicom():  # pydicom's warnings and log records quote element values (PHI): keep out of logs
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as err:  # pydicom raises many types on malformed input; all mean "unreadable"
        # Only the type: the message of a value-parsing error may quote a header value (PHI).
        raise InputError(f"{path}: not a readable DICOM file ({type(err).__name__})") from None
    if len(ds) == 0:
        raise InputError(f"{path}: not a DICOM file (no data elements)")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(f"{path}: DICOM file has no pixel data (not an image object, e.g. a report)")
    return ds


def _dicom_pixels(path: Path, ds: Dataset) -> np.ndarray:
    """Decoded pixel array; compressed data without a capable plugin is refused naming the plugin to install.

    pydicom logs a decoder's failure with its traceback through the `pydicom` logger: quiet_pydicom keeps it off
    the user's terminal, and the error is reported here in one line.
    """
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is not None:
        bits, spp = int(ds.get("BitsStored") or 8), int(ds.get("SamplesPerPixel") or 1)
        problem = decoder_problem(str(tsyntax), bits, spp)
        if problem:
            raise InputError(f"{path}: {UNSUPPORTED_DICOM} ({problem})")
    try:
        with quiet_pydicom():
            return ds.pixel_array
    except Exception as err:  # truncated or malformed pixel data, in any of pydicom's error types
        # pydicom puts each plugin's own reason on the lines after "Unable to decode ...": keep the last one.
        lines = [line.strip() for line in without_reprs(str(err)).splitlines() if line.strip()]
        detail = lines[-1][:300] if len(lines) > 1 else first_line(err)
        raise InputError(f"{path}: {CORRUPT_PIXELS} ({type(err).__name__}: {detail})") from None


def _dicom_voi(path: Path, ds: Dataset, values: np.ndarray, window_percentiles: tuple[float, float]) -> np.ndarray:
    """VOI transform of modality values to [0, 1]: the VOI LUT Sequence, else Window Center/Width, else percentiles."""
    from pydicom.pixels import apply_voi

    if ds.get("VOILUTSequence"):
        stored = np.rint(values).astype(np.int64)  # VOI LUTs index integer modality values
        lut_out = apply_voi(stored, ds)  # uint8/uint16 in [0, 2**depth - 1]
        return apply_linear_window(lut_out, 0.0, float(2 ** voi_lut_depth(path, ds) - 1))
    window = _window(ds)
    if window is None:
        return percentile_window(values, window_percentiles)
    center, width, function = window
    if width <= 0 or (function == "LINEAR" and width < 1):
        log.warning("%s: invalid WindowWidth %s; using percentile windowing", path, width)
        return percentile_window(values, window_percentiles)
    return voi_window(values, center, width, function)


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = (_first_value(ds[key].value) for key in ("WindowCenter", "WindowWidth"))
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    return center, width, function


def _first_value(value: object) -> float | None:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None  # several windows: the first is the primary one
    return None if value in (None, "") else float(value)


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to [0, 1] (LINEAR, LINEAR_EXACT or SIGMOID), float32."""
    if function == "SIGMOID":
        x = np.asarray(values, dtype=np.float32)
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return apply_linear_window(values, center - width / 2, center + width / 2)
    if width == 1:  # LINEAR with width 1 is a threshold at center - 0.5
        return (np.asarray(values) > center - 0.5).astype(np.float32)
    c, w = center - 0.5, width - 1.0
    return apply_linear_window(values, c - w / 2, c + w / 2)
