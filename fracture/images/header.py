"""Header-only image reader: format, dimensions and bit depth without decoding a single pixel.

Ingest must vet tens of thousands of files quickly and refuse decompression bombs before any decoder sees
them, so this module reads only the bytes that describe an image: the PNG IHDR chunk, the JPEG SOF segment, the
first TIFF IFD, or a DICOM header (pydicom with `stop_before_pixels`). Truncation is detected cheaply from the
end of the file (PNG must end with IEND, JPEG with EOI, TIFF strips and DICOM pixel data must fit in the file).

Every problem is an `ImageRejected` (an InputError) carrying a short reason code for counting and a reason text
for quarantine.csv. Reasons never echo file contents, so no DICOM value can leak through them.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from fracture.base.errors import InputError
from fracture.images.tiff import MAX_PAGES_COUNTED, TiffLayout, is_page

# Reason codes (the text in quarantine.csv starts with the code or, for dimensions, names the numbers).
FILE_MISSING = "file missing"
ZERO_BYTES = "zero bytes"
NOT_IMAGE = "not an image"
UNSUPPORTED_FORMAT = "unsupported image format"
TRUNCATED = "truncated or corrupt"
TOO_LARGE = "dimensions exceed limit"
TOO_SMALL = "image too small"
UNREADABLE_DICOM = "unreadable DICOM"
NO_PIXEL_DATA = "DICOM without pixel data"
UNSUPPORTED_DICOM = "unsupported DICOM"
CORRUPT_PIXELS = "corrupt DICOM pixel data"
NOT_A_FILE = "not a regular file"  # a FIFO, socket or device (never read: it may block); = fracture.sources.NOT_A_FILE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
PNG_IEND = b"IEND\xaeB`\x82"
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
TAIL_BYTES = 4096  # end-of-image markers are searched for in the last 4 KiB (some writers pad after them)
MAX_JPEG_SEGMENTS = 4096
MAX_TIFF_ARRAY_BYTES = 4 << 20
DICOM_DEFER_BYTES = 1 << 20  # header values above 1 MiB are not loaded into memory

Reader = Callable[[int, int], bytes]  # (offset, n) -> up to n bytes at offset


class ImageRejected(InputError):
    """A file that cannot be accepted as an image; `code` groups reasons, `reason` is the full text."""

    def __init__(self, code: str, detail: str = "", reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or (f"{code} ({detail})" if detail else code)
        super().__init__(self.reason)


@dataclass(frozen=True)
class ImageHeader:
    """What the header says about an image."""

    format: str  # png | jpeg | tiff | dicom
    width: int  # px
    height: int  # px
    bit_depth: int  # bits per sample as stored (1..16; DICOM BitsStored)
    channels: int  # samples per pixel after decoding
    colour_type: str  # gray, rgb, palette, ... or the DICOM PhotometricInterpretation
    tiff: TiffLayout | None = None  # how a TIFF's pixels are stored (its decoder, WhiteIsZero); None otherwise

    @property
    def decoded_bit_depth(self) -> int:
        """Bits per sample of the decoded array: 32 for float TIFF, 16 for anything else deeper than 8 bits, else 8."""
        return 32 if self.bit_depth == 32 else 16 if self.bit_depth > 8 else 8


@dataclass(frozen=True)
class Limits:
    """Size limits checked from the header, before any decoding (decompression-bomb guard).

    The defaults are for direct library use; the pipeline passes params.ingest's values (the demo's are the same).
    """

    max_pixels: int = 200_000_000
    max_side: int = 40_000
    min_side: int = 8


class _Parsed(NamedTuple):
    header: ImageHeader
    truncated: str | None  # detail of a truncation problem, or None
    dataset: Any = None  # pydicom Dataset (header only) for DICOM files


def sniff_format(head: bytes) -> str:
    """Image format from the leading bytes (132 are enough): png, jpeg, tiff, dicom, another name, or unknown.

    `DICM` at offset 128 wins over every other signature: PS3.10 lets the 128-byte preamble hold anything, and
    "dual-personality" files put a TIFF header there.
    """
    if head[128:132] == b"DICM" or (head[:2] == b"\x02\x00" and headless_dicom(head)):
        return "dicom"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SOI + b"\xff"):
        return "jpeg"
    if head[:4] in TIFF_MAGICS:
        return "tiff"
    others = {
        b"II+\x00": "BigTIFF",
        b"MM\x00+": "BigTIFF",
        b"GIF8": "GIF",
        b"\x00\x00\x00\x0cjP": "JPEG 2000",
        b"\xffO\xffQ": "JPEG 2000",
        b"%PDF": "PDF",
        b"PK\x03\x04": "ZIP",
        b"\x1f\x8b": "gzip",
        b"BM": "BMP",
    }
    for magic, name in others.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return "unknown"


def headless_dicom(head: bytes) -> bool:
    """A bare DICOM data set (no preamble, no `DICM`; some exporters omit them) starting at a (0002) or (0008) tag."""
    explicit = len(head) >= 6 and head[4:6].isalpha() and head[4:6].isupper()
    return head[128:132] != b"DICM" and (head[:2] == b"\x08\x00" or (head[:2] == b"\x02\x00" and explicit))


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def bytes_reader(data: bytes) -> Reader:
    """A Reader over bytes in memory."""
    return lambda offset, n: data[offset : offset + n] if offset >= 0 else b""


def file_reader(fp: IO[bytes]) -> Reader:
    """A Reader over a seekable binary file object."""

    def read_at(offset: int, n: int) -> bytes:
        fp.seek(offset)
        return fp.read(n)

    return read_at


def _tail_has(read_at: Reader, size: int, marker: bytes, start: int) -> bool:
    """Whether `marker` occurs in the last TAIL_BYTES of the file, at or after offset `start`."""
    begin = max(size - TAIL_BYTES, start, 0)
    return begin < size and marker in read_at(begin, size - begin)


def parse_png(read_at: Reader, size: int) -> _Parsed:
    """PNG: IHDR (checked against its CRC) and the IEND chunk at the end."""
    head = read_at(0, 33)
    if len(head) < 33:
        raise ImageRejected(TRUNCATED, "PNG shorter than its header")
    length, ctype = struct.unpack(">I4s", head[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ImageRejected(TRUNCATED, "PNG without IHDR chunk")
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise ImageRejected(TRUNCATED, "PNG header checksum mismatch")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    allowed = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if colour not in allowed or depth not in allowed[colour]:
        raise ImageRejected(TRUNCATED, f"invalid PNG colour type {colour} / bit depth {depth}")
    if width == 0 or height == 0:
        raise ImageRejected(TRUNCATED, "PNG with zero width or height")
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour]
    names = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgba"}
    header = ImageHeader("png", width, height, depth, channels, names[colour])
    ended = _tail_has(read_at, size, PNG_IEND, 33)
    return _Parsed(header, None if ended else "PNG without IEND chunk")


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_sof_offset(read_at: Reader) -> int:
    """Offset of the SOF segment's length field, walking the marker segments from SOI."""
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        b = read_at(pos, 4)
        if len(b) < 2:
            raise ImageRejected(TRUNCATED, "JPEG ends before its frame header")
        if b[0] != 0xFF:
            raise ImageRejected(TRUNCATED, "bad JPEG marker")
        marker = b[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00) or len(b) < 4:
            raise ImageRejected(TRUNCATED, "JPEG without frame header")
        if marker in _JPEG_SOF:
            return pos + 2
        seglen = struct.unpack(">H", b[2:4])[0]
        if seglen < 2:
            raise ImageRejected(TRUNCATED, "bad JPEG segment length")
        pos += 2 + seglen
    raise ImageRejected(TRUNCATED, "JPEG without frame header")


def parse_jpeg(read_at: Reader, size: int) -> _Parsed:
    """JPEG: the SOF segment (precision, height, width, components) and EOI at the end."""
    sof = _jpeg_sof_offset(read_at)
    seg = read_at(sof, 8)  # length(2) precision(1) height(2) width(2) components(1)
    if len(seg) < 8:
        raise ImageRejected(TRUNCATED, "JPEG frame header cut short")
    precision, height, width, ncomp = struct.unpack(">BHHB", seg[2:8])
    if height == 0 or width == 0:
        raise ImageRejected(TRUNCATED, "JPEG with zero width or height")
    if precision not in (8, 12, 16) or ncomp not in (1, 3, 4):
        raise ImageRejected(TRUNCATED, f"JPEG with precision {precision} and {ncomp} components")
    names = {1: "gray", 3: "ycbcr", 4: "cmyk"}
    header = ImageHeader("jpeg", width, height, precision, 1 if ncomp == 1 else 3, names[ncomp])
    ended = _tail_has(read_at, size, b"\xff\xd9", sof + 8)
    return _Parsed(header, None if ended else "JPEG without end-of-image marker")


def raster_dims(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG or JPEG bytes from their header alone; None for any other format.

    A malformed header gives (0, 0), which the decoders' size check refuses as a corrupt header. `data` may be
    only the first few KiB of the file: the end-of-file markers are not judged here.
    """
    parser = {"png": parse_png, "jpeg": parse_jpeg}.get(sniff_format(data[:132]))
    if parser is None:
        return None
    try:
        header = parser(bytes_reader(data), len(data)).header
    except ImageRejected:
        return 0, 0
    return header.width, header.height


class _Ifd:
    """The entries of one TIFF IFD, with values read on demand."""

    _TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4)}  # BYTE, SHORT, LONG

    def __init__(self, read_at: Reader, order: str, offset: int) -> None:
        self.read_at, self.order = read_at, order
        count_raw = read_at(offset, 2)
        if len(count_raw) < 2:
            raise ImageRejected(TRUNCATED, "TIFF directory outside the file")
        count = struct.unpack(order + "H", count_raw)[0]
        raw = read_at(offset + 2, 12 * count)
        if count == 0 or len(raw) < 12 * count:
            raise ImageRejected(TRUNCATED, "TIFF directory cut short")
        self.entries = {}
        for i in range(count):
            tag, typ, n = struct.unpack(order + "HHI", raw[12 * i : 12 * i + 8])
            self.entries[tag] = (typ, n, raw[12 * i + 8 : 12 * i + 12])
        link = read_at(offset + 2 + 12 * count, 4)
        self.next = struct.unpack(order + "I", link)[0] if len(link) == 4 else 0  # offset of the next IFD, 0: none

    def values(self, tag: int) -> list[int]:
        """Integer values of a tag ([] when absent or of a type we do not read)."""
        if tag not in self.entries:
            return []
        typ, n, raw = self.entries[tag]
        if typ not in self._TYPES or n == 0 or n * self._TYPES[typ][1] > MAX_TIFF_ARRAY_BYTES:
            return []
        fmt, width = self._TYPES[typ]
        nbytes = n * width
        data = raw[:nbytes] if nbytes <= 4 else self.read_at(struct.unpack(self.order + "I", raw)[0], nbytes)
        if len(data) < nbytes:
            raise ImageRejected(TRUNCATED, "TIFF tag data outside the file")
        return list(struct.unpack(f"{self.order}{n}{fmt}", data))


def _count_pages(read_at: Reader, order: str, first: _Ifd) -> int:
    """Full-size pages in the IFD chain up to MAX_PAGES_COUNTED (not thumbnails or masks; a broken link ends it)."""
    pages, ifd, seen = 1, first, set()
    while ifd.next and ifd.next not in seen and len(seen) < MAX_PAGES_COUNTED:
        seen.add(ifd.next)
        try:
            ifd = _Ifd(read_at, order, ifd.next)
        except ImageRejected:
            break
        has_size = ifd.values(256) and ifd.values(257)
        pages += bool(has_size) and is_page((ifd.values(254) or [0])[0], (ifd.values(255) or [1])[0])
    return min(pages, MAX_PAGES_COUNTED)


def parse_tiff(read_at: Reader, size: int) -> _Parsed:
    """Classic TIFF: the first IFD (width, length, bits, samples, photometric) and strip/tile extents."""
    head = read_at(0, 8)
    if len(head) < 8:
        raise ImageRejected(TRUNCATED, "TIFF shorter than its header")
    order = "<" if head[:2] == b"II" else ">"
    ifd = _Ifd(read_at, order, struct.unpack(order + "I", head[4:8])[0])
    width, height = ifd.values(256)[:1], ifd.values(257)[:1]
    if not width or not height or width[0] == 0 or height[0] == 0:
        raise ImageRejected(TRUNCATED, "TIFF without image dimensions")
    bits = max(ifd.values(258) or [1])
    channels = (ifd.values(277) or [1])[0]
    photometric = (ifd.values(262) or [1])[0]
    first = (ifd.values(259) or [1])[0], bits, channels, photometric, (ifd.values(339) or [1])[0]
    layout = TiffLayout(*first, planar=(ifd.values(284) or [1])[0], pages=_count_pages(read_at, order, ifd))
    names = {0: "gray (min-is-white)", 1: "gray", 2: "rgb", 3: "palette", 5: "cmyk", 6: "ycbcr"}
    header = ImageHeader("tiff", width[0], height[0], bits, channels, names.get(photometric, "other"), layout)
    if layout.problem():
        raise ImageRejected(UNSUPPORTED_FORMAT, layout.problem())
    offsets = ifd.values(273) or ifd.values(324)
    counts = ifd.values(279) or ifd.values(325)
    end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
    return _Parsed(header, "TIFF image data beyond the end of the file" if end > size else None)


def read_header(fp: IO[bytes], size: int, suffix: str = "", limits: Limits | None = None) -> tuple[ImageHeader, Any]:
    """Read and vet the header of one image file.

    Args:
        fp: seekable binary file object positioned anywhere.
        size: the file's size in bytes.
        suffix: the file name's suffix (".dcm" makes a file without the DICM prefix an unreadable DICOM).
        limits: size limits; checked from the header, before truncation.

    Returns:
        The header and, for DICOM, the pydicom Dataset read without pixel data (else None). The Dataset holds
        PHI: extract only what is needed (fracture.sources.dicom.extract_identity) and drop it.

    Raises:
        ImageRejected: the file is empty, not an image, unsupported, beyond the limits, or truncated.
    """
    if size <= 0:
        raise ImageRejected(ZERO_BYTES)
    read_at = file_reader(fp)
    head = read_at(0, 132)
    kind = sniff_format(head)
    if kind == "dicom" or (kind == "unknown" and suffix.lower() in DICOM_SUFFIXES):
        parsed = parse_dicom(fp, size)
    elif kind in _PARSERS:
        parsed = _PARSERS[kind](read_at, size)
    elif kind == "unknown":
        raise ImageRejected(NOT_IMAGE, "text file" if _looks_like_text(head) else "unrecognised file signature")
    else:
        raise ImageRejected(UNSUPPORTED_FORMAT, kind)
    check_limits(parsed.header, limits or Limits())
    if parsed.truncated:
        raise ImageRejected(TRUNCATED, parsed.truncated)
    return parsed.header, parsed.dataset


def read_image_header(path: Path, limits: Limits | None = None) -> ImageHeader:
    """Header of an image file on disk (see `read_header`).

    Raises:
        ImageRejected: missing, empty, not an image, beyond the limits, or truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fp:
            size = fp.seek(0, 2)
            return read_header(fp, size, path.suffix, limits)[0]
    except FileNotFoundError:
        raise ImageRejected(FILE_MISSING) from None
    except OSError as err:
        raise ImageRejected(NOT_IMAGE, f"unreadable file: {err.strerror or type(err).__name__}") from None


def check_limits(header: ImageHeader, limits: Limits) -> None:
    """Refuse images too large (decompression bombs) or too small to be radiographs.

    Raises:
        ImageRejected: with "dimensions WxH exceed limit" or "image too small (WxH ...)".
    """
    w, h = header.width, header.height
    if w * h > limits.max_pixels or max(w, h) > limits.max_side:
        reason = f"dimensions {w}x{h} exceed limit (max_side {limits.max_side}, max_pixels {limits.max_pixels})"
        raise ImageRejected(TOO_LARGE, reason=reason)
    if min(w, h) < limits.min_side:
        raise ImageRejected(TOO_SMALL, f"{w}x{h}, min_side {limits.min_side}")


_PARSERS: dict[str, Callable[[Reader, int], _Parsed]] = {"png": parse_png, "jpeg": parse_jpeg, "tiff": parse_tiff}

# ---------------------------------------------------------------- DICOM

_PIXEL_TAGS = {(0x7FE0, 0x0010): "", (0x7FE0, 0x0008): "float", (0x7FE0, 0x0009): "double float"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0"
_DEFLATED = "1.2.840.10008.1.2.1.99"


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom while reading untrusted headers: its warnings and log records can quote values (PHI).

    Reading validation is switched off too (we read a handful of elements and check them ourselves).
    """
    import pydicom.config

    pd_log = logging.getLogger("pydicom")
    settings = pydicom.config.settings
    old_disabled, old_mode = pd_log.disabled, settings.reading_validation_mode
    pd_log.disabled = True
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pd_log.disabled = old_disabled
        settings.reading_validation_mode = old_mode


def _dicom_int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    return int(value)


def _read_dataset(fp: IO[bytes], stop_before_pixels: bool) -> tuple[Any, int]:
    """Read a DICOM header with pydicom; return the Dataset and the file position where reading stopped."""
    import pydicom

    fp.seek(0)
    force = headless_dicom(fp.read(132))
    fp.seek(0)
    ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, defer_size=DICOM_DEFER_BYTES, force=force)
    return ds, fp.tell()


def _pixel_element(read_at: Reader, pos: int, encoding: tuple[Any, Any]) -> tuple[str, int, int] | None:
    """(kind, value offset, length) of the pixel data element at `pos`, or None when there is none."""
    raw = read_at(pos, 12)
    implicit, little = encoding
    order = ">" if little is False else "<"
    if len(raw) < 8:
        return None
    kind = _PIXEL_TAGS.get(struct.unpack(order + "HH", raw[:4]))
    if kind is None:
        return None
    if implicit:
        return kind, pos + 8, struct.unpack(order + "I", raw[4:8])[0]
    if raw[4:6] in _LONG_VRS and len(raw) == 12:
        return kind, pos + 12, struct.unpack(order + "I", raw[8:12])[0]
    return kind, pos + 8, struct.unpack(order + "H", raw[6:8])[0]


def _pixel_extent_problem(read_at: Reader, size: int, element: tuple[str, int, int], native: int) -> str | None:
    """Truncation detail when the pixel data element does not fit in the file, else None."""
    kind, start, length = element
    if kind:
        raise ImageRejected(UNSUPPORTED_DICOM, f"{kind} pixel data")
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames end with a sequence delimiter
        return None if _tail_has(read_at, size, _SEQ_DELIMITER, start) else "DICOM pixel data cut short"
    if length == 0:
        raise ImageRejected(NO_PIXEL_DATA)
    if start + length > size or length < native:
        return "DICOM pixel data cut short"
    _check_pixel_length(length, native)
    return None


def _check_pixel_length(length: int, native: int) -> None:
    """Refuse native pixel data longer than one frame plus a pad byte (a frame hidden by NumberOfFrames 1 or absent)."""
    if native and length > native + native % 2:
        frames = f": {length // native} frames' worth" if length % native == 0 else ""
        detail = f"PixelData holds {length} bytes, not Rows x Columns x SamplesPerPixel x BitsAllocated/8 = {native}"
        raise ImageRejected(CORRUPT_PIXELS, detail + frames)


_PILLOW_ONLY_LIMITS = {  # what pydicom's Pillow plugin refuses (pydicom/pixels/decoders/pillow.py)
    "1.2.840.10008.1.2.4.51": "Pillow decodes JPEG Extended only with 8-bit samples",
}


def decoder_problem(uid: str, bits_stored: int, samples: int) -> str | None:
    """Why no installed pydicom plugin can decode this compressed pixel data, naming the plugin to install; else None.

    Shared by ingest's header check and the decoder (fracture.images.decode), so a file accepted by one is decodable
    by the other. Uncompressed transfer syntaxes never have a problem.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    tsyntax = UID(uid)
    if not tsyntax.is_compressed:
        return None
    name = tsyntax.name or "unknown"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return f"transfer syntax {name} is not supported by pydicom"
    plugins = set(decoder.available_plugins)
    others = "; ".join(d for d in decoder.missing_dependencies if not d.startswith("pillow")) or "none listed"
    if not plugins:
        return f"transfer syntax {name} needs a decoder plugin; install one of: {others}"
    limit = _PILLOW_ONLY_LIMITS.get(str(tsyntax))
    if plugins == {"pillow"} and (
        (limit and bits_stored > 8) or (tsyntax.name.startswith("JPEG 2000") and samples > 1 and bits_stored > 8)
    ):
        why = limit or "Pillow decodes multi-sample JPEG 2000 only with 8-bit samples"
        return f"transfer syntax {name} with {bits_stored}-bit samples: {why}; install one of: {others}"
    return None


def _check_transfer_syntax(ds: Any, header: ImageHeader) -> bool:
    """Whether the pixel data is compressed; refuses compressed data no installed plugin can decode."""
    from pydicom.uid import UID

    uid = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    problem = decoder_problem(str(uid), header.bit_depth, header.channels)
    if problem:
        raise ImageRejected(UNSUPPORTED_DICOM, problem)
    return uid.is_compressed


def _dicom_header(ds: Any) -> tuple[ImageHeader, int]:
    """Header from the image pixel module and the byte count of native (uncompressed) pixel data."""
    rows, cols = _dicom_int(ds, "Rows"), _dicom_int(ds, "Columns")
    if not rows or not cols:
        raise ImageRejected(UNREADABLE_DICOM, "missing Rows/Columns")
    allocated = _dicom_int(ds, "BitsAllocated", 16)
    stored = _dicom_int(ds, "BitsStored", allocated)
    spp = _dicom_int(ds, "SamplesPerPixel", 1)
    frames = _dicom_int(ds, "NumberOfFrames", 1) or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip().upper()
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise ImageRejected(UNSUPPORTED_DICOM, f"BitsAllocated {allocated}, BitsStored {stored}")
    if spp not in (1, 3):
        raise ImageRejected(UNSUPPORTED_DICOM, f"SamplesPerPixel {spp}")
    if frames != 1:
        raise ImageRejected(UNSUPPORTED_DICOM, f"multi-frame ({frames} frames)")
    if "ModalityLUTSequence" not in ds and ds.get("RescaleSlope") not in (None, "") and float(ds.RescaleSlope) == 0:
        raise ImageRejected(UNSUPPORTED_DICOM, "RescaleSlope 0 maps every pixel to one value: a blank image")
    allowed = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
    if photometric not in allowed:
        raise ImageRejected(UNSUPPORTED_DICOM, "unknown photometric interpretation")
    header = ImageHeader("dicom", cols, rows, stored, spp, photometric)
    native = rows * cols * spp * allocated // 8
    return header, native * 2 // 3 if photometric == "YBR_FULL_422" else native  # 4:2:2 keeps 2 of 3 samples


def _parse_dicom_dataset(fp: IO[bytes], size: int) -> _Parsed:
    from pydicom.datadict import dictionary_has_tag

    ds, pos = _read_dataset(fp, stop_before_pixels=True)
    if not any(dictionary_has_tag(tag) for tag in ds.keys()):  # nothing but unknown tags: not DICOM at all
        raise ImageRejected(UNREADABLE_DICOM)
    read_at = file_reader(fp)
    uid = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if uid == _DEFLATED:  # positions refer to the inflated stream: check presence on a full read
        full, _ = _read_dataset(fp, stop_before_pixels=False)
        element = ("", 0, len(full.PixelData)) if "PixelData" in full else None
    elif pos > size:  # a value declared past the end of the file
        raise ImageRejected(UNREADABLE_DICOM)
    else:
        element = _pixel_element(read_at, pos, ds.original_encoding)
        if element is None and pos < size:  # pydicom gave up before the end of the file
            raise ImageRejected(UNREADABLE_DICOM)
    if element is None:
        raise ImageRejected(NO_PIXEL_DATA)
    header, native_bytes = _dicom_header(ds)
    compressed = _check_transfer_syntax(ds, header)
    if uid == _DEFLATED:
        _check_pixel_length(element[2], 0 if compressed else native_bytes)
        return _Parsed(header, None, ds)
    problem = _pixel_extent_problem(read_at, size, element, 0 if compressed else native_bytes)
    return _Parsed(header, problem, ds)


def parse_dicom(fp: IO[bytes], size: int) -> _Parsed:
    """DICOM: pydicom header read (no pixels), pixel data presence, pixel-module checks, pixel data extent.

    Raises:
        ImageRejected: unreadable DICOM, no pixel data, unsupported pixel module or transfer syntax.
    """
    try:
        with quiet_pydicom():
            return _parse_dicom_dataset(fp, size)
    except ImageRejected:
        raise
    except Exception:  # any parser failure on untrusted bytes; its message may quote PHI, so drop it
        raise ImageRejected(UNREADABLE_DICOM) from None
