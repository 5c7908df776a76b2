"""PHI and credentials audit over the whole demo DAG.

Synthetic raw data (whose DICOMs carry fake PHI) plus DICOMs of our own with distinctive PHI, also in nested
sequences and a private tag, go through synth -> ingest -> validate -> split -> preprocess -> train -> evaluate ->
explain -> report -> register, and the pipeline is compiled, all through the CLI with debug logging and with
planted S3 / MLflow credentials in the environment. Then every byte of every output (artifact dirs, the MLflow
sqlite store, the MLflow artifact dir, the registered model, the compiled pipeline) and every captured log line
is searched for every PHI value (case-insensitive, dates also in the usual spellings) and every planted secret.
Only the raw input tree is exempt: it is the input.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from fracture.config import dump_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Our own patient, with values no code or random byte sequence produces by chance.
OWN_PHI = {
    "PatientName": "Quixbert^Zeltrude^Amarantha",
    "PatientID": "MRN-QZ-40917733",
    "PatientBirthDate": "19510323",
    "PatientAddress": "77 Xylophone Crescent, Quimperton",
    "PatientTelephoneNumbers": "+44-7700-900461",
    "OtherPatientIDs": "NHS-9434765919",
    "InstitutionName": "Quimperton Royal Infirmary",
    "InstitutionAddress": "1 Infirmary Lane, Quimperton",
    "StationName": "QRI-XRAY-ROOM3",
    "AccessionNumber": "QRIACC55120987",
    "ReferringPhysicianName": "Vanderzwaag^Ophelia",
    "PerformingPhysicianName": "Kowalczykowna^Berenike",
    "OperatorsName": "Radtech^Wilhelmina",
    "StudyID": "QRISTUDY8841",
    "StudyDate": "20230817",
    "SeriesDate": "20230817",
    "AcquisitionDate": "20230817",
    "StudyDescription": "XR WRIST LT Quixbert fall from ladder",
    "SeriesDescription": "PA and lateral Quimperton protocol",
    "ImageComments": "Pt Zeltrude Quixbert, query scaphoid, seen by Dr Vanderzwaag",
    "PatientComments": "Allergic to penicillin, lives alone in Quimperton",
    "DeviceSerialNumber": "SN-QRI-0098127",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.90417733.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.90417733.2",
}
# Element keywords whose values are identifying (DICOM PS3.15 Annex E, Basic Profile); collected from every input DICOM.
PHI_KEYWORDS = frozenset(OWN_PHI) | {"SOPInstanceUID", "MediaStorageSOPInstanceUID", "RequestedProcedureDescription",
                                     "ScheduledProcedureStepID", "ContentDate", "FrameOfReferenceUID"}  # fmt: skip
PRIVATE_PHI = "Zeltrude-private-note-QRI"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDQZ7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "pLanted/Secret+Value/QZ7wJalrXUtnFEMIK7MDENG",
    "MLFLOW_TRACKING_TOKEN": "planted-mlflow-token-qz7-4f1d9e2b",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-qz7",
}
SHORT = 8  # tokens shorter than this are searched as whole words in text only (random bytes would match them)


def write_phi_dicom(path: Path, pixels: np.ndarray, index: int) -> None:
    """An uncompressed 12-bit DX DICOM carrying OWN_PHI, a PHI-laden nested sequence and a private tag."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop = f"1.2.826.0.1.3680043.8.498.90417733.3.{index}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, sop, "DX"
    for keyword, value in OWN_PHI.items():
        setattr(ds, keyword, value)
    request = Dataset()
    request.RequestedProcedureDescription = "Quixbert wrist query fracture"
    request.ScheduledProcedureStepID = "QRISPS7731"
    ds.RequestAttributesSequence = [request]
    block = ds.private_block(0x0011, "QRI PRIVATE", create=True)
    block.add_new(0x01, "LO", PRIVATE_PHI)
    ds.PatientSex, ds.PatientAge = "F", "072Y"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = *pixels.shape, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (pixels.astype(np.uint32) * 4095 // max(int(pixels.max()), 1)).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def add_own_dicoms(hospital: Path) -> None:
    """Four DICOMs of our patient in the hospital tree, with the pixels of synthetic PNGs of the same label."""
    import cv2

    for label in ("positive", "negative"):
        pngs = sorted((hospital / "radius" / label).rglob("*.png"))[:2]
        for i, png in enumerate(pngs):
            pixels = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            write_phi_dicom(
                hospital / "radius" / label / f"IMG{i:04d}.dcm", pixels, i + (10 if label == "negative" else 0)
            )


def dicom_phi_values(raw: Path) -> set[str]:
    """Every identifying value in every input DICOM (top level, sequences, private tags) and hospital patient ids."""
    import pydicom

    values: set[str] = set()
    for path in raw.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for elem in [*ds.file_meta.iterall(), *ds.iterall()]:
            if (elem.keyword in PHI_KEYWORDS or elem.tag.is_private) and elem.VR not in ("SQ", "OB", "OW", "UN"):
                parts = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
                values.update(str(v).strip() for v in parts if len(str(v).strip()) >= 4)
    metadata = pd.read_csv(raw / "hospital" / "metadata.csv", dtype=str, keep_default_na=False)
    values.update(v for v in metadata["patient_id"] if v)
    return values


def spellings(value: str) -> set[str]:
    """The value, a DA date in its common human spellings, and our own names' parts (distinctive words)."""
    out = {value}
    if "^" in value and value in OWN_PHI.values():
        out.update(p for p in value.split("^") if p)
        out.add(" ".join(reversed(value.split("^"))))
    if re.fullmatch(r"(19|20)\d{6}", value):
        y, m, d = value[:4], value[4:6], value[6:]
        out.update({f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{y}/{m}/{d}"})
    return out


def phi_tokens(raw: Path) -> set[str]:
    from fracture.synth.dicom import SYNTH_PHI_STRINGS

    values = dicom_phi_values(raw) | set(SYNTH_PHI_STRINGS) | set(OWN_PHI.values()) | {PRIVATE_PHI}
    assert {OWN_PHI["PatientName"], PRIVATE_PHI, "Quixbert wrist query fracture"} <= values  # the reader saw them
    return {t.lower() for v in values for t in spellings(v) if len(t) >= 3}


# --------------------------------------------------------------------------------------------- text projections
def projections(path: Path) -> list[tuple[str, bytes, bool]]:
    """(label, bytes, is_text) views of a file: its bytes, plus decoded views of containers that can hide text."""
    data = path.read_bytes()
    views = [(str(path), data, _is_text(data))]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        meta = b" ".join(k + b"=" + v for k, v in (table.schema.metadata or {}).items())
        views.append((f"{path} (rows)", table.to_pandas().to_csv().encode() + meta, True))
    elif path.suffix in (".db", ".sqlite"):
        views.append((f"{path} (rows)", _sqlite_text(path), True))
    elif zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            views += [(f"{path}!{n}", zf.read(n), _is_text(zf.read(n))) for n in zf.namelist()]
    return views


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data


def _sqlite_text(path: Path) -> bytes:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"')]  # noqa: S608
    finally:
        con.close()
    return "\n".join(rows).encode("utf-8", "replace")


def find_leaks(views: list[tuple[str, bytes, bool]], tokens: set[str], secrets: set[str]) -> list[str]:
    leaks = []
    for label, data, is_text in views:
        low = data.lower()
        for token in tokens:
            needle = token.encode()
            if len(token) >= SHORT:
                hit = needle in low
            else:
                hit = is_text and re.search(rb"(?<![a-z0-9])" + re.escape(needle) + rb"(?![a-z0-9])", low)
            if hit:
                leaks.append(f"PHI {token!r} in {label}")
        leaks += [f"secret {s[:6]}... in {label}" for s in secrets if s.encode() in data]
    return leaks


# --------------------------------------------------------------------------------------------------- the DAG
# One Python process runs a list of CLI invocations, so every byte it writes to stdout/stderr (our logs at DEBUG,
# MLflow's and other libraries' own handlers, worker processes) is captured.
DRIVER = """
import json, sys
from fracture.cli import app
for args in json.loads(sys.argv[1]):
    code = app(["-v", *args, "--params", "params.yaml"], standalone_mode=False)
    if code:
        sys.exit(f"{args[0]} exited {code}")
"""


def run_steps(work: Path, env: dict[str, str], *steps: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(steps)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def audited(tmp_path_factory, make_params) -> dict:
    """Run the whole DAG through the CLI in a fresh dir; return the dir, the raw tree and the captured logs."""
    work = tmp_path_factory.mktemp("phi_audit")
    env = {**os.environ, **SECRETS, "FRACTURE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"  # its artifact root ./mlruns lands in `work` too
    params = make_params({
        "base": {"num_workers": 1},
        "synth": {"n_per_source": 16, "min_side": 48, "max_side": 64},
        "train": {"epochs": 1, "batch_size": 16},
        "evaluate": {"n_bootstrap": 20, "min_subgroup_n": 5},
        "explain": {"n_per_category": 1},
    })  # fmt: skip
    dump_params(params, work / "params.yaml")
    logs = [run_steps(work, env, ["synth", "--out", "raw"])]
    add_own_dicoms(work / "raw" / "hospital")
    manifest, splits = "ingest/manifest.parquet", "split/splits.parquet"
    logs.append(
        run_steps(
            work,
            env,
            [
                "ingest",
                "--kaggle",
                "raw/GRAZPEDWRI-DX",
                "--mura",
                "raw/MURA-v1.1",
                "--hospital",
                "raw/hospital",
                "--out",
                "ingest",
            ],
            ["validate", "--manifest", manifest, "--out", "validation"],
            ["split", "--manifest", manifest, "--out", splits],
            ["preprocess", "--manifest", manifest, "--out", "cache"],
            ["train", "--manifest", manifest, "--splits", splits, "--cache", "cache", "--out", "model"],
            [
                "evaluate",
                "--model",
                "model",
                "--manifest",
                manifest,
                "--splits",
                splits,
                "--cache",
                "cache",
                "--out",
                "eval",
            ],
            ["explain", "--model", "model", "--eval", "eval", "--cache", "cache", "--out", "explain"],
            [
                "report",
                "--out",
                "report/report.html",
                "--ingest-dir",
                "ingest",
                "--validation",
                "validation",
                "--splits",
                splits,
                "--model",
                "model",
                "--eval",
                "eval",
                "--explain",
                "explain",
            ],
            [
                "register",
                "--model",
                "model",
                "--eval",
                "eval",
                "--report",
                "report/report.html",
                "--force",
                "--reason",
                "PHI audit of a one-epoch model",
                "--out",
                "register/record.json",
            ],
            ["pipeline", "compile", "--out", "pipeline/training_pipeline.yaml"],
        )  # fmt: skip
    )
    (work / "captured.log").write_text("\n".join(logs))  # kept for a look when this test fails
    return {"work": work, "raw": work / "raw", "logs": logs}


def test_the_audit_reaches_every_stage_and_reads_the_phi(audited):
    work = audited["work"]
    manifest = pd.read_parquet(work / "ingest" / "manifest.parquet")
    own = manifest[manifest["path"].str.endswith(".dcm") & manifest["path"].str.contains("IMG")]
    assert len(own) == 4, "our DICOMs were not accepted, so their PHI was never read"
    assert own["patient_id"].nunique() == 1 and own["patient_id"].iloc[0].startswith("hospital:")
    assert own["age"].eq(72).all() and own["sex"].eq("F").all()  # derived values survive, identifiers do not
    for artefact in ("model/model.pt", "eval/metrics.json", "explain/index.json", "report/report.html",
                     "register/record.json", "pipeline/training_pipeline.yaml", "mlflow.db"):  # fmt: skip
        assert (work / artefact).is_file(), artefact
    assert any((work / "mlruns").rglob("MLmodel")), "the registered model's artifacts are not in the audited tree"


def test_no_phi_or_credential_in_any_output_log_or_mlflow_record(audited):
    work, raw = audited["work"], audited["raw"]
    tokens = phi_tokens(raw)
    secrets = set(SECRETS.values())
    files = [p for p in work.rglob("*") if p.is_file() and raw not in p.parents]
    assert len(files) > 50
    views = [view for path in files for view in projections(path)]
    logs = "\n".join(audited["logs"])
    views.append(("captured logs", logs.encode(), True))
    assert "INFO fracture.ingest" in logs and "registered fracture-swin" in logs and "INFO mlflow." in logs
    leaks = find_leaks(views, tokens, secrets)
    assert not leaks, "\n".join(sorted(set(leaks)))


def test_the_search_finds_what_it_is_looking_for(audited):
    # Positive control: the same search over the raw tree finds the PHI, also inside a parquet and sqlite view.
    tokens = phi_tokens(audited["raw"])
    dicom = next((audited["raw"] / "hospital" / "radius" / "positive").glob("IMG*.dcm"))
    assert find_leaks(projections(dicom), tokens, set())
    probe = audited["work"] / "probe.parquet"
    pd.DataFrame({"note": ["seen by Dr vanderzwaag"], "when": ["17.08.2023"]}).to_parquet(probe, compression="gzip")
    leaks = find_leaks(projections(probe), tokens, set())
    probe.unlink()
    assert any("vanderzwaag" in leak for leak in leaks) and any("17.08.2023" in leak for leak in leaks)
    assert find_leaks([("log", b"user AKIAPLANTEDQZ7EXAMPLE", True)], set(), set(SECRETS.values()))
    assert yaml.safe_load((audited["work"] / "params.yaml").read_text())["train"]["epochs"] == 1
