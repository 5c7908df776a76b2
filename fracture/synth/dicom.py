"""The DICOM writer: 12-bit CR files (MONOCHROME1 or 2) carrying fake PHI that the PHI audits look for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fracture.synth.render import to_uint16

# Fake PHI carried by the synthetic DICOM files. PHI-audit tests grep artifacts and logs for these strings.
DICOM_PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PHI-ID-12345",
    "PatientBirthDate": "19770412",
    "OtherPatientIDs": "PHI-MRN-99887766",
    "InstitutionName": "St Synthetic General Hospital",
    "InstitutionAddress": "1 Fake Road, Springfield",
    "AccessionNumber": "ACC20240315042",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Tina",
    "StudyID": "PHISTUDY42",
    "StudyDate": "20240315",
    "ImageComments": "Jane Doe fell on outstretched hand at home",
}
SYNTH_PHI_STRINGS: tuple[str, ...] = tuple(DICOM_PHI.values())  # distinctive values only: no "Doe" (in "Does")


def _dicom_uid(seed: int, name: str):  # noqa: ANN202 - pydicom UID, imported lazily
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["fracture-synth", str(seed), name])  # deterministic from the seed


def write_dicom(path: Path, image: np.ndarray, monochrome1: bool, seed: int, index: int) -> None:
    """Write an uncompressed 12-bit CR DICOM carrying the fake PHI of `DICOM_PHI` (MONOCHROME1: inverted)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

    pixels = to_uint16(image, 0, 4095)
    if monochrome1:
        pixels = (4095 - pixels).astype(np.uint16)  # MONOCHROME1: low values display bright
    sop = _dicom_uid(seed, f"sop{index}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ComputedRadiographyImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ComputedRadiographyImageStorage, sop, "CR"
    ds.StudyInstanceUID = _dicom_uid(seed, "study")
    ds.SeriesInstanceUID = _dicom_uid(seed, f"series{index}")
    for keyword, value in DICOM_PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex, ds.PatientAge, ds.BodyPartExamined, ds.StudyTime = "F", "046Y", "WRIST", "101500"
    ds.SeriesNumber, ds.InstanceNumber = index + 1, 1
    ds.WindowCenter, ds.WindowWidth, ds.RescaleIntercept, ds.RescaleSlope = 2048, 4096, 0, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = image.shape[0], image.shape[1], 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
