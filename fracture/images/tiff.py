"""TIFF layouts: which ones are usable radiographs, which decoder reads each, and the Pillow route.

OpenCV's bundled libtiff reads the common layouts (uncompressed, LZW, Deflate, PackBits, JPEG, CCITT; 1-, 4-, 8-,
12- and 16-bit integer samples, one 32-bit float channel) and is the decoder of every TIFF it reads, so their
cached pixels never change. Pillow's libtiff reads what OpenCV's lacks (LZMA and Zstandard compression, 2- and
4-bit grey, 2-bit palette, 16-bit CMYK). Neither reads WebP, old-style JPEG (compression 6), JPEG 2000, JBIG or
the other rare codecs, nor 3-, 5-, 6-, 7-bit and other odd sample widths: those are refused from the header with
the true reason ("TIFF compression LZMA is not supported"), so ingest and predict give the same answer.

Both decoders invert 1- to 8-bit WhiteIsZero (PhotometricInterpretation 0) samples and neither inverts 12- to
32-bit ones: `TiffLayout.invert` says when the decoded array still needs it. A file with more than one full-size
page is refused like a multi-frame DICOM; reduced-resolution copies (thumbnails) and transparency masks beside
the first page are not pages.

Measured with the pinned wheels (opencv-python 5.0.0, Pillow 13.0.0); tests/unit/test_hostile_inputs_decode.py
decodes a file of every layout declared decodable here and fails when a wheel changes that.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.base.errors import InputError, first_line

COMPRESSION_NAMES = {
    1: "none",
    2: "CCITT RLE",
    3: "CCITT Group 3",
    4: "CCITT Group 4",
    5: "LZW",
    6: "old-style JPEG",
    7: "JPEG",
    8: "Deflate",
    32946: "Deflate",
    32773: "PackBits",
    32766: "NeXT",
    32809: "ThunderScan",
    32908: "PixarFilm",
    32909: "PixarLog",
    34661: "JBIG",
    34676: "SGI LogL",
    34677: "SGI LogLuv",
    34712: "JPEG 2000",
    34887: "LERC",
    34925: "LZMA",
    50000: "Zstandard",
    50001: "WebP",
    50002: "JPEG XL",
}
OPENCV_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 7, 8, 32946, 32773})
PILLOW_COMPRESSIONS = frozenset({1, 5, 8, 32946, 32773, 34925, 50000})
INTEGER_BITS = frozenset({1, 2, 4, 8, 12, 16})
MAX_PAGES_COUNTED = 64  # IFDs walked when counting pages (a looping or endless chain stops there)
_MIN_IS_WHITE, _PALETTE, _CMYK = 0, 3, 5


@dataclass(frozen=True)
class TiffLayout:
    """What the first IFD (and the IFD chain) says about how the pixels are stored."""

    compression: int
    bits: int  # largest BitsPerSample
    samples: int
    photometric: int
    sample_format: int  # 1 unsigned, 2 signed, 3 IEEE float
    planar: int
    pages: int  # full-size pages in the file (>= 1)

    @property
    def compression_name(self) -> str:
        """The compression's name, or its number when unknown."""
        return COMPRESSION_NAMES.get(self.compression, f"{self.compression} (unknown)")

    @property
    def decoder(self) -> str:
        """`opencv` for every layout OpenCV reads faithfully, else `pillow`."""
        pillow_only = self.compression not in OPENCV_COMPRESSIONS or self.bits == 2
        pillow_only |= self.bits == 4 and self.photometric != _PALETTE
        pillow_only |= self.photometric == _CMYK and self.bits == 16
        return "pillow" if pillow_only else "opencv"

    @property
    def invert(self) -> bool:
        """Whether the decoded array is still WhiteIsZero (decoders invert only samples of up to 8 bits)."""
        return self.photometric == _MIN_IS_WHITE and self.bits > 8

    def problem(self) -> str | None:
        """Why no installed decoder reads this layout faithfully (the reason after `unsupported image format`)."""
        if self.planar == 2 and self.samples > 1:
            return "TIFF with separate colour planes (PlanarConfiguration 2)"
        if self.sample_format == 3:
            if self.bits != 32 or self.samples != 1:
                return f"TIFF with {self.bits}-bit float samples in {self.samples} channels"
        elif self.bits > 16:
            return f"TIFF with {self.bits} bits per sample"
        elif self.bits not in INTEGER_BITS:
            return f"TIFF with {self.bits}-bit samples is not supported"
        if self.compression not in OPENCV_COMPRESSIONS | PILLOW_COMPRESSIONS:
            return f"TIFF compression {self.compression_name} is not supported"
        if self.decoder == "pillow" and self.compression not in PILLOW_COMPRESSIONS:
            return f"TIFF compression {self.compression_name} with {self.bits}-bit samples is not supported"
        if self.photometric == _CMYK and self.bits == 16 and self.samples != 4:
            return f"TIFF with 16-bit CMYK in {self.samples} samples is not supported"
        if self.pages > 1:
            more = "or more " if self.pages >= MAX_PAGES_COUNTED else ""
            return f"multi-page TIFF ({self.pages} {more}pages; only single-page images are scored)"
        return None


def is_page(subfile_type: int, old_subfile_type: int) -> bool:
    """Whether an IFD is a full-size page: not a reduced-resolution copy or a mask (NewSubfileType bits 0 and 2)."""
    return not subfile_type & 0b101 and old_subfile_type != 2


def decode_with_pillow(path: Path, data: bytes) -> np.ndarray:
    """Decode TIFF bytes with Pillow to [H, W]: uint16 / float32 in the file's units, anything else 8-bit grey.

    Raises:
        InputError: Pillow cannot decode the pixel data.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode.startswith("I;16"):
                    return np.asarray(im).astype(np.uint16)
                if im.mode == "F":
                    return np.asarray(im, dtype=np.float32)
                palette = np.asarray(im.getpalette("RGB"), np.uint8).reshape(-1, 3) if im.mode in ("P", "PA") else None
                return _grey8(np.asarray(im), im.mode, palette)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: corrupt image data ({first_line(err)})") from None


def _grey8(arr: np.ndarray, mode: str, palette: np.ndarray | None) -> np.ndarray:
    """Pillow's 8-bit modes (1, L, LA, P, PA, RGB, RGBA, CMYK) as [H, W] uint8 luminance (ITU-R 601-2).

    Done in numpy rather than by Pillow's `convert`, which the project never calls on radiographs (it clips 16-bit
    samples; these are 8-bit, but one rule is easier to hold than an exception).
    """
    if mode == "1":
        return arr.astype(np.uint8) * 255
    if palette is not None:
        arr = palette[arr if arr.ndim == 2 else arr[..., 0]]  # indices -> the file's own colours, [H, W, 3]
    elif mode == "CMYK":  # as Pillow's CMYK -> RGB: (255 - C) * (255 - K) / 255
        arr = np.rint((255.0 - arr[..., :3]) * (255.0 - arr[..., 3:]) / 255.0).astype(np.uint8)
    if arr.ndim == 2:
        return arr
    if arr.shape[2] < 3:  # grey + alpha
        return np.ascontiguousarray(arr[..., 0])
    return np.rint(arr[..., :3] @ np.asarray([0.299, 0.587, 0.114])).astype(np.uint8)


def undo_min_is_white(arr: np.ndarray, layout: TiffLayout) -> np.ndarray:
    """A decoded WhiteIsZero array turned bone bright where the decoder left it as stored (12- to 32-bit)."""
    if not layout.invert:
        return arr
    if arr.dtype == np.uint16:
        return np.subtract(np.uint16(65535), arr)  # OpenCV scales 12-bit samples to the full 16-bit range
    return np.negative(arr)
