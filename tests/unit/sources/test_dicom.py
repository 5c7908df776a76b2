import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fracture.base.errors import InputError
from fracture.images import header as ih
from fracture.images.header import ImageRejected, read_header
from fracture.sources.dicom import age_from_dates, dicom_age, extract_identity, parse_da
from fracture.sources.privacy import KEY_ENV, pseudonym_key, pseudonymise

KEY = b"unit-test-key"

# Distinctive fake PHI: every value must be findable by a byte grep and never occur by chance.
PHI = {
    "PatientName": "Zyxwvut^Qponmlk",
    "PatientID": "PID-7731-QQZX",
    "PatientBirthDate": "19870314",
    "InstitutionName": "Saint Phixtestia Clinic",
    "InstitutionAddress": "12 Phiroad Testtown",
    "AccessionNumber": "ACCN99887766",
    "ReferringPhysicianName": "Drphi^Referrer",
    "PerformingPhysicianName": "Drphi^Performer",
    "OperatorsName": "Opphi^Tech",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.777111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.777222",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.777333",
    "StudyDescription": "WRIST LEFT Phifreetext findings",
    "ImageComments": "Phicomment patient fell off a bike",
    "StudyID": "STUDYPHI42",
    "OtherPatientIDs": "OTHERPHI-5544",
}


def make_dicom(
    path: Path | None = None,
    *,
    rows: int = 32,
    cols: int = 24,
    bits: int = 16,
    photometric: str = "MONOCHROME1",
    pixels: bool = True,
    age: str = "034Y",
    sex: str = "F",
    implicit: bool = False,
    phi: dict[str, str] | None = None,
    frames: int | None = None,
) -> bytes:
    """A small DICOM file (with fake PHI) as bytes; written to `path` when given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = (phi or PHI)["SOPInstanceUID"]
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in (phi or PHI).items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "DX"
    ds.StudyDate = "20210601"
    if age:
        ds.PatientAge = age
    if sex:
        ds.PatientSex = sex
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames:
        ds.NumberOfFrames = frames
    if pixels:
        dtype = np.uint16 if bits == 16 else np.uint8
        ds.PixelData = (np.arange(rows * cols * (frames or 1)) % 4000).astype(dtype).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def header_and_ds(data: bytes, suffix: str = ".dcm"):
    return read_header(io.BytesIO(data), len(data), suffix)


def rejection(data: bytes, suffix: str = ".dcm") -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        header_and_ds(data, suffix)
    return info.value


def test_monochrome1_header_dimensions_and_depth():
    header, ds = header_and_ds(make_dicom(rows=32, cols=24))
    assert (header.format, header.width, header.height) == ("dicom", 24, 32)
    assert header.colour_type == "MONOCHROME1"
    assert header.bit_depth == 12 and header.decoded_bit_depth == 16
    assert "PixelData" not in ds  # header only


def test_dicom_without_suffix_is_sniffed_and_implicit_vr_works():
    header, _ = header_and_ds(make_dicom(implicit=True, bits=8, photometric="MONOCHROME2"), suffix="")
    assert (header.format, header.decoded_bit_depth) == ("dicom", 8)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 128 + b"DICM" + b"\xff" * 64,
        b"\x00" * 128
        + b"DICM"
        + b"\x02\x00\x10\x00UI\x04\x001.2\x00"
        + b"\x08\x00\x20\x00DA\x08\x0020200101"
        + b"\xff" * 10,
    ],
)
def test_unreadable_dicom_reason_has_no_detail(data):
    err = rejection(data)
    assert err.code == ih.UNREADABLE_DICOM
    assert err.reason == "unreadable DICOM"


def test_dcm_without_dicm_prefix_is_unreadable():
    assert rejection(b"garbage that claims to be DICOM" * 10).code == ih.UNREADABLE_DICOM


def test_dicom_without_pixel_data():
    assert rejection(make_dicom(pixels=False)).code == ih.NO_PIXEL_DATA


def test_truncated_dicom_pixel_data():
    data = make_dicom(rows=64, cols=64)
    err = rejection(data[:-1000])
    assert err.code == ih.TRUNCATED


def test_multiframe_is_unsupported():
    err = rejection(make_dicom(frames=3))
    assert err.code == ih.UNSUPPORTED_DICOM and "multi-frame" in err.reason


def test_dicom_dimension_limits_apply():
    data = make_dicom(rows=4, cols=4)
    with pytest.raises(ImageRejected) as info:
        read_header(io.BytesIO(data), len(data), ".dcm", ih.Limits(min_side=8))
    assert info.value.code == ih.TOO_SMALL


def test_identity_is_pseudonymised_and_phi_free():
    _, ds = header_and_ds(make_dicom(age="034Y", sex="F"))
    ident = extract_identity(ds, KEY)
    assert ident.patient_id == pseudonymise(PHI["PatientID"], "hospital", KEY)
    assert ident.study_id == pseudonymise("study:" + PHI["StudyInstanceUID"], "hospital", KEY)
    assert (ident.age, ident.sex) == (34.0, "F")
    flat = repr(ident)
    for value in PHI.values():
        assert value not in flat


def test_identity_without_key_has_no_ids():
    _, ds = header_and_ds(make_dicom())
    ident = extract_identity(ds, None)
    assert ident.patient_id is None and ident.study_id is None


def test_age_from_birth_and_study_date_when_patient_age_missing():
    _, ds = header_and_ds(make_dicom(age=""))
    # born 1987-03-14, study 2021-06-01 -> 34 completed years
    assert extract_identity(ds, KEY).age == 34.0


@pytest.mark.parametrize(
    ("patient_age", "birth", "dates", "expected"),
    [
        ("034Y", "", [], 34.0),
        ("006M", "", [], 0.5),
        ("003D", "", [], 0.01),
        ("095Y", "", [], 90.0),  # ages above 89 are aggregated
        ("", "20000601", ["20210531"], 20.0),
        ("", "20000601", ["", "20210601"], 21.0),
        ("", "bad", ["20210601"], None),
        ("", "20210601", ["20000101"], None),
        ("abc", "", [], None),
    ],
)
def test_dicom_age(patient_age, birth, dates, expected):
    assert dicom_age(patient_age, birth, dates) == expected


def test_parse_da_and_age_from_dates():
    assert parse_da("1987.03.14").isoformat() == "1987-03-14"
    assert parse_da("19870230") is None
    assert age_from_dates("19870314", "20210313") == 33.0


def test_malformed_phi_values_raise_no_warnings_with_phi(caplog):
    phi = {**PHI, "PatientBirthDate": "19A7-BADDATE"}  # invalid DA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while writing the fixture; only reading is under test
        data = make_dicom(phi=phi, age="")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, ds = header_and_ds(data)
        ident = extract_identity(ds, KEY)
    assert ident.age is None
    text = caplog.text + " ".join(str(w.message) for w in caught)
    assert "19A7-BADDATE" not in text


# ---------------------------------------------------------------- privacy


def test_pseudonymise_format_and_keying():
    a = pseudonymise("P1", "hospital", b"k1")
    assert a.startswith("hospital:") and len(a) == len("hospital:") + 16
    assert a == pseudonymise("P1", "hospital", b"k1")
    assert a != pseudonymise("P1", "hospital", b"k2")
    assert a != pseudonymise("P2", "hospital", b"k1")
    assert "P1" not in a


def test_pseudonymise_reads_key_from_environment(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "env-key")
    assert pseudonymise("P1", "hospital") == pseudonymise("P1", "hospital", b"env-key")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_is_refused(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(InputError, match=KEY_ENV):
        pseudonym_key()
    with pytest.raises(InputError, match=KEY_ENV):
        pseudonymise("P1", "hospital")


def test_malformed_identity_values_are_counted_by_keyword_not_quoted() -> None:
    from fracture.sources.dicom import extract_identity

    class Header:
        def get(self, keyword, default=None):  # noqa: ANN001, ANN202
            if keyword in ("PatientAge", "PatientSex"):
                raise ValueError("bad value 'SMITH^JOHN'")
            return {"PatientID": "12345", "StudyInstanceUID": "1.2.3"}.get(keyword, default)

    ident = extract_identity(Header(), b"k" * 32)
    assert ident.unreadable == ("PatientAge", "PatientSex")
    assert ident.sex is None and ident.patient_id is not None
    assert "SMITH" not in repr(ident)
