import io
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.images import header as ih
from fracture.images.header import ImageRejected, Limits, read_header, read_image_header


def png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", arr)
    assert ok
    return buf.tobytes()


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def crafted_png(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR claims any size, with a tiny (invalid for that size) IDAT: only a header reader survives it."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return ih.PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def header_of(data: bytes, suffix: str = ".png", limits: Limits | None = None):
    return read_header(io.BytesIO(data), len(data), suffix, limits)[0]


def rejection(data: bytes, suffix: str = ".png", limits: Limits | None = None) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        read_header(io.BytesIO(data), len(data), suffix, limits)
    return info.value


def test_png_8bit_gray_header():
    h = header_of(png_bytes(np.zeros((20, 30), np.uint8)))
    assert (h.format, h.width, h.height, h.bit_depth, h.channels, h.colour_type) == ("png", 30, 20, 8, 1, "gray")
    assert h.decoded_bit_depth == 8


def test_png_16bit_keeps_depth():
    h = header_of(png_bytes(np.full((16, 12), 40000, np.uint16)))
    assert (h.width, h.height, h.bit_depth, h.decoded_bit_depth) == (12, 16, 16, 16)


def test_png_rgb_channels():
    h = header_of(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    assert (h.channels, h.colour_type) == (3, "rgb")


def test_jpeg_header():
    h = header_of(jpeg_bytes(np.zeros((24, 40), np.uint8)), ".jpg")
    assert (h.format, h.width, h.height, h.bit_depth, h.channels) == ("jpeg", 40, 24, 8, 1)


def test_jpeg_colour_header():
    h = header_of(jpeg_bytes(np.zeros((9, 11, 3), np.uint8)), ".jpg")
    assert (h.width, h.height, h.channels, h.colour_type) == (11, 9, 3, "ycbcr")


def test_tiff_16bit_header():
    ok, buf = cv2.imencode(".tiff", np.full((14, 18), 1000, np.uint16))
    assert ok
    h = header_of(buf.tobytes(), ".tif")
    assert (h.format, h.width, h.height, h.bit_depth) == ("tiff", 18, 14, 16)


def crafted_tiff(width: int, height: int, strip_bytes: int, data_bytes: int) -> bytes:
    """Little-endian TIFF with its IFD first and one strip of `strip_bytes`, of which `data_bytes` are present."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 1), (262, 3, 1, 1)]
    n = len(entries) + 2
    data_offset = 8 + 2 + 12 * n + 4
    entries += [(273, 4, 1, data_offset), (279, 4, 1, strip_bytes)]
    ifd = struct.pack("<H", n) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x7f" * data_bytes


def test_tiff_strip_beyond_end_of_file_is_truncated():
    assert header_of(crafted_tiff(16, 16, 256, 256), ".tif").width == 16
    err = rejection(crafted_tiff(16, 16, 256, 100), ".tif")
    assert err.code == ih.TRUNCATED and "beyond the end" in err.reason


def test_tiff_cut_before_its_directory_is_truncated():
    ok, buf = cv2.imencode(".tiff", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    assert rejection(buf.tobytes()[:-100], ".tif").code == ih.TRUNCATED


def test_zero_bytes():
    assert rejection(b"").code == ih.ZERO_BYTES


def test_text_named_png_is_not_an_image():
    err = rejection(b"this is a note, not a radiograph\n")
    assert err.code == ih.NOT_IMAGE
    assert err.reason == "not an image (text file)"


def test_random_bytes_are_not_an_image():
    assert rejection(bytes(range(256)) * 4).code == ih.NOT_IMAGE


def test_gif_is_unsupported():
    err = rejection(b"GIF89a" + b"\x00" * 40, ".gif")
    assert err.code == ih.UNSUPPORTED_FORMAT and "GIF" in err.reason


def test_truncated_png_is_detected_without_decoding():
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    err = rejection(data[:-30])
    assert err.code == ih.TRUNCATED and "IEND" in err.reason


def test_png_with_bad_header_checksum():
    data = bytearray(png_bytes(np.zeros((10, 10), np.uint8)))
    data[20] ^= 0xFF  # inside IHDR's height
    assert rejection(bytes(data)).code == ih.TRUNCATED


def test_truncated_jpeg_is_detected():
    data = jpeg_bytes(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8))
    err = rejection(data[:-50], ".jpg")
    assert err.code == ih.TRUNCATED and "end-of-image" in err.reason


def test_jpeg_cut_inside_headers():
    data = jpeg_bytes(np.zeros((32, 32), np.uint8))
    assert rejection(data[:30], ".jpg").code == ih.TRUNCATED


def test_decompression_bomb_refused_from_header(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("ingest must not decode pixels")

    monkeypatch.setattr(cv2, "imread", no_decoding)
    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    data = crafted_png(100_000, 100_000)
    start = time.perf_counter()
    err = rejection(data)
    assert time.perf_counter() - start < 0.5
    assert err.code == ih.TOO_LARGE
    assert err.reason.startswith("dimensions 100000x100000 exceed limit")


def test_limits_from_params_apply():
    data = png_bytes(np.zeros((20, 30), np.uint8))
    assert rejection(data, limits=Limits(max_pixels=500)).code == ih.TOO_LARGE
    assert rejection(data, limits=Limits(max_side=25)).reason.startswith("dimensions 30x20 exceed limit")
    assert header_of(data, limits=Limits(max_pixels=600, max_side=30, min_side=20)).width == 30


def test_one_pixel_image_is_too_small():
    err = rejection(png_bytes(np.zeros((1, 1), np.uint8)))
    assert err.code == ih.TOO_SMALL
    assert err.reason.startswith("image too small (1x1")


def test_crafted_png_within_limits_is_accepted_from_header():
    h = header_of(crafted_png(64, 48, depth=16))
    assert (h.width, h.height, h.bit_depth) == (64, 48, 16)


def test_invalid_png_depth_for_colour_type():
    assert rejection(crafted_png(64, 64, depth=4, colour=2)).code == ih.TRUNCATED


def test_read_image_header_from_disk(tmp_path: Path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((12, 9), np.uint16))
    h = read_image_header(path)
    assert (h.width, h.height, h.bit_depth) == (9, 12, 16)
    with pytest.raises(ImageRejected) as info:
        read_image_header(tmp_path / "missing.png")
    assert info.value.code == ih.FILE_MISSING


def test_rejection_is_an_input_error():
    from fracture.base.errors import InputError

    assert issubclass(ImageRejected, InputError)


def test_raster_dims_reads_png_and_jpeg_headers_only() -> None:
    import cv2
    import numpy as np

    from fracture.images.header import raster_dims

    img = np.zeros((7, 11), np.uint8)
    png = cv2.imencode(".png", img)[1].tobytes()
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    assert raster_dims(png[:64]) == (11, 7)  # the header alone is enough
    assert raster_dims(jpg) == (11, 7)
    assert raster_dims(b"II*\x00" + bytes(200)) is None  # not PNG/JPEG: the decoder decides
    broken = bytearray(png)
    broken[20] ^= 0xFF  # IHDR no longer matches its CRC
    assert raster_dims(bytes(broken)) == (0, 0)


def test_first_line_is_the_first_line() -> None:
    from fracture.base.errors import first_line

    assert first_line(ValueError("cannot decode\n  at frame 2\n")) == "cannot decode"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
