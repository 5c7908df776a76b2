"""Property-based fuzzing of ingest's parsers: arbitrary bytes and text never raise anything but InputError.

Bounded (about 200 examples per property, derandomised, no example database) so the file runs in seconds.
"""

import io
import posixpath
import re

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fracture.base.errors import InputError
from fracture.config import load_params
from fracture.images.header import ImageHeader, ImageRejected, Limits, read_header
from fracture.sources import Candidate, Rejected, decode_text, parse_age, parse_binary, safe_relpath
from fracture.sources.hospital import hospital_candidates, metadata_index, parse_metadata
from fracture.sources.kaggle import REQUIRED_COLUMNS, kaggle_candidates, parse_kaggle_table
from fracture.sources.mura import mura_candidates, parse_image_paths, parse_labeled_studies
from tests.conftest import REPO
from tests.unit.images.test_imageheader import crafted_png, crafted_tiff, jpeg_bytes, png_bytes
from tests.unit.sources.test_dicom import make_dicom

FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LIMITS = Limits(max_pixels=10_000_000, max_side=10_000, min_side=2)
SEEDS = [
    png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8)),
    png_bytes(np.full((6, 5, 3), 7, np.uint8)),
    jpeg_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10)),
    crafted_png(30, 20, depth=16),
    crafted_tiff(8, 8, 64, 64),
    make_dicom(rows=8, cols=8),
    make_dicom(rows=8, cols=8, implicit=True, bits=8, photometric="MONOCHROME2"),
]
SUFFIXES = st.sampled_from([".png", ".jpg", ".dcm", ".tif", ""])

REPO_PARAMS = REPO / "params.yaml"


def vet(data: bytes, suffix: str) -> ImageHeader | None:
    """read_header on bytes: a header, or None for an ImageRejected; anything else propagates (a failure)."""
    try:
        header, _ = read_header(io.BytesIO(data), len(data), suffix, LIMITS)
    except ImageRejected as err:
        assert err.code and err.reason.startswith(err.code.split(" ")[0]) or err.reason.startswith("dimensions")
        return None
    assert header.width > 0 and header.height > 0 and header.decoded_bit_depth in (8, 16)
    return header


@FUZZ
@given(st.binary(max_size=700), SUFFIXES)
def test_header_reader_on_arbitrary_bytes(data, suffix):
    vet(data, suffix)


@FUZZ
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 10_000)),
    SUFFIXES,
)
def test_header_reader_on_mutated_images(seed, flips, cut, suffix):
    data = bytearray(SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    vet(bytes(data), suffix)


def _input_error_only(fn, *args):
    try:
        return fn(*args)
    except InputError:
        return None


@FUZZ
@given(st.text(max_size=400))
def test_table_parsers_on_arbitrary_text(text):
    # Each parser either refuses the text with an InputError or returns its documented shape of strings.
    for fn in (parse_kaggle_table, parse_metadata):
        table = _input_error_only(fn, text, "fuzz.csv")
        assert table is None or isinstance(table, pd.DataFrame)
        if table is not None:
            assert all(isinstance(v, str) for v in table.to_numpy().ravel() if not pd.isna(v)), fn.__name__
    paths = _input_error_only(parse_image_paths, text, "fuzz.csv")
    assert paths is None or all(isinstance(p, str) and p for p in paths)
    studies = _input_error_only(parse_labeled_studies, text, "fuzz.csv")
    assert studies is None or all(isinstance(s, str) and isinstance(v, str) for s, v in studies)


@FUZZ
@given(st.binary(max_size=200))
def test_decode_text_on_arbitrary_bytes(data):
    text = _input_error_only(decode_text, data, "fuzz.csv")
    assert text is None or isinstance(text, str)


SIMPLE_CELLS = st.sampled_from(["", "1", "1.0", "0", "2", "x", " 1 ", "../a", "/etc/passwd", "nan", "1e9", "-3", "F"])
CELLS = st.one_of(
    SIMPLE_CELLS,
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters='\r\n",'), max_size=12),
)
FREE_TEXT_COLUMNS = ("filestem", "patient_id", "fracture_visible", "age")


@settings(FUZZ, max_examples=120)
@given(
    st.lists(
        st.fixed_dictionaries({c: CELLS if c in FREE_TEXT_COLUMNS else SIMPLE_CELLS for c in REQUIRED_COLUMNS}),
        max_size=6,
    )
)
def test_kaggle_rows_every_row_accounted_for(records):
    text = ",".join(REQUIRED_COLUMNS) + "\n" + "".join(",".join(r[c] for c in REQUIRED_COLUMNS) + "\n" for r in records)
    df = _input_error_only(parse_kaggle_table, text, "dataset.csv")
    if df is None:
        return
    stems = {str(s).strip(): f"images_part1/{i}.png" for i, s in enumerate(df["filestem"])}
    scan = kaggle_candidates(df, stems)
    deduped = len(df.assign(filestem=df["filestem"].str.strip()).drop_duplicates(subset=["filestem"]))
    assert len(scan.candidates) + len(scan.rejected) == deduped
    for c in scan.candidates:
        assert c.fields["label"] in (0, 1) and c.fields["patient_id"].startswith("kaggle:")


PATHS = st.one_of(
    st.builds(
        lambda split, typ, p, s, i: f"MURA-v1.1/{split}/{typ}/{p}/{s}/{i}",
        st.sampled_from(["train", "valid", "..", ""]),
        st.sampled_from(["XR_WRIST", "XR_HAND", ".."]),
        st.sampled_from(["patient1", "patient2", ".."]),
        st.sampled_from(["study1_positive", "study2_negative", "."]),
        st.sampled_from(["image1.png", "._image1.png", ""]),
    ),
    st.text(max_size=40),
)


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(["train", "valid"]), PATHS), max_size=8),
    st.lists(st.tuples(PATHS, st.sampled_from(["0", "1", "2", "", "x"])), max_size=8),
)
def test_mura_rows_never_raise(images, studies):
    scan = mura_candidates(images, studies, ("XR_WRIST",))
    assert len(scan.candidates) + len(scan.rejected) <= len(images)
    for c in scan.candidates:
        assert safe_relpath(c.path) == c.path and c.fields["label"] in (0, 1)


@FUZZ
@given(
    st.lists(PATHS.map(lambda p: p.removeprefix("MURA-v1.1/")), max_size=8),
    st.lists(
        st.tuples(PATHS, st.sampled_from(["", "0", "1", "7"]), st.sampled_from(["", "ulna", "x_set"])), max_size=5
    ),
)
def test_hospital_rows_never_raise(files, meta_rows):
    files = sorted({f for f in files if safe_relpath(f) == f})
    rows = [
        {"path": p, "patient_id": "P", "age": "3", "sex": "F", "label": lab, "body_part": bp}
        for p, lab, bp in meta_rows
    ]
    df = pd.DataFrame(rows, columns=["path", "patient_id", "age", "sex", "label", "body_part"])
    meta, rejected = metadata_index(df)
    scan = hospital_candidates(files, meta, b"k", re.compile(load_params(REPO_PARAMS).ingest.augmented_copy_pattern))
    for item in scan.candidates + scan.rejected + rejected:
        assert isinstance(item, Candidate | Rejected)
    for c in scan.candidates:
        assert c.fields["group_id"].startswith("hospital:") and c.fields["label"] in (0, 1)


@FUZZ
@given(st.text(max_size=60))
def test_value_parsers(text):
    rel = safe_relpath(text)
    assert rel is None or (not rel.startswith(("/", "../")) and rel != ".." and posixpath.normpath(rel) == rel)
    age = parse_age(text)
    assert age is None or 0 <= age <= 150
    try:
        assert parse_binary(text) in (None, 0, 1)
    except ValueError:
        pass
