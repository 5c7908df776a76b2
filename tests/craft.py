"""Image files built from their specifications (TIFF 6.0 and its technical notes, PNG 1.2, PS3.5 / PS3.10 DICOM).

Tests use these instead of any vendor's sample files, so every hostile layout is spelled out field by field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# TIFF field types: (struct code, bytes per value)
SHORT, LONG, ASCII = 3, 4, 2
_TIFF_TYPES = {SHORT: ("H", 2), LONG: ("I", 4), ASCII: ("s", 1)}


@dataclass
class TiffPage:
    """One IFD: its image data (one strip) and tags other than the strip offsets and counts."""

    data: bytes
    width: int
    height: int
    bits: int | tuple[int, ...] = 8
    samples: int = 1
    photometric: int = 1
    compression: int = 1
    sample_format: int = 1
    predictor: int | None = None
    subfile_type: int | None = None  # NewSubfileType: bit 0 = reduced-resolution copy
    extra: dict[int, tuple[int, list[int]]] = field(default_factory=dict)  # tag -> (type, values)

    def tags(self) -> dict[int, tuple[int, list[int]]]:
        """Every tag of this page but 273 (StripOffsets) and 279 (StripByteCounts)."""
        bits = list(self.bits) if isinstance(self.bits, tuple) else [self.bits] * self.samples
        tags = {
            256: (LONG, [self.width]),
            257: (LONG, [self.height]),
            258: (SHORT, bits),
            259: (SHORT, [self.compression]),
            262: (SHORT, [self.photometric]),
            277: (SHORT, [self.samples]),
            278: (LONG, [self.height]),
            284: (SHORT, [1]),
            339: (SHORT, [self.sample_format] * self.samples),
        }
        if self.predictor is not None:
            tags[317] = (SHORT, [self.predictor])
        if self.subfile_type is not None:
            tags[254] = (LONG, [self.subfile_type])
        return tags | self.extra


def tiff_file(pages: list[TiffPage], *, big_endian: bool = False) -> bytes:
    """A classic TIFF holding `pages` as a chain of IFDs, each with one strip."""
    order = ">" if big_endian else "<"
    out = bytearray(b"MM\0*" if big_endian else b"II*\0") + b"\0\0\0\0"
    link_at = 4  # where the offset of the next IFD goes
    for page in pages:
        strip_at = len(out)
        out += page.data + b"\0" * (len(page.data) % 2)
        tags = page.tags() | {273: (LONG, [strip_at]), 279: (LONG, [len(page.data)])}
        values: dict[int, bytes] = {}
        for tag, (typ, vals) in tags.items():
            code, size = _TIFF_TYPES[typ]
            raw = bytes(vals) if typ == ASCII else struct.pack(f"{order}{len(vals)}{code}", *vals)
            if len(raw) > 4:
                values[tag] = struct.pack(f"{order}I", len(out))
                out += raw + b"\0" * (len(raw) % 2)
            else:
                values[tag] = raw.ljust(4, b"\0")
        ifd_at = len(out)
        out[link_at : link_at + 4] = struct.pack(f"{order}I", ifd_at)
        out += struct.pack(f"{order}H", len(tags))
        for tag in sorted(tags):
            typ, vals = tags[tag]
            out += struct.pack(f"{order}HHI", tag, typ, len(vals)) + values[tag]
        link_at = len(out)
        out += b"\0\0\0\0"
    return bytes(out)


def pack_bits(img: np.ndarray, bits: int) -> bytes:
    """Rows of `bits`-bit samples packed most-significant first, each row padded to a whole byte (TIFF, PNG)."""
    rows = []
    for row in np.asarray(img, dtype=np.uint8):
        value_bits = np.unpackbits(row[:, None], axis=1)[:, 8 - bits :].ravel()
        rows.append(np.packbits(value_bits).tobytes())
    return b"".join(rows)


# ------------------------------------------------------------------------------------------------ DICOM (PS3.5)
def dicom_dataset(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None):
    """A single-frame digital X-ray Dataset (explicit VR little endian) holding `pixels` [H, W] uint8 / uint16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fracture-test"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=f"<u{pixels.dtype.itemsize}").tobytes()
    return ds


def dicom_bytes(ds, *, preamble: bool = True) -> bytes:
    """The Part 10 file of `ds`: 128-byte preamble + `DICM` + file meta + data set; without the first two if asked."""
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[132:]


# -------------------------------------------------------------------------------------------------- PNG 1.2
def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_chunk(png: bytes, chunk: bytes, before_idat: bool) -> bytes:
    """`png` with `chunk` inserted right before its first IDAT, or right before IEND."""
    at = png.index(b"IDAT") - 4 if before_idat else png.rindex(b"IEND") - 4
    return png[:at] + chunk + png[at:]


def exif_orientation(value: int) -> bytes:
    """A big-endian TIFF structure (the body of a PNG eXIf chunk) holding only Orientation = `value`."""
    return b"MM\0*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, SHORT, 1, value, 0) + b"\0\0\0\0"
