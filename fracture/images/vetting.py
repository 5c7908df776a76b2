"""The one decision about what is a usable radiograph, shared by ingest, preprocess and predict.

A file is usable when its header (fracture.images.header.read_header, which never decodes a pixel) says it is:

- DICOM, recognised by `DICM` at byte 128 before any other signature (a TIFF header in the preamble does not
  make it a TIFF), or by a `.dcm` / `.dicom` / `.dic` suffix when the bytes carry no other image signature; a
  file suffix is never needed. Single frame, 8 or 16 bits allocated, 1 or 3 samples, a known photometric
  interpretation (PALETTE COLOR goes through its colour table), integer pixel data, and a transfer syntax an
  installed pydicom plugin decodes at the file's bit depth (12-bit JPEG Extended needs pylibjpeg-libjpeg or
  gdcm; Pillow decodes only 8-bit).
- PNG (any standard colour type and depth), JPEG (8-bit baseline or progressive; 12-bit only where OpenCV
  decodes it), or classic TIFF with integer samples of up to 16 bits or one 32-bit float channel, interleaved
  (PlanarConfiguration 1). BigTIFF, GIF, BMP, JPEG 2000 files, WebP, PDF are refused.
- Whole (PNG ends with IEND, JPEG with EOI, TIFF strips and DICOM pixel data fit in the file), at least
  `min_side` px on the short side, within `max_side` and `max_pixels`.

- For compressed DICOM only, the pixel data must also decode with the installed plugins: whether a JPEG 2000
  or JPEG stream decodes depends on the plugin, not on the header, so ingest decodes these once
  (`fracture.images.decode.check_compressed_dicom`). Uncompressed pixel data and raster files are judged from the
  header alone.

Ingest quarantines a file that breaks the rule with the reason; preprocess and predict call `vet_file` before
decoding and refuse it with the same reason, so a file is either usable everywhere or nowhere. A raster file
that passes the header check but whose entropy-coded data is corrupt can still fail at decode time
(preprocess: failures.csv; predict: an error row). EXIF / TIFF orientation is applied before anything else.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from fracture.base.errors import InputError
from fracture.images.header import FILE_MISSING, NOT_A_FILE, ImageHeader, ImageRejected, Limits, read_header


def vet_file(path: Path, limits: Limits) -> ImageHeader:
    """Apply the usable-radiograph rule to a file on disk.

    Returns:
        The file's header (its `format` tells the decoder which path to take).

    Raises:
        InputError: naming the file and the same reason ingest writes to quarantine.csv.
    """
    path = Path(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            return read_header(fp, size, path.suffix, limits)[0]
    except ImageRejected as err:
        raise InputError(f"{path}: {err.reason}") from None
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: {FILE_MISSING}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading without ever blocking on a FIFO, socket or device.

    `open()` of a FIFO waits for a writer forever (a batch predict over a folder holding one hung with 0 rows;
    each server request naming one left a thread blocked). The file is opened non-blocking and checked with
    fstat before a byte is read, so there is no window between the check and the read.

    Raises:
        ImageRejected: NOT_A_FILE for anything but a regular file or a directory.
        IsADirectoryError: a directory. OSError: the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise ImageRejected(NOT_A_FILE)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
