"""Synthetic demo data written in the three real on-disk layouts (GRAZPEDWRI-DX, MURA v1.1, hospital).

The files reproduce the documented formats and their traps (see DATASETS.md): a BOM-prefixed 17-column
`dataset.csv` with `1`-or-empty flags and 16-bit PNGs spread over nested `images_partN` folders; MURA's
header-less CSVs, per-study labels, RGB-stored PNGs, another study type and AppleDouble junk; a hospital tree
with PNG, JPEG and DICOM files (one MONOCHROME1, both carrying fake PHI), offline-augmented copies and a partial
`metadata.csv`. The ingest code that reads the demo is therefore the code that reads the real data.

Every image carries a learnable signal: a forearm (radius, ulna, carpals, metacarpals) in soft tissue, and for
label 1 a dark fracture gap across the distal radius with a displaced distal fragment, sized relative to the
image so that it survives downsizing to 64 px. Nuisances (rotation, exposure, noise, side markers, casts,
metal) appear in both classes.

Layers: `make_radiograph` and the `plan_*` functions are pure (a numpy Generator in, arrays or tables out);
`run_synth` renders the plans, writes everything into a temporary folder and renames it into place.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fracture.config import Params, dump_params
from fracture.errors import InputError
from fracture.io import write_json
from fracture.parallel import progress

log = logging.getLogger(__name__)

SOURCE_DIRS = {"kaggle": "GRAZPEDWRI-DX", "mura": "MURA-v1.1", "hospital": "hospital"}
SOURCE_CODES = {"kaggle": 1, "mura": 2, "hospital": 3}
MIN_PER_SOURCE = 16  # fewer images cannot hold every layout feature (nested part folder, O sex, DICOMs, ...)

KAGGLE_COLUMNS = (
    "filestem",
    "patient_id",
    "study_number",
    "timehash",
    "gender",
    "age",
    "laterality",
    "projection",
    "initial_exam",
    "ao_classification",
    "cast",
    "diagnosis_uncertain",
    "osteopenia",
    "fracture_visible",
    "metal",
    "pixel_spacing",
    "device_manufacturer",
)
KAGGLE_FLAGS = ("initial_exam", "cast", "diagnosis_uncertain", "osteopenia", "fracture_visible", "metal")
KAGGLE_PARTS = 4
AO_CODES = (
    "23r-M/2.1",
    "23r-M/3.1",
    "23r-E/2.1",
    "23r-E/1.1",
    "23u-E/7",
    "23-M/3.1",
    "23r-M/3.1; 23u-E/7",
    "23r-E/2.1; 23u-E/7",
    "23r-M/2.1; 23u-M/2.1",
)
HOSPITAL_PARTS = ("radius", "scaphoid_set", "styloid")  # `_set` suffix on purpose: ingest must strip it
MURA_OTHER_TYPE = "XR_ELBOW"
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(58)

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


# ----------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Geometry:
    """Forearm layout on the canvas, px; `u` runs along the forearm towards the hand, `v` across it."""

    h: int
    w: int
    cx: float
    cy: float
    theta: float  # rad, forearm axis vs the image vertical
    joint: float  # u of the radius' distal end (radiocarpal joint)
    side: float  # +1 / -1: which side of the radius the ulna lies on (laterality)
    sep: float  # radius-ulna centre distance
    r_radius: float
    r_ulna: float
    tissue: float  # soft-tissue half-width


@dataclass(frozen=True)
class _Fracture:
    """A transverse-oblique fracture of the distal radius."""

    u: float  # position along the forearm
    phi: float  # rad, line obliquity
    gap: float  # px, width of the dark fracture line
    shift: float  # px, lateral displacement of the distal fragment
    depth: float  # bone density left inside the gap (0 = none)
    tilt: float  # rad, angulation of the distal fragment
    swell: float  # relative soft-tissue swelling at the fracture site
    ulna: bool  # the ulna breaks too


def _sample_geometry(rng: np.random.Generator, h: int, w: int, lateral: bool) -> _Geometry:
    s = min(h, w)  # widths scale with the short side, lengths with the height
    return _Geometry(
        h=h,
        w=w,
        cx=w * (0.5 + rng.uniform(-0.06, 0.06)),
        cy=h * (0.5 + rng.uniform(-0.04, 0.04)),
        theta=float(np.deg2rad(rng.uniform(-12, 12))),
        joint=h * rng.uniform(0.04, 0.16),
        side=float(rng.choice([-1.0, 1.0])),
        sep=s * (rng.uniform(0.03, 0.07) if lateral else rng.uniform(0.2, 0.26)),
        r_radius=s * rng.uniform(0.075, 0.095),
        r_ulna=s * rng.uniform(0.05, 0.062),
        tissue=s * rng.uniform(0.3, 0.38),
    )


def _sample_fracture(rng: np.random.Generator, geo: _Geometry) -> _Fracture:
    return _Fracture(
        u=geo.joint - geo.h * rng.uniform(0.1, 0.22),
        phi=float(np.deg2rad(rng.uniform(-25, 25))),
        gap=geo.h * rng.uniform(0.045, 0.065),  # >= ~3 px once the image is resized to 64 px
        shift=min(geo.h, geo.w) * rng.uniform(0.04, 0.08) * float(rng.choice([-1.0, 1.0])),
        depth=rng.uniform(0.0, 0.15),
        tilt=float(np.deg2rad(rng.uniform(6, 16) * rng.choice([-1.0, 1.0]))),
        swell=rng.uniform(0.12, 0.25),
        ulna=bool(rng.random() < 0.35),
    )


def _axis_coords(geo: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Rotated canvas coordinates (u up the forearm, v across it), each [H, W] float32."""
    ys = (np.arange(geo.h, dtype=np.float32) - np.float32(geo.cy))[:, None]
    xs = (np.arange(geo.w, dtype=np.float32) - np.float32(geo.cx))[None, :]
    s, c = np.float32(np.sin(geo.theta)), np.float32(np.cos(geo.theta))
    return xs * s - ys * c, xs * c + ys * s


def _tube(u: np.ndarray, v: np.ndarray, centre: float, radius, start: float, end: float) -> np.ndarray:
    """Projected density of a hollow long bone (bright cortex, darker marrow) with rounded ends."""
    cap = np.float32(1.2) * radius
    e = np.maximum(np.clip((u - (end - cap)) / cap, 0, None), np.clip(((start + cap) - u) / cap, 0, None))
    d2 = ((v - np.float32(centre)) / radius) ** 2 + e * e
    outer = np.sqrt(np.clip(1 - d2, 0, None))
    inner = np.sqrt(np.clip(1 - d2 / np.float32(0.62**2), 0, None))
    return outer - np.float32(0.75 * 0.62) * inner


def _break(u: np.ndarray, v: np.ndarray, centre: float, frac: _Fracture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of a bone broken by `frac` (distal fragment angulated and displaced) and its density factor."""
    du, dv = u - np.float32(frac.u), v - np.float32(centre)
    s = du * np.float32(np.cos(frac.phi)) + dv * np.float32(np.sin(frac.phi))  # signed distance to the line
    distal = s > 0
    c, t = np.float32(np.cos(frac.tilt)), np.float32(np.sin(frac.tilt))
    u_moved = np.where(distal, np.float32(frac.u) + du * c - dv * t, u)
    v_moved = np.where(distal, np.float32(centre) + du * t + dv * c - np.float32(frac.shift), v)
    inside = np.clip(np.abs(s) - np.float32(frac.gap / 2) + np.float32(0.5), 0, 1)  # 1 px soft edge
    return u_moved, v_moved, np.float32(frac.depth) + np.float32(1 - frac.depth) * inside


def _forearm(u: np.ndarray, v: np.ndarray, geo: _Geometry, frac: _Fracture | None) -> np.ndarray:
    """Radius (flared distal end) + ulna density, broken by `frac` when given."""
    v_r, v_u = -geo.side * geo.sep / 2, geo.side * geo.sep / 2
    ulna_end = geo.joint - 0.035 * geo.h

    def radius(uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
        flare = np.float32(0.12 * geo.h)
        r = np.float32(geo.r_radius) * (
            1 + np.float32(0.45) * np.clip((uu - np.float32(geo.joint) + flare) / flare, 0, 1)
        )
        return _tube(uu, vv, v_r, r, -1e6, geo.joint)

    if frac is None:
        return radius(u, v) + _tube(u, v, v_u, geo.r_ulna, -1e6, ulna_end)
    u_moved, v_moved, factor = _break(u, v, v_r, frac)
    out = radius(u_moved, v_moved) * factor
    if not frac.ulna:
        return out + _tube(u, v, v_u, geo.r_ulna, -1e6, ulna_end)
    u_moved, v_moved, factor = _break(u, v, v_u, frac)
    return out + _tube(u_moved, v_moved, v_u, geo.r_ulna, -1e6, ulna_end) * factor


def _hand(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, geo: _Geometry) -> np.ndarray:
    """Two rows of carpal bones and four metacarpals distal to the joint."""
    left, right = sorted((-geo.side * geo.sep / 2, geo.side * geo.sep / 2))
    span = right - left + geo.r_radius + geo.r_ulna
    out = np.zeros_like(u)
    for row, n in ((0, 4), (1, 4)):
        uc = geo.joint + geo.h * (0.045 + 0.06 * row)
        a, b = geo.h * 0.027, span / n * 0.45
        for k in range(n):
            vc = left - geo.r_ulna + span * (k + 0.5) / n + rng.uniform(-0.1, 0.1) * b
            out += np.float32(0.8) * np.sqrt(np.clip(1 - ((u - uc) / a) ** 2 - ((v - vc) / b) ** 2, 0, None))
    start = geo.joint + geo.h * 0.15
    for k in range(4):
        vc = left - geo.r_ulna + span * (k + 0.5) / 4
        out += np.float32(0.8) * _tube(u, v, vc, geo.r_ulna * 0.75, start, start + geo.h * rng.uniform(0.3, 0.4))
    return out


def _soft_tissue(u: np.ndarray, v: np.ndarray, geo: _Geometry, frac: _Fracture | None) -> np.ndarray:
    """Soft-tissue thickness: a rounded band around the forearm that widens over the hand (and swells at a fracture)."""
    half = np.float32(geo.tissue) * (1 + np.float32(0.3) * np.clip((u - np.float32(geo.joint)) / (0.2 * geo.h), 0, 1))
    if frac is None:
        return np.sqrt(np.clip(1 - (v / half) ** 2, 0, None))
    swelling = np.float32(frac.swell) * np.exp(-(((u - np.float32(frac.u)) / np.float32(0.12 * geo.h)) ** 2))
    return (1 + swelling) * np.sqrt(np.clip(1 - (v / (half * (1 + swelling))) ** 2, 0, None))


def _add_cast(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray, geo: _Geometry) -> None:
    """Plaster cast: a textured mid-density sleeve over the forearm and wrist (in place)."""
    texture = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (geo.w, geo.h), interpolation=cv2.INTER_CUBIC)
    sleeve = (np.abs(v) < geo.tissue * 1.15) & (u < geo.joint + 0.12 * geo.h)
    img += sleeve * (np.float32(0.16) + np.float32(0.03) * texture)


def _add_metal(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray, geo: _Geometry) -> None:
    """Volar plate with screws on the distal radius: the brightest thing in the image (in place)."""
    v_plate = -geo.side * geo.sep / 2 + geo.r_radius * rng.uniform(-0.3, 0.3)
    u0 = geo.joint - 0.35 * geo.h
    plate = (np.abs(v - v_plate) < 0.025 * geo.w) & (u > u0) & (u < geo.joint - 0.03 * geo.h)
    img += plate * np.float32(1.2)
    for k in range(3):
        uc = u0 + (k + 0.5) * 0.1 * geo.h
        img += ((u - uc) ** 2 + (v - v_plate) ** 2 < (0.02 * geo.w) ** 2) * np.float32(0.8)


def _add_marker(rng: np.random.Generator, img: np.ndarray) -> None:
    """Bright side marker ("L"/"R", sometimes boxed) in a random corner, as technicians place them (in place)."""
    h, w = img.shape
    scale = min(h, w) * rng.uniform(0.07, 0.11) / 22.0  # Hershey simplex glyphs are ~22 px tall at scale 1
    thick = max(1, round(scale * 2.5))
    text = str(rng.choice(["L", "R"]))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    margin = int(min(h, w) * 0.05)
    x = margin if rng.random() < 0.5 else w - margin - tw
    y = margin + th if rng.random() < 0.5 else h - margin
    mask = np.zeros((h, w), dtype=np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(mask, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    if rng.random() < 0.4:
        pad = thick + 2
        cv2.rectangle(
            mask, (int(x) - pad, int(y) - th - pad), (int(x) + tw + pad, int(y) + pad), 255, max(1, thick // 2)
        )
    np.maximum(img, mask * np.float32(rng.uniform(1.0, 1.3) / 255), out=img)


def _expose(rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Detector response: saturating curve, gamma, heel-effect gradient, window (contrast/brightness)."""
    k = np.float32(rng.uniform(1.0, 2.0))
    img = (1 - np.exp(-k * density)) / (1 - np.exp(-k * np.float32(1.2)))
    img = np.clip(img, 0, None) ** np.float32(rng.uniform(0.8, 1.25))
    h, w = img.shape
    ramp = np.linspace(-0.5, 0.5, h if rng.random() < 0.5 else w, dtype=np.float32)
    img += np.float32(rng.uniform(-0.08, 0.08)) * (ramp[:, None] if ramp.size == h else ramp[None, :])
    lo, hi = rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0)
    return np.float32(lo) + np.float32(hi - lo) * img


def make_radiograph(
    rng: np.random.Generator,
    height: int,
    width: int,
    fracture: bool,
    *,
    lateral: bool = False,
    cast: bool = False,
    metal: bool = False,
) -> np.ndarray:
    """Render one synthetic wrist radiograph.

    The random draws do not depend on `fracture`: the same generator state gives the same image with and
    without the fracture, so the fracture gap and displacement are the only difference between the two.

    Args:
        rng: random source (consumed).
        height: output rows, px.
        width: output columns, px.
        fracture: draw a displaced fracture of the distal radius (sometimes of the ulna too).
        lateral: lateral projection (radius and ulna overlap).
        cast: draw a plaster cast.
        metal: draw a plate with screws.

    Returns:
        float32 [height, width] in [0, 1], bone bright.
    """
    scale = min(1.0, 640 / max(height, width))  # geometry at <= 640 px, then resized: fast at 2500 x 2000
    ch, cw = max(8, round(height * scale)), max(8, round(width * scale))
    geo = _sample_geometry(rng, ch, cw, lateral)
    frac = _sample_fracture(rng, geo)
    u, v = _axis_coords(geo)
    broken = frac if fracture else None
    density = np.float32(0.04) + np.float32(0.3) * _soft_tissue(u, v, geo, broken)
    density += np.float32(0.55) * (_forearm(u, v, geo, broken) + _hand(rng, u, v, geo))
    if cast:
        _add_cast(rng, density, u, v, geo)
    if metal:
        _add_metal(rng, density, u, v, geo)
    sigma = min(ch, cw) * rng.uniform(0.002, 0.006)
    density = cv2.GaussianBlur(density, (0, 0), sigma) if sigma > 0.3 else density
    if rng.random() < 0.85:
        _add_marker(rng, density)
    img = _expose(rng, density)
    if (ch, cw) != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(0.008, 0.03))
    img += noise
    return np.clip(img, 0, 1, out=img)


def augment_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A slight variation of `image` (small rotation, shift, brightness/contrast), like offline augmentation."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.95, 1.05))
    m[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = out * np.float32(rng.uniform(0.92, 1.08)) + np.float32(rng.uniform(-0.05, 0.05))
    return np.clip(out, 0, 1).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float image to uint8 (full 0-255 scale)."""
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def to_uint16(image: np.ndarray, low: int = 0, high: int = 65535) -> np.ndarray:
    """Quantise a [0, 1] float image to uint16, mapping 0 -> `low` and 1 -> `high`."""
    if not 0 <= low < high <= 65535:
        raise ValueError(f"need 0 <= low < high <= 65535, got {low}, {high}")
    return np.rint(low + np.clip(image, 0, 1) * (high - low)).astype(np.uint16)


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class ImageSpec:
    """One image to render: where it goes (relative to its source root), what it shows, how it is stored."""

    rel_path: str
    height: int
    width: int
    fracture: bool
    kind: str  # png16 | png8 | rgb | jpg | dcm_mono2 | dcm_mono1
    key: int  # index of the image's own random stream
    lateral: bool = False
    cast: bool = False
    metal: bool = False
    copies: tuple[str, ...] = field(default=())  # offline-augmented copies (hospital)


@dataclass(frozen=True)
class SourcePlan:
    """Everything one source writes: images plus its text files (path relative to the root -> content)."""

    specs: list[ImageSpec]
    texts: dict[str, bytes]
    counts: dict[str, int]


def assign_positive(rng: np.random.Generator, sizes: Sequence[int], target: int) -> np.ndarray:
    """Mark whole units (studies, augmentation groups) positive until `target` images are positive.

    Units are visited in random order and taken while they fit, so the total never exceeds `target` and
    reaches it whenever single-image units remain.
    """
    chosen = np.zeros(len(sizes), dtype=bool)
    total = 0
    for i in rng.permutation(len(sizes)):
        if total + sizes[i] <= target:
            chosen[i] = True
            total += sizes[i]
    return chosen


def _pick(rng: np.random.Generator, candidates: Sequence[int], k: int) -> set[int]:
    k = min(k, len(candidates))
    return {int(i) for i in rng.choice(np.asarray(candidates, dtype=int), size=k, replace=False)} if k else set()


def _sample_size(rng: np.random.Generator, sides: tuple[int, int], portrait: float) -> tuple[int, int]:
    """(height, width) with both sides in [min_side, max_side]; portrait with probability `portrait`."""
    lo, hi = sides
    long = int(rng.integers((lo + hi) // 2, hi + 1))
    short = int(rng.integers(lo, long + 1))
    return (long, short) if rng.random() < portrait else (short, long)


def _counts(specs: Sequence[ImageSpec]) -> dict[str, int]:
    pos = sum((1 + len(s.copies)) * s.fracture for s in specs)
    total = sum(1 + len(s.copies) for s in specs)
    return {"images": total, "positive": pos, "negative": total - pos}


def _csv_bytes(header: Sequence[str] | None, rows: Sequence[Sequence[object]], bom: bool = False) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8-sig" if bom else "utf-8")


# GRAZPEDWRI-DX ------------------------------------------------------------------------------------------


def _kaggle_studies(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """(patient index, study number, views) with two views per study and 1-3 studies per patient."""
    studies: list[tuple[int, int, int]] = []
    left, patient = n, 0
    while left > 0:
        for number in range(1, 1 + int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.10]))):
            if left == 0:
                break
            studies.append((patient, number, min(2, left)))
            left -= min(2, left)
        patient += 1
    return studies


def _kaggle_study_flags(rng: np.random.Generator, studies: list, positive: np.ndarray) -> dict[str, set[int]]:
    """Study indices carrying each flag; casts and follow-ups concentrate on positives, as in the real data."""
    n = len(studies)
    follow = np.array([s[1] > 1 for s in studies])
    p_cast = np.where(positive, np.where(follow, 0.45, 0.08), 0.03)
    few = max(1, round(0.03 * n))
    return {
        "initial_exam": {i for i in range(n) if not follow[i]},
        "cast": set(np.flatnonzero(rng.random(n) < p_cast).tolist()),
        "metal": _pick(rng, range(n), few),
        "diagnosis_uncertain": _pick(rng, range(n), few),
        "osteopenia": _pick(rng, range(n), few),
    }


def _kaggle_patients(rng: np.random.Generator, n_patients: int) -> list[dict]:
    ids = np.sort(rng.choice(np.arange(1, 10000), size=n_patients, replace=False))
    sex = rng.choice(["M", "F"], size=n_patients, p=[0.56, 0.44])
    sex[rng.integers(n_patients)] = "O"  # rare in the real data; the cohort policy excludes it
    ages = 0.2 + 16.5 * rng.beta(2.2, 1.6, size=n_patients)
    times = rng.integers(100_000_000, 1_300_000_000, size=n_patients)
    return [
        {"pid": f"{ids[i]:04d}", "sex": str(sex[i]), "age": float(ages[i]), "time": int(times[i])}
        for i in range(n_patients)
    ]


def _kaggle_labels(rng: np.random.Generator, sizes: list[int], target: int) -> tuple[np.ndarray, dict[int, int]]:
    """Positive studies, and for some of them the one view where the fracture is not visible."""
    n_hidden = max(1, round(0.08 * target))
    positive = assign_positive(rng, sizes, target + n_hidden)
    two_view = [i for i in np.flatnonzero(positive) if sizes[i] == 2]
    return positive, {i: int(rng.integers(2)) for i in sorted(_pick(rng, two_view, n_hidden))}


def _kaggle_view_rows(rng: np.random.Generator, study: dict, flags: dict[str, bool]) -> list[dict]:
    """dataset.csv rows of one study (views a few seconds apart, same side)."""
    rows, t = [], study["time"]
    for view in range(study["views"]):
        proj = 3 if view in study["proj3"] else view + 1
        visible = study["positive"] and study["hidden"] != view
        stem = f"{study['pid']}_{t:010d}_{study['number']:02d}_WRI-{study['side']}{proj}_{study['sex']}"
        rows.append(
            {
                **{name: "1" if on else "" for name, on in flags.items()},
                "filestem": f"{stem}{int(study['age']):03d}",
                "patient_id": study["pid"],
                "study_number": study["number"],
                "timehash": f"{t:010d}",
                "gender": study["sex"],
                "age": f"{study['age']:.1f}",
                "laterality": study["side"],
                "projection": proj,
                "ao_classification": study["ao"],
                "fracture_visible": "1" if visible else "",
                "pixel_spacing": study["spacing"],
                "device_manufacturer": study["maker"],
            }
        )
        t += int(rng.integers(15, 150))
    return rows


def _kaggle_study(rng: np.random.Generator, patient: dict, number: int, views: int) -> dict:
    agfa = rng.random() < 0.15
    return {
        **patient,
        "number": number,
        "views": views,
        "age": min(19.0, patient["age"] + (number - 1) * rng.uniform(0.05, 0.4)),
        "time": patient["time"] + (number - 1) * int(rng.integers(500_000, 5_000_000)),
        "side": str(rng.choice(["L", "R"])),
        "spacing": "0.1" if agfa else "0.144",
        "maker": "Agfa" if agfa else "Siemens",
    }


def _kaggle_table(rng: np.random.Generator, n: int, positive_fraction: float) -> list[dict]:
    """All dataset.csv rows (as dicts) in filestem order."""
    studies = _kaggle_studies(rng, n)
    patients = _kaggle_patients(rng, studies[-1][0] + 1)
    positive, hidden = _kaggle_labels(rng, [s[2] for s in studies], round(n * positive_fraction))
    flags = _kaggle_study_flags(rng, studies, positive)
    proj3 = _pick(rng, [i for i, s in enumerate(studies) if s[2] == 2], max(1, round(0.02 * n)))
    rows = []
    for i, (p, number, views) in enumerate(studies):
        study = _kaggle_study(rng, patients[p], number, views)
        uncertain = i in flags["diagnosis_uncertain"]
        ao = str(rng.choice(AO_CODES)) if positive[i] or (uncertain and rng.random() < 0.5) else ""
        study.update(positive=bool(positive[i]), hidden=hidden.get(i, -1), proj3={1} if i in proj3 else set(), ao=ao)
        rows += _kaggle_view_rows(rng, study, {name: i in members for name, members in flags.items()})
    return rows


def plan_kaggle(rng: np.random.Generator, n: int, positive_fraction: float, sides: tuple[int, int]) -> SourcePlan:
    """GRAZPEDWRI-DX: `dataset.csv` (BOM, 17 columns) + 16-bit PNGs in `images_part1..4` (the last one nested)."""
    rows = _kaggle_table(rng, n, positive_fraction)
    specs = []
    for i, row in enumerate(rows):
        part = 1 + i * KAGGLE_PARTS // len(rows)
        folder = f"images_part{part}/images_part{part}" if part == KAGGLE_PARTS else f"images_part{part}"
        h, w = _sample_size(rng, sides, portrait=1.0)
        specs.append(
            ImageSpec(
                rel_path=f"{folder}/{row['filestem']}.png",
                height=h,
                width=w,
                fracture=row["fracture_visible"] == "1",
                kind="png16",
                key=i,
                lateral=row["projection"] == 2,
                cast=row["cast"] == "1",
                metal=row["metal"] == "1",
            )
        )
    table = _csv_bytes(KAGGLE_COLUMNS, [[row[c] for c in KAGGLE_COLUMNS] for row in rows], bom=True)
    return SourcePlan(specs, {"dataset.csv": table}, _counts(specs))


# MURA ----------------------------------------------------------------------------------------------------


def _mura_patients(rng: np.random.Generator, n: int) -> list[list[int]]:
    """Per patient, the number of images in each of their 1-2 studies; `n` images in all."""
    patients, left = [], n
    while left > 0:
        sizes = []
        for _ in range(1 + int(rng.random() < 0.2)):
            k = min(left, int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2])))
            if k:
                sizes.append(k)
                left -= k
        patients.append(sizes)
    return patients


def _mura_studies(patients: list[list[int]], study_type: str, numbers: np.ndarray, n_valid: int) -> list[dict]:
    """Study records; the last `n_valid` patients (highest numbers) form MURA's own `valid` split."""
    studies = []
    for j, sizes in enumerate(patients):
        split = "valid" if j >= len(patients) - n_valid else "train"
        for k, size in enumerate(sizes, start=1):
            studies.append(
                {"split": split, "type": study_type, "patient": f"patient{numbers[j]:05d}", "study": k, "size": size}
            )
    return studies


def _mura_valid_patients(patients: list[list[int]], fraction: float) -> int:
    """Number of trailing patients that hold about `fraction` of the images (at least one patient)."""
    total, count, images = sum(map(sum, patients)), 0, 0
    while count < len(patients) - 1 and (count == 0 or images < fraction * total):
        count += 1
        images += sum(patients[-count])
    return count


def _mura_layout(rng: np.random.Generator, n: int, positive_fraction: float) -> list[dict]:
    """Wrist and other-type studies with per-study labels and numbered patients (other type listed first)."""
    wrist = _mura_patients(rng, n)
    other = _mura_patients(rng, max(2, n // 20))
    numbers = np.sort(rng.choice(np.arange(1, max(99_999, 4 * n)), size=len(wrist) + len(other), replace=False))
    other_numbers = np.sort(rng.choice(numbers, size=len(other), replace=False))
    wrist_numbers = np.setdiff1d(numbers, other_numbers)
    wrist_studies = _mura_studies(wrist, "XR_WRIST", wrist_numbers, _mura_valid_patients(wrist, 0.15))
    wrist_pos = assign_positive(rng, [s["size"] for s in wrist_studies], round(n * positive_fraction))
    other_studies = _mura_studies(other, MURA_OTHER_TYPE, other_numbers, int(len(other) > 1))
    other_pos = rng.random(len(other_studies)) < 0.5
    studies = other_studies + wrist_studies
    for s, pos in zip(studies, [*other_pos, *wrist_pos], strict=True):
        s["positive"] = bool(pos)
        label = "positive" if pos else "negative"
        s["dir"] = f"{s['split']}/{s['type']}/{s['patient']}/study{s['study']}_{label}"
    return studies


def plan_mura(rng: np.random.Generator, n: int, positive_fraction: float, sides: tuple[int, int]) -> SourcePlan:
    """MURA-v1.1: four header-less CSVs, per-study folders of 8-bit PNGs (some RGB), an elbow study, `._` junk."""
    studies = _mura_layout(rng, n, positive_fraction)
    rgb = _pick(rng, range(n), max(1, round(0.08 * n)))  # indices among the wrist images
    specs: list[ImageSpec] = []
    paths: dict[str, list] = {"train": [], "valid": []}
    labels: dict[str, list] = {"train": [], "valid": []}
    n_wrist = 0
    for s in studies:
        labels[s["split"]].append([f"MURA-v1.1/{s['dir']}/", int(s["positive"])])
        for m in range(1, s["size"] + 1):
            rel = f"{s['dir']}/image{m}.png"
            paths[s["split"]].append([f"MURA-v1.1/{rel}"])
            h, w = _sample_size(rng, sides, portrait=0.7)
            is_wrist = s["type"] == "XR_WRIST"
            kind = "rgb" if is_wrist and n_wrist in rgb else "png8"
            n_wrist += is_wrist
            specs.append(ImageSpec(rel, h, w, s["positive"], kind, len(specs), lateral=m == 2))
    texts = {}
    for split in ("train", "valid"):
        texts[f"{split}_image_paths.csv"] = _csv_bytes(None, paths[split])
        texts[f"{split}_labeled_studies.csv"] = _csv_bytes(None, labels[split])
    junk_dirs = [s["dir"] for s in studies if s["type"] == "XR_WRIST"][:2]
    texts.update({f"{d}/._image1.png": APPLEDOUBLE for d in junk_dirs})
    wrist = [sp for sp in specs if "/XR_WRIST/" in sp.rel_path]
    counts = {**_counts(wrist), "other_study_type": len(specs) - len(wrist), "junk_files": len(junk_dirs)}
    return SourcePlan(specs, texts, counts)


# Hospital ------------------------------------------------------------------------------------------------


def _hospital_units(rng: np.random.Generator, n: int) -> list[dict]:
    """Images grouped into units: originals with 0 or 2-4 augmented copies, plus two DICOM files."""
    units = [
        {"part": "radius", "copies": 0, "kind": "dcm_mono2"},
        {"part": "scaphoid_set", "copies": 0, "kind": "dcm_mono1"},
    ]
    budget = n - len(units)
    for p, part in enumerate(HOSPITAL_PARTS):
        n_part = budget // len(HOSPITAL_PARTS) + (p < budget % len(HOSPITAL_PARTS))
        for _ in range(max(1, round(n_part / 20))):
            copies = min(int(rng.integers(2, 5)), n_part - 3)
            units.append({"part": part, "copies": copies, "kind": "png8"})
            n_part -= copies + 1
        for _ in range(n_part):
            units.append({"part": part, "copies": 0, "kind": "jpg" if rng.random() < 0.2 else "png8"})
    return [units[i] for i in rng.permutation(len(units))]


def _hospital_names(rng: np.random.Generator, units: list[dict], positive: np.ndarray) -> None:
    """Folder and file names (`posi_1003.png`, `nega_1000_0.png`, `IM0001.dcm`), in place."""
    numbers = rng.choice(np.arange(1000, 1000 + 20 * len(units)), size=len(units), replace=False)
    n_dicom = 0
    for unit, pos, number in zip(units, positive, numbers, strict=True):
        folder = f"{unit['part']}/{'positive' if pos else 'negative'}"
        if unit["kind"].startswith("dcm"):
            n_dicom += 1
            unit["path"] = f"{folder}/IM{n_dicom:04d}.dcm"
            continue
        if unit["copies"] == 0 and rng.random() < 0.25:
            folder += "/batch2"  # images may sit in nested folders below the label folder
        base = f"{folder}/{'posi' if pos else 'nega'}_{number}"
        unit["path"] = f"{base}.{'jpg' if unit['kind'] == 'jpg' else 'png'}"
        unit["copy_paths"] = tuple(f"{base}_{k}.png" for k in range(unit["copies"]))


def _hospital_metadata(rng: np.random.Generator, units: list[dict]) -> bytes:
    """metadata.csv (path, patient_id, age, sex) for most files; DICOMs and a few units are left out."""
    plain = [u for u in units if not u["kind"].startswith("dcm")]
    missing = _pick(rng, range(len(plain)), max(1, round(0.1 * len(plain))))
    rows, j = [], 0
    while j < len(plain):
        take = 1 + int(rng.random() < 0.35)  # a patient holds one or two of the units
        pid, age, sex = (
            f"H{int(rng.integers(1, 1_000_000)):06d}",
            int(rng.integers(18, 90)),
            str(rng.choice(["F", "M"])),
        )
        for k in range(j, min(j + take, len(plain))):
            if k not in missing:
                rows += [[path, pid, age, sex] for path in (plain[k]["path"], *plain[k]["copy_paths"])]
        j += take
    return _csv_bytes(("path", "patient_id", "age", "sex"), sorted(rows))


def plan_hospital(rng: np.random.Generator, n: int, positive_fraction: float, sides: tuple[int, int]) -> SourcePlan:
    """hospital/<part>/{positive,negative}/...: PNG, JPEG, two DICOMs, augmented copies, partial metadata.csv."""
    units = _hospital_units(rng, n)
    positive = assign_positive(rng, [1 + u["copies"] for u in units], round(n * positive_fraction))
    _hospital_names(rng, units, positive)
    specs = []
    for i, (unit, pos) in enumerate(zip(units, positive, strict=True)):
        h, w = _sample_size(rng, sides, portrait=0.5)
        specs.append(ImageSpec(unit["path"], h, w, bool(pos), unit["kind"], i, copies=unit.get("copy_paths", ())))
    counts = {
        **_counts(specs),
        "dicom": sum(s.kind.startswith("dcm") for s in specs),
        "augmented_copies": sum(len(s.copies) for s in specs),
    }
    return SourcePlan(specs, {"metadata.csv": _hospital_metadata(rng, units)}, counts)


# ------------------------------------------------------------------------------------------------- writing


def _entropy(seed: int) -> int:
    """Map any int seed to the non-negative entropy numpy's SeedSequence accepts (distinct seeds stay distinct)."""
    return seed % (1 << 64)


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


def _save(path: Path, image: np.ndarray, kind: str, rng: np.random.Generator, seed: int, key: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png16":
        low, high = int(rng.integers(0, 2500)), int(rng.integers(56_000, 65_536))
        ok = cv2.imwrite(str(path), to_uint16(image, low, high))
    elif kind == "rgb":
        ok = cv2.imwrite(str(path), cv2.cvtColor(to_uint8(image), cv2.COLOR_GRAY2BGR))
    elif kind == "jpg":
        ok = cv2.imwrite(str(path), to_uint8(image), [cv2.IMWRITE_JPEG_QUALITY, 92])
    elif kind in ("dcm_mono1", "dcm_mono2"):
        write_dicom(path, image, kind == "dcm_mono1", seed, key)
        ok = True
    else:
        ok = cv2.imwrite(str(path), to_uint8(image))
    if not ok:
        raise OSError(f"{path}: could not write image")


def render_spec(spec: ImageSpec, seed: int, source_code: int) -> tuple[np.random.Generator, np.ndarray]:
    """Render one planned image from its own random stream (independent of every other image)."""
    rng = np.random.default_rng([_entropy(seed), source_code, 1, spec.key])
    image = make_radiograph(
        rng, spec.height, spec.width, spec.fracture, lateral=spec.lateral, cast=spec.cast, metal=spec.metal
    )
    return rng, image


def write_source(root: Path, plan: SourcePlan, seed: int, source_code: int) -> None:
    """Render and write every image of a plan, then its text files (CSV tables, junk files)."""
    for spec in progress(plan.specs, total=len(plan.specs), desc=f"synth {root.name}"):
        rng, image = render_spec(spec, seed, source_code)
        _save(root / spec.rel_path, image, spec.kind, rng, seed, spec.key)
        for rel in spec.copies:
            _save(root / rel, augment_copy(rng, image), "png8", rng, seed, spec.key)
    for rel, data in plan.texts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def plan_sources(params: Params, n: int, seed: int) -> dict[str, SourcePlan]:
    """The three source plans, each from its own random stream."""
    sp = params.synth
    sides = (sp.min_side, sp.max_side)
    planners = {"kaggle": plan_kaggle, "mura": plan_mura, "hospital": plan_hospital}
    return {
        name: planner(np.random.default_rng([_entropy(seed), SOURCE_CODES[name], 0]), n, sp.positive_fraction, sides)
        for name, planner in planners.items()
    }


def _publish(tmp_root: Path, out_dir: Path) -> None:
    """Move the freshly written source folders into place, replacing earlier ones."""
    for name in SOURCE_DIRS.values():
        dst = out_dir / name
        if dst.exists():
            os.replace(dst, tmp_root / f"{name}.old")
        os.replace(tmp_root / name, dst)


def _resolved(params: Params, n: int, seed: int) -> Params:
    return params.model_copy(
        update={
            "base": params.base.model_copy(update={"seed": seed}),
            "synth": params.synth.model_copy(update={"n_per_source": n}),
        }
    )


def run_synth(params: Params, out_dir: Path, n_per_source: int | None = None, seed: int | None = None) -> dict:
    """Write deterministic synthetic radiographs in the three real layouts under `out_dir`.

    Writes `GRAZPEDWRI-DX/`, `MURA-v1.1/` and `hospital/` (each replaced as a whole, so a killed run can be
    re-run), plus `synth_summary.json` and the resolved `params.yaml`.

    Args:
        params: the project params (`synth` section, `base.seed`).
        out_dir: output root.
        n_per_source: images per source (default `params.synth.n_per_source`).
        seed: random seed (default `params.base.seed`); the same seed gives byte-identical files.

    Returns:
        Counts per source: images, positive, negative (plus MURA's other study type and junk files, and the
        hospital's DICOM files and augmented copies).
    """
    n = params.synth.n_per_source if n_per_source is None else n_per_source
    seed = params.base.seed if seed is None else seed
    if n < MIN_PER_SOURCE:
        raise InputError(f"synth: n_per_source must be >= {MIN_PER_SOURCE} to hold every layout feature, got {n}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".synth-tmp-*"):  # left behind by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".synth-tmp-", dir=out_dir))
    try:
        plans = plan_sources(params, n, seed)
        for name, plan in plans.items():
            write_source(tmp_root / SOURCE_DIRS[name], plan, seed, SOURCE_CODES[name])
        _publish(tmp_root, out_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    counts = {name: plan.counts for name, plan in plans.items()}
    write_json(out_dir / "synth_summary.json", {"seed": seed, "n_per_source": n, "counts": counts})
    dump_params(_resolved(params, n, seed), out_dir / "params.yaml")
    summary = ", ".join(f"{k} {c['images']} ({c['positive']} positive)" for k, c in counts.items())
    log.info("synth: wrote %s to %s in %.1f s (seed %d)", summary, out_dir, time.perf_counter() - start, seed)
    return counts
