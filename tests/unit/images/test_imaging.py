"""Image decoding: 16-bit contrast, DICOM LUTs and photometry, colour collapse, and named errors for bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEGLSLossless, SecondaryCaptureImageStorage, generate_uid

from fracture.base.errors import InputError
from fracture.images.decode import prepare_image, read_grayscale, resize_square, window_bounds

WP = (0.5, 99.5)


def two_structures_16bit(h: int = 48, w: int = 40) -> np.ndarray:
    """Background 40000 with a 'bone' at 60000 and a 'fracture line' at 52000: detail only in the upper byte range."""
    img = np.full((h, w), 40000, dtype=np.uint16)
    img[8:40, 12:28] = 60000
    img[22:25, 12:28] = 52000
    return img


def write_png(path: Path, arr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), arr)
    return path


def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", **elements: object) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    ds.set_pixel_data(arr, photometric, 12 if arr.dtype == np.uint16 else 8)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------------------- 16-bit
def test_16bit_png_keeps_contrast(tmp_path: Path) -> None:
    path = write_png(tmp_path / "wrist.png", two_structures_16bit())
    img = read_grayscale(path, WP)
    assert img.dtype == np.float32 and img.shape == (48, 40)
    assert img.min() == 0.0 and img.max() == pytest.approx(1.0)
    bone, line, background = img[10, 20], img[23, 20], img[2, 2]
    assert background < 0.05 and bone > 0.95 and 0.4 < line < 0.75  # three distinct levels
    small = prepare_image(path, 32, WP)
    assert small.dtype == np.uint8 and small.shape == (32, 32)
    assert small.std() > 60
    assert len(np.unique(small[small > 0])) >= 2  # bone and fracture line both survive the resize


def test_pil_convert_rgb_would_have_destroyed_16bit_contrast(tmp_path: Path) -> None:
    from PIL import Image

    path = write_png(tmp_path / "wrist.png", two_structures_16bit())
    with Image.open(path) as im:
        pil = np.asarray(im.convert("RGB"))[:, :, 0]
    ours = prepare_image(path, 48, WP)
    # PIL clips 16-bit values to 8 bits: every structure (40000..60000) collapses to one saturated level.
    assert len(np.unique(pil)) == 1 and pil.std() == 0
    assert len(np.unique(ours)) >= 3 and ours.std() > 60


def test_16bit_gradient_spans_full_range(tmp_path: Path) -> None:
    grad = np.tile(np.linspace(40000, 60000, 64).astype(np.uint16), (16, 1))
    img = read_grayscale(write_png(tmp_path / "g.png", grad), WP)
    assert np.all(np.diff(img[0]) >= 0) and img[0, 0] == 0.0 and img[0, -1] == pytest.approx(1.0)
    assert len(np.unique(img)) > 50


def test_fast_path_matches_reference_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = (rng.normal(30000, 6000, (300, 220)) + np.linspace(0, 20000, 220)).clip(0, 65535).astype(np.uint16)
    path = write_png(tmp_path / "noisy.png", raw)
    fast = prepare_image(path, 64, WP).astype(int)
    reference = resize_square(read_grayscale(path, WP), 64).astype(int)
    assert np.abs(fast - reference).max() <= 1


def test_constant_image_is_zeros(tmp_path: Path) -> None:
    path = write_png(tmp_path / "flat.png", np.full((20, 20), 1234, dtype=np.uint16))
    assert not read_grayscale(path, WP).any()
    assert not prepare_image(path, 16, WP).any()


def test_small_structure_on_flat_background_survives(tmp_path: Path) -> None:
    img = np.zeros((100, 100), dtype=np.uint8)
    img[50, 50] = 200  # one pixel in 10,000: inside both percentiles, min/max fallback keeps it
    out = read_grayscale(write_png(tmp_path / "dot.png", img), WP)
    assert out[50, 50] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- 8-bit and colour
def test_rgb_and_rgba_collapse_to_same_gray(tmp_path: Path) -> None:
    gray = np.zeros((30, 30), dtype=np.uint8)
    gray[5:25, 10:20] = 180
    gray[0:5] = 60
    bgr = np.dstack([gray] * 3)
    bgra = np.dstack([gray] * 3 + [np.full_like(gray, 7)])  # alpha must be ignored, not blended
    ref = read_grayscale(write_png(tmp_path / "g.png", gray), WP)
    for name, arr in (("rgb.png", bgr), ("rgba.png", bgra)):
        out = read_grayscale(write_png(tmp_path / name, arr), WP)
        assert out.shape == (30, 30)
        np.testing.assert_allclose(out, ref, atol=1 / 255)


def test_palette_png_collapses_to_gray(tmp_path: Path) -> None:
    from PIL import Image  # only to write a palette PNG, which OpenCV cannot

    gray = np.zeros((20, 24), dtype=np.uint8)
    gray[4:16, 6:18] = 200
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    out = read_grayscale(tmp_path / "p.png", WP)
    assert out.shape == (20, 24) and out[10, 10] == pytest.approx(1.0) and out[0, 0] == 0.0


def test_float_tiff_is_windowed_and_nan_safe(tmp_path: Path) -> None:
    arr = np.zeros((16, 16), dtype=np.float32)
    arr[4:12, 4:12] = 2.5e4
    arr[0, 0] = np.nan
    assert cv2.imwrite(str(tmp_path / "f.tiff"), arr)
    out = read_grayscale(tmp_path / "f.tiff", WP)
    assert np.isfinite(out).all() and out[8, 8] == pytest.approx(1.0) and out[1, 1] == 0.0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 65535), min_size=1, max_size=300),
    st.floats(0, 49.9),
    st.floats(50, 100),
)
def test_histogram_percentiles_match_numpy(values: list[int], lo: float, hi: float) -> None:
    arr = np.asarray(values, dtype=np.uint16).reshape(1, -1)
    got = window_bounds(arr, (lo, hi))
    want = tuple(float(v) for v in np.percentile(arr, (lo, hi), method="lower"))
    if want[1] > want[0]:
        assert got == want
    else:  # percentiles coincide: min/max fallback
        assert got == (float(arr.min()), float(arr.max()))


def test_jpeg_decodes(tmp_path: Path) -> None:
    gray = np.zeros((64, 48), dtype=np.uint8)
    gray[16:48, 12:36] = 220
    path = tmp_path / "x.jpg"
    assert cv2.imwrite(str(path), gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = prepare_image(path, 32, WP)
    assert out[16, 16] > 200 and out[2, 16] < 30


def test_resize_square_letterboxes_with_background(tmp_path: Path) -> None:
    img = np.ones((40, 20), dtype=np.float32)  # tall image, all bright
    out = resize_square(img, 20)
    assert out.shape == (20, 20)
    assert (out[:, 5:15] == 255).all()  # aspect kept: 10 px wide after scaling 40 -> 20
    assert (out[:, :5] == 0).all() and (out[:, 15:] == 0).all()


def test_resize_square_antialiases_downscale() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)  # 1-px checkerboard
    out = resize_square(checker, 16)
    assert np.abs(out.astype(int) - 128).max() <= 1  # averaged to mid-grey, no aliasing pattern


# ------------------------------------------------------------------------------------------------------- DICOM
def bone_phantom(h: int = 32, w: int = 32) -> tuple[np.ndarray, tuple[slice, slice]]:
    arr = np.full((h, w), 300, dtype=np.uint16)
    region = (slice(8, 24), slice(10, 22))
    arr[region] = 3000
    return arr, region


def test_monochrome1_dicom_comes_out_bone_bright(tmp_path: Path) -> None:
    arr, region = bone_phantom()
    # MONOCHROME1: high stored values display dark, so the bone is stored LOW and the background HIGH.
    stored = (4095 - arr).astype(np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", PresentationLUTShape="INVERSE")
    img = read_grayscale(path, WP)
    mask = np.zeros(img.shape, bool)
    mask[region] = True
    assert img[mask].mean() > 0.9 and img[~mask].mean() < 0.1
    out = prepare_image(path, 32, WP)
    assert out[mask].mean() > out[~mask].mean() + 200


def test_monochrome2_dicom_without_window_uses_percentiles(tmp_path: Path) -> None:
    arr, region = bone_phantom()
    img = read_grayscale(write_dicom(tmp_path / "m2.dcm", arr), WP)
    assert img[region].min() == pytest.approx(1.0) and img[0, 0] == 0.0
    no_suffix = write_dicom(tmp_path / "IM0001", arr)  # recognised by its DICM preamble
    np.testing.assert_array_equal(read_grayscale(no_suffix, WP), img)


def test_dicom_window_center_width_is_applied(tmp_path: Path) -> None:
    arr = np.tile(np.arange(0, 4000, 125, dtype=np.uint16), (4, 1))  # 0..3875 in 32 columns
    path = write_dicom(tmp_path / "w.dcm", arr, WindowCenter=1000, WindowWidth=1001)
    img = read_grayscale(path, WP)
    # LINEAR window: [c - 0.5 - (w - 1)/2, c - 0.5 + (w - 1)/2] = [499.5, 1499.5] -> [0, 1]
    expected = np.clip((arr[0].astype(float) - 499.5) / 1000.0, 0, 1)
    np.testing.assert_allclose(img[0], expected, atol=1e-5)
    assert (img[0, arr[0] >= 1500] == 1.0).all()  # saturated above the window, unlike percentile windowing


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    arr = np.tile(np.arange(0, 2048, 64, dtype=np.uint16), (4, 1))
    # Window in rescaled (modality) units: value = 2 * stored - 1000.
    path = write_dicom(tmp_path / "r.dcm", arr, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=2)
    img = read_grayscale(path, WP)
    modality = arr[0] * 2.0 - 1000
    np.testing.assert_array_equal(img[0], (modality > -0.5).astype(np.float32))


def test_dicom_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    arr = np.tile(np.arange(0, 256, 8, dtype=np.uint16), (4, 1))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new("LUTData", "US", [255 - i for i in range(256)])  # inverting: distinguishable from any window
    path = write_dicom(tmp_path / "lut.dcm", arr, VOILUTSequence=[item], WindowCenter=100, WindowWidth=50)
    img = read_grayscale(path, WP)
    np.testing.assert_allclose(img[0], (255 - arr[0]) / 255.0, atol=1e-6)


def test_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.Modality = "SR"
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"report\.dcm.*DICOM without pixel data"):
        read_grayscale(path, WP)


def test_compressed_dicom_without_plugin_names_the_plugin(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    arr, _ = bone_phantom()
    path = write_dicom(tmp_path / "jls.dcm", arr)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really jpeg-ls"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"jls\.dcm.*JPEG-LS.*pyjpegls"):
        read_grayscale(path, WP)


# ---------------------------------------------------------------------------------------------- broken files
def _png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "zero bytes"),
        ("notes.png", b"this is a text file, not a radiograph\n" * 4, "not an image"),
        ("cut.png", _png_bytes(two_structures_16bit())[:300], "PNG without IEND"),
        ("garbage.dcm", b"\x00" * 64, "DICOM"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as info:
        read_grayscale(path, WP)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        prepare_image(path, 16, WP)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(InputError, match=r"cut\.jpg.*JPEG without end-of-image marker"):
        read_grayscale(path, WP)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.png: file missing"):
        read_grayscale(tmp_path / "nope.png", WP)


def test_oversized_png_refused_from_header_before_decoding(tmp_path: Path) -> None:
    # A hand-made PNG whose header claims 50000 x 50000 but holds one row of data: refused by the header check.
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match=r"bomb\.png.*50000x50000.*limit"):
        read_grayscale(path, WP)
    with pytest.raises(InputError, match="40x40 exceed limit"):
        read_grayscale(write_png(tmp_path / "big.png", np.zeros((40, 40), np.uint8)), WP, max_pixels=1000)


# ------------------------------------------------------------------------------ PNG read straight from disk
def _full_bytes_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import fracture.images.decode as imaging

    monkeypatch.setattr(imaging, "decode_png_file", lambda *a, **k: None)


@pytest.mark.parametrize("kind", ["gray16", "rgb8"])
def test_png_from_disk_equals_the_full_bytes_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    from fracture.images.decode import decode_png_file

    rng = np.random.default_rng(0)
    arr = two_structures_16bit(300, 240) + rng.integers(0, 500, (300, 240), dtype=np.uint16)
    if kind == "rgb8":
        arr = cv2.cvtColor((arr >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    path = write_png(tmp_path / f"{kind}.png", arr)
    assert decode_png_file(path) is not None  # the disk path is taken
    fast = prepare_image(path, 32, WP), read_grayscale(path, WP)
    _full_bytes_path(monkeypatch)
    full = prepare_image(path, 32, WP), read_grayscale(path, WP)
    assert np.array_equal(fast[0], full[0]) and np.array_equal(fast[1], full[1])


def test_png_with_data_after_iend_is_refused_as_ingest_does(tmp_path: Path) -> None:
    from fracture.images.decode import decode_png_file

    path = tmp_path / "padded.png"
    path.write_bytes(_png_bytes(two_structures_16bit()) + b"\x00" * 8192)  # IEND is not in the last 4 KiB
    assert decode_png_file(path) is None  # left to the full-bytes path
    # The shared rule (fracture.images.vetting): ingest looks for IEND in the last 4 KiB, so predict refuses it too.
    with pytest.raises(InputError, match=r"padded\.png: truncated or corrupt \(PNG without IEND chunk\)"):
        prepare_image(path, 16, WP)
