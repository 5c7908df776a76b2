"""DICOM identity without PHI (DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile, in spirit).

From a header read by fracture.images.header (pydicom, `stop_before_pixels=True`) take only what the pipeline
needs: a keyed pseudonym of the patient and of the study, age in years, sex. Names, IDs, dates, institution,
accession number, physicians, UIDs and free text are never copied anywhere; the pseudonyms are HMAC-SHA256
digests whose key lives only in the environment. Ages above 89 are reported as 90 (the HIPAA safe-harbour
aggregation), and ages from dates are whole years, so a birth date cannot be recovered from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from fracture.images.header import quiet_pydicom
from fracture.sources import normalise_sex, parse_age
from fracture.sources.privacy import pseudonymise

MAX_REPORTED_AGE = 90.0
_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


@dataclass(frozen=True)
class DicomIdentity:
    """PHI-free identity fields of one DICOM file (pseudonyms, not identifiers)."""

    patient_id: str | None
    study_id: str | None
    age: float | None
    sex: str | None
    unreadable: tuple[str, ...] = ()  # keywords whose malformed values were dropped (names only, never values)


def parse_da(value: str) -> date | None:
    """A DICOM DA value (YYYYMMDD, or the old YYYY.MM.DD) as a date; None when absent or invalid."""
    text = str(value).strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def age_from_dates(birth: str, on: str) -> float | None:
    """Completed years between a birth date and an exam date (DA strings); None when either is unusable."""
    born, seen = parse_da(birth), parse_da(on)
    if born is None or seen is None or seen < born:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return float(years)


def dicom_age(patient_age: str, birth: str, exam_dates: list[str]) -> float | None:
    """Age in years from PatientAge ("034Y"), else from the birth date and the first exam date; capped at 90."""
    age = parse_age(patient_age)
    if age is None:
        exam = next((d for d in exam_dates if parse_da(d) is not None), "")
        age = age_from_dates(birth, exam)
    return None if age is None else min(age, MAX_REPORTED_AGE)


def _text(ds: Any, keyword: str, dropped: list[str]) -> str:
    """An element's value as stripped text ("" when absent or unreadable; unreadable keywords go to `dropped`)."""
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed value in an untrusted header; its message may quote PHI, so drop it
        dropped.append(keyword)
        return ""
    return "" if value is None else str(value).strip()


def extract_identity(ds: Any, key: bytes | None, namespace: str = "hospital") -> DicomIdentity:
    """Pseudonymised patient/study keys, age and sex from a DICOM header.

    Args:
        ds: pydicom Dataset (header only).
        key: pseudonymisation key; None leaves the patient and study keys empty.
        namespace: prefix of the pseudonyms.

    Returns:
        Only derived, PHI-free values; nothing from `ds` is returned verbatim except sex (M/F/O).
    """
    dropped: list[str] = []
    with quiet_pydicom():
        patient, study = _text(ds, "PatientID", dropped), _text(ds, "StudyInstanceUID", dropped)
        dates = [_text(ds, k, dropped) for k in _DATE_KEYWORDS]
        age = dicom_age(_text(ds, "PatientAge", dropped), _text(ds, "PatientBirthDate", dropped), dates)
        sex = normalise_sex(_text(ds, "PatientSex", dropped))
    return DicomIdentity(
        patient_id=pseudonymise(patient, namespace, key) if patient and key else None,
        study_id=pseudonymise(f"study:{study}", namespace, key) if study and key else None,
        age=age,
        sex=sex,
        unreadable=tuple(dropped),
    )
