"""DICOM display rules beyond pydicom's defaults: odd Modality LUT descriptors, VOI LUT depth, presentation inversion.

Each rule decides a case the standard leaves open or pydicom refuses, and is written once here for the decoder
(fracture.images.decode): README, "What is a usable radiograph".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fracture.base.errors import InputError
from fracture.images.header import UNSUPPORTED_DICOM

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)


def displayed_inverted(ds: Dataset) -> bool:
    """Whether bone is dark as stored, so the windowed image is inverted once (PS3.3 C.7.6.3.1.2, C.11.6).

    MONOCHROME1 is inverted; its Presentation LUT Shape INVERSE describes that same inversion and is not applied
    again (it would flip bone back to dark). On MONOCHROME2, INVERSE asks for white-is-zero display and is applied.
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    return photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and inverse)


def modality_values(path: Path, ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Modality LUT Sequence or Rescale Slope / Intercept applied (PS3.3 C.11.1).

    A Modality LUT's entries of 9 to 15 bits (e.g. a 12-bit descriptor) are stored in 16-bit words, and those of
    fewer than 8 bits in bytes, so the descriptor's bit count is read as 16 or 8: pydicom accepts only 8 and 16.

    Raises:
        InputError: the LUT cannot be applied (the reason names it, never a header value).
    """
    from pydicom.pixels import apply_modality_lut

    seq = ds.get("ModalityLUTSequence")
    try:
        if seq and int(seq[0].LUTDescriptor[2]) not in (8, 16):
            item = seq[0]  # this call's own Dataset, read from the file's bytes
            item.LUTDescriptor = [*item.LUTDescriptor[:2], 16 if int(item.LUTDescriptor[2]) > 8 else 8]
        return apply_modality_lut(arr, ds)
    except Exception as err:  # malformed LUTs raise many types; all mean "cannot apply"
        raise InputError(
            f"{path}: {UNSUPPORTED_DICOM} (Modality LUT cannot be applied: {type(err).__name__})"
        ) from None


def voi_lut_depth(path: Path, ds: Dataset) -> int:
    """Bits of the first VOI LUT's output: its descriptor's, or fewer when its largest entry needs fewer (as DCMTK).

    A LUT declaring 16 bits whose entries stop at 4095 is a 12-bit LUT: scaled by 2**16 it would keep 1/16 of the
    contrast.
    """
    from pydicom.pixels import apply_voi

    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    declared, entries, first = int(descriptor[2]), int(descriptor[0]) or 65536, int(descriptor[1])
    top = int(np.max(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds)))  # the LUT's largest entry
    depth = min(declared, max(8, top.bit_length()))
    if depth < declared:
        log.warning("%s: VOI LUT declares %d-bit entries but its largest needs %d bits; read as %d-bit", path,
                    declared, top.bit_length(), depth)  # fmt: skip
    return depth
