"""One usable-radiograph rule (fracture/images/vetting.py): ingest's header check and the decoder agree on every file.

Files are built here from the published layouts (TIFF 6.0, PS3.10 / PS3.5 for DICOM, EXIF orientation) rather
than taken from one vendor, and every case is checked through both doors: `read_image_header` (ingest) and
`prepare_image` (preprocess and predict).
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, SecondaryCaptureImageStorage

from fracture.base.errors import InputError
from fracture.images.decode import prepare_image, read_grayscale
from fracture.images.header import ImageRejected, Limits, decoder_problem, read_image_header

WP = (0.5, 99.5)
LIMITS = Limits(min_side=8)


def texture(h: int = 24, w: int = 40) -> np.ndarray:
    """An asymmetric 8-bit pattern: a bright block top-left and a ramp, so any flip or turn shows."""
    img = np.tile(np.linspace(20, 120, w, dtype=np.uint8), (h, 1))
    img[: h // 3, : w // 4] = 250
    return img


def ingest_says(path: Path) -> str:
    try:
        read_image_header(path, LIMITS)
    except ImageRejected as err:
        return err.reason
    return "usable"


def predict_says(path: Path) -> str:
    try:
        prepare_image(path, 32, WP, min_side=LIMITS.min_side)
    except InputError as err:
        return str(err).removeprefix(f"{path}: ")
    return "usable"


# ----------------------------------------------------------------------------------------------- TIFF 6.0 writer
def tiff_bytes(arr: np.ndarray, *, planar: bool = False, sample_format: int = 1, orientation: int = 1) -> bytes:
    """A little-endian, uncompressed TIFF (one strip, or one strip per plane when `planar`)."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    strips = [np.ascontiguousarray(arr[..., i]).tobytes() for i in range(c)] if planar else [arr.tobytes()]
    extra, data = bytearray(), bytearray()
    base = 8

    def array_offset(values: list[int], fmt: str) -> int:
        offset = base + len(extra)
        extra.extend(struct.pack(f"<{len(values)}{fmt}", *values))
        return offset

    bits_value = array_offset([bits] * c, "H") if c > 2 else bits
    format_value = array_offset([sample_format] * c, "H") if c > 2 else sample_format
    data_start = base + len(extra) + 64  # room for the strip arrays below
    offsets, pos = [], data_start
    for strip in strips:
        offsets.append(pos)
        pos += len(strip)
    offsets_value = array_offset(offsets, "I") if len(strips) > 1 else offsets[0]
    counts_value = array_offset([len(s) for s in strips], "I") if len(strips) > 1 else len(strips[0])
    extra.extend(b"\0" * (data_start - base - len(extra)))
    for strip in strips:
        data.extend(strip)
    entries = [  # (tag, type: 3 SHORT / 4 LONG, count, value or offset)
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, c, bits_value),
        (259, 3, 1, 1),
        (262, 3, 1, 2 if c == 3 else 1),
        (273, 4, len(strips), offsets_value),
        (274, 3, 1, orientation),
        (277, 3, 1, c),
        (278, 4, 1, h),
        (279, 4, len(strips), counts_value),
        (284, 3, 1, 2 if planar else 1),
        (339, 3, c, format_value),
    ]
    ifd_offset = base + len(extra) + len(data)
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        inline = struct.pack("<H", value) + b"\0\0" if typ == 3 and count == 1 else struct.pack("<I", value)
        if typ == 3 and count == 2:
            inline = struct.pack("<2H", value, value)
        ifd += struct.pack("<HHI", tag, typ, count) + inline
    return b"II*\0" + struct.pack("<I", ifd_offset) + bytes(extra) + bytes(data) + ifd + b"\0\0\0\0"


def test_tiff_writer_is_read_back_by_pillow():
    arr = texture()
    with Image.open(io.BytesIO(tiff_bytes(arr))) as im:
        assert np.array_equal(np.asarray(im), arr)


def test_planar_16bit_rgb_tiff_is_refused_by_both_never_decoded(tmp_path):
    # Was: accepted by ingest, then decoded as garbage that differed from run to run (an unreproducible cache).
    rgb = np.stack([texture().astype(np.uint16) * 257] * 3, axis=-1)
    path = tmp_path / "planar.tif"
    path.write_bytes(tiff_bytes(rgb, planar=True))
    reason = "unsupported image format (TIFF with separate colour planes (PlanarConfiguration 2))"
    assert ingest_says(path) == predict_says(path) == reason
    chunky = tmp_path / "chunky.tif"
    chunky.write_bytes(tiff_bytes(rgb))
    assert ingest_says(chunky) == predict_says(chunky) == "usable"


def test_float_tiff_is_usable_everywhere_and_other_floats_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    path.write_bytes(tiff_bytes(texture().astype(np.float32) / 255, sample_format=3))
    assert ingest_says(path) == predict_says(path) == "usable"
    assert prepare_image(path, 32, WP).std() > 20
    double = tmp_path / "double.tif"
    double.write_bytes(tiff_bytes(texture().astype(np.float64), sample_format=3))
    assert (
        ingest_says(double)
        == predict_says(double)
        == "unsupported image format (TIFF with 64-bit float samples in 1 channels)"
    )


def test_bigtiff_is_refused_by_both(tmp_path):
    path = tmp_path / "big.tif"
    path.write_bytes(b"II+\0\x08\0\0\0" + b"\0" * 200)
    assert ingest_says(path) == predict_says(path) == "unsupported image format (BigTIFF)"


# ------------------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_and_tiff_orientation_is_applied_as_pillow_does(tmp_path, fmt, orientation):
    # Was: a rotated JPEG was scored and overlaid sideways (correlation 0.15 with the upright image).
    im = Image.fromarray(texture())
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated.{fmt.lower()}"
    if fmt == "TIFF":
        im.save(path, format=fmt, tiffinfo={274: orientation})
    else:
        im.save(path, format=fmt, exif=exif.tobytes(), quality=95)
    # From bytes: opened from a path, Pillow's libtiff loader turns a TIFF itself and then exif_transpose does not.
    with Image.open(io.BytesIO(path.read_bytes())) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored), dtype=np.float32)
    ours = read_grayscale(path, (0.0, 100.0))
    assert ours.shape == upright.shape
    assert np.corrcoef(ours.ravel(), upright.ravel())[0, 1] > 0.98


# ------------------------------------------------------------------------------------------------------ DICOM
def dicom(arr: np.ndarray | None = None, photometric: str = "MONOCHROME2", bits_stored: int | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    if arr is not None:
        ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    return ds


def save(ds: Dataset, path: Path, preamble: bytes | None = None) -> Path:
    if preamble is not None:
        ds.preamble = preamble.ljust(128, b"\0")
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dual_personality_dicom_is_a_dicom_everywhere(tmp_path):
    # Was: a TIFF header in the 128-byte preamble made ingest quarantine it as a corrupt TIFF; predict scored it.
    path = save(dicom(texture()), tmp_path / "dual.dcm", preamble=b"II*\0\x08\0\0\0")
    assert path.read_bytes()[:4] == b"II*\0"
    assert read_image_header(path).format == "dicom"
    assert ingest_says(path) == predict_says(path) == "usable"


def test_extensionless_dicom_is_usable_and_gets_a_batch_row(tmp_path):
    from fracture.serving.predict import list_inputs

    folder = tmp_path / "pacs"
    folder.mkdir()
    path = save(dicom(texture()), folder / "IM000001")
    (folder / "notes.txt").write_text("not an image")
    assert ingest_says(path) == predict_says(path) == "usable"
    assert sorted(p.name for p in list_inputs(folder)) == ["IM000001", "notes.txt"]  # every file gets a row
    assert predict_says(folder / "notes.txt") == ingest_says(folder / "notes.txt") == "not an image (text file)"


def _jpeg_frame(precision: int, h: int = 16, w: int = 16) -> bytes:
    """SOI, SOF1 (extended sequential) with the given precision, an empty scan, EOI: the markers PS3.5 A.4 names."""
    sof = b"\xff\xc1" + struct.pack(">HBHHB", 11, precision, h, w, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 8 + b"\xff\xd9"


def test_12bit_jpeg_extended_dicom_names_the_missing_plugin_in_both(tmp_path):
    # Was: ingest accepted it; preprocess then failed with "corrupt pixel data" and pydicom printed a traceback.
    if decoder_problem(str(JPEGExtended12Bit), 12, 1) is None:
        pytest.skip("a 12-bit JPEG decoder (pylibjpeg-libjpeg or gdcm) is installed here")
    ds = dicom(np.zeros((16, 16), np.uint16), bits_stored=12)
    ds.PixelData = encapsulate([_jpeg_frame(12)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    path = save(ds, tmp_path / "ext12.dcm")
    reason = ingest_says(path)
    assert reason == predict_says(path)
    assert reason.startswith("unsupported DICOM") and "12-bit" in reason and "pylibjpeg" in reason


@pytest.mark.parametrize("kind", ["multi-frame", "1-bit", "32-bit"])
def test_unusual_dicom_layouts_get_one_answer(tmp_path, kind):
    # Was: quarantined by ingest but scored by predict.
    if kind == "multi-frame":
        ds = dicom(np.stack([texture()] * 3))
    elif kind == "32-bit":
        ds = dicom(texture())
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
        ds.PixelData = (texture().astype("<u4") * 100_000).tobytes()
    else:
        ds = dicom(texture())
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        ds.PixelData = np.packbits(texture() > 100, bitorder="little").tobytes()
    path = save(ds, tmp_path / f"{kind}.dcm")
    reason = ingest_says(path)
    assert reason.startswith("unsupported DICOM") and reason == predict_says(path)


def test_palette_colour_dicom_goes_through_its_colour_table(tmp_path):
    # Was: the raw indices were windowed as grey levels, ignoring the table (here: an inverting grey table).
    idx = texture()
    ds = dicom(idx, photometric="PALETTE COLOR")
    lut = ((255 - np.arange(256)) * 257).astype("<u2").tobytes()  # index i -> grey 255 - i, 16-bit entries
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut)
    path = save(ds, tmp_path / "palette.dcm")
    assert ingest_says(path) == "usable"
    img = read_grayscale(path, (0.0, 100.0))
    assert np.corrcoef(img.ravel(), idx.ravel().astype(np.float32))[0, 1] < -0.99


def test_pydicom_decoder_failure_prints_no_traceback(tmp_path):
    # A JPEG Baseline DICOM whose frame is garbage: pydicom's Pillow plugin fails and logs it with a traceback.
    ds = dicom(np.zeros((16, 16), np.uint8))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb garbage, not a JPEG scan \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "MONOCHROME2"
    path = save(ds, tmp_path / "garbage.dcm")
    code = (
        "import sys; from fracture.base.logs import setup_logging; setup_logging(False)\n"
        "from fracture.images.decode import read_grayscale\n"
        f"try: read_grayscale({str(path)!r}, (0.5, 99.5))\n"
        "except Exception as err: print(err)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr
    assert "corrupt DICOM pixel data" in run.stdout and len(run.stdout.strip().splitlines()) == 1


def test_plain_uncompressed_dicom_has_no_decoder_problem():
    assert decoder_problem(str(ExplicitVRLittleEndian), 16, 1) is None
