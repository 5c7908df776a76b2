"""The renderer, pure: a wrist radiograph from a numpy Generator.

A forearm, hand and soft tissue; for label 1 a displaced distal-radius fracture; nuisances in both classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# All pixel math is float64, quantised once at the end (`to_uint8` / `to_uint16`). numpy and OpenCV pick SIMD code
# paths per CPU, and their exp / pow / blur / resize differ in the last bit between paths: in float32 that flipped
# about 1 pixel in 10^5 by one grey level on another machine (199 of 498 demo files), in float64 the last-bit
# differences (~1e-16) cross a quantisation boundary about once in 10^13 pixels, so the demo data is the same bytes
# on every x86-64 CPU (tests/unit/synth/test_synth_portable.py runs synth with the SIMD paths switched off).
_f = np.float64


Box = tuple[float, float, float, float]  # (x_center, y_center, width, height), normalised to the image


def _bbox(mask: np.ndarray) -> Box | None:
    """The normalised YOLO box around the True pixels of a [H, W] mask (pixel i covers [i, i + 1)); None if none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    x0, x1, y0, y1 = cols[0] / w, (cols[-1] + 1) / w, rows[0] / h, (rows[-1] + 1) / h
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0


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
    """Rotated canvas coordinates (u up the forearm, v across it), each [H, W] float64."""
    ys = (np.arange(geo.h, dtype=np.float64) - _f(geo.cy))[:, None]
    xs = (np.arange(geo.w, dtype=np.float64) - _f(geo.cx))[None, :]
    s, c = _f(np.sin(geo.theta)), _f(np.cos(geo.theta))
    return xs * s - ys * c, xs * c + ys * s


def _tube(u: np.ndarray, v: np.ndarray, centre: float, radius, start: float, end: float) -> np.ndarray:
    """Projected density of a hollow long bone (bright cortex, darker marrow) with rounded ends."""
    cap = _f(1.2) * radius
    e = np.maximum(np.clip((u - (end - cap)) / cap, 0, None), np.clip(((start + cap) - u) / cap, 0, None))
    d2 = ((v - _f(centre)) / radius) ** 2 + e * e
    outer = np.sqrt(np.clip(1 - d2, 0, None))
    inner = np.sqrt(np.clip(1 - d2 / _f(0.62**2), 0, None))
    return outer - _f(0.75 * 0.62) * inner


def _break(u: np.ndarray, v: np.ndarray, centre: float, frac: _Fracture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of a bone broken by `frac` (distal fragment angulated and displaced) and its density factor."""
    du, dv = u - _f(frac.u), v - _f(centre)
    s = du * _f(np.cos(frac.phi)) + dv * _f(np.sin(frac.phi))  # signed distance to the line
    distal = s > 0
    c, t = _f(np.cos(frac.tilt)), _f(np.sin(frac.tilt))
    u_moved = np.where(distal, _f(frac.u) + du * c - dv * t, u)
    v_moved = np.where(distal, _f(centre) + du * t + dv * c - _f(frac.shift), v)
    inside = np.clip(np.abs(s) - _f(frac.gap / 2) + _f(0.5), 0, 1)  # 1 px soft edge
    return u_moved, v_moved, _f(frac.depth) + _f(1 - frac.depth) * inside


def _forearm(u: np.ndarray, v: np.ndarray, geo: _Geometry, frac: _Fracture | None) -> np.ndarray:
    """Radius (flared distal end) + ulna density, broken by `frac` when given."""
    v_r, v_u = -geo.side * geo.sep / 2, geo.side * geo.sep / 2
    ulna_end = geo.joint - 0.035 * geo.h

    def radius(uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
        flare = _f(0.12 * geo.h)
        r = _f(geo.r_radius) * (1 + _f(0.45) * np.clip((uu - _f(geo.joint) + flare) / flare, 0, 1))
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
            out += _f(0.8) * np.sqrt(np.clip(1 - ((u - uc) / a) ** 2 - ((v - vc) / b) ** 2, 0, None))
    start = geo.joint + geo.h * 0.15
    for k in range(4):
        vc = left - geo.r_ulna + span * (k + 0.5) / 4
        out += _f(0.8) * _tube(u, v, vc, geo.r_ulna * 0.75, start, start + geo.h * rng.uniform(0.3, 0.4))
    return out


def _fracture_boxes(u: np.ndarray, v: np.ndarray, geo: _Geometry, frac: _Fracture) -> list[Box]:
    """Boxes around the fracture line where it crosses each broken bone, as a radiologist would draw them.

    Computed from the geometry already drawn (no random draws): the band of the fracture line (`_break`'s signed
    distance within half the gap, plus the 1 px soft edge) across the bone's width, widened by the displacement.
    """
    bones = [(-geo.side * geo.sep / 2, geo.r_radius * 1.45, geo.joint)]  # 1.45: the radius' distal flare
    if frac.ulna:
        bones.append((geo.side * geo.sep / 2, geo.r_ulna, geo.joint - 0.035 * geo.h))
    boxes = []
    for centre, radius, end in bones:
        s = (u - _f(frac.u)) * _f(np.cos(frac.phi)) + (v - _f(centre)) * _f(np.sin(frac.phi))
        band = np.abs(s) <= frac.gap / 2 + 0.5
        across = np.abs(v - centre) <= radius + abs(frac.shift)
        box = _bbox(band & across & (u <= end))
        if box is not None:
            boxes.append(box)
    return boxes


def _soft_tissue(u: np.ndarray, v: np.ndarray, geo: _Geometry, frac: _Fracture | None) -> np.ndarray:
    """Soft-tissue thickness: a rounded band around the forearm that widens over the hand (and swells at a fracture)."""
    half = _f(geo.tissue) * (1 + _f(0.3) * np.clip((u - _f(geo.joint)) / (0.2 * geo.h), 0, 1))
    if frac is None:
        return np.sqrt(np.clip(1 - (v / half) ** 2, 0, None))
    swelling = _f(frac.swell) * np.exp(-(((u - _f(frac.u)) / _f(0.12 * geo.h)) ** 2))
    return (1 + swelling) * np.sqrt(np.clip(1 - (v / (half * (1 + swelling))) ** 2, 0, None))


def _add_cast(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray, geo: _Geometry) -> None:
    """Plaster cast: a textured mid-density sleeve over the forearm and wrist (in place)."""
    texture = cv2.resize(rng.normal(0, 1, (6, 6)), (geo.w, geo.h), interpolation=cv2.INTER_CUBIC)
    sleeve = (np.abs(v) < geo.tissue * 1.15) & (u < geo.joint + 0.12 * geo.h)
    img += sleeve * (_f(0.16) + _f(0.03) * texture)


def _add_metal(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray, geo: _Geometry) -> Box | None:
    """Volar plate with screws on the distal radius: the brightest thing in the image (in place); returns its box."""
    v_plate = -geo.side * geo.sep / 2 + geo.r_radius * rng.uniform(-0.3, 0.3)
    u0 = geo.joint - 0.35 * geo.h
    plate = (np.abs(v - v_plate) < 0.025 * geo.w) & (u > u0) & (u < geo.joint - 0.03 * geo.h)
    img += plate * _f(1.2)
    drawn = plate.copy()
    for k in range(3):
        uc = u0 + (k + 0.5) * 0.1 * geo.h
        screw = (u - uc) ** 2 + (v - v_plate) ** 2 < (0.02 * geo.w) ** 2
        img += screw * _f(0.8)
        drawn |= screw
    return _bbox(drawn)


def _add_marker(rng: np.random.Generator, img: np.ndarray) -> Box | None:
    """Bright side marker ("L"/"R", sometimes boxed) in a random corner, as technicians place them (in place).

    Returns the marker's box (a `text` box in GRAZPEDWRI-DX's classes).
    """
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
    np.maximum(img, mask * _f(rng.uniform(1.0, 1.3) / 255), out=img)
    return _bbox(mask > 0)


def _expose(rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Detector response: saturating curve, gamma, heel-effect gradient, window (contrast/brightness)."""
    k = _f(rng.uniform(1.0, 2.0))
    img = (1 - np.exp(-k * density)) / (1 - np.exp(-k * _f(1.2)))
    img = np.clip(img, 0, None) ** _f(rng.uniform(0.8, 1.25))
    h, w = img.shape
    ramp = np.linspace(-0.5, 0.5, h if rng.random() < 0.5 else w, dtype=np.float64)
    img += _f(rng.uniform(-0.08, 0.08)) * (ramp[:, None] if ramp.size == h else ramp[None, :])
    lo, hi = rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0)
    return _f(lo) + _f(hi - lo) * img


def make_radiograph(
    rng: np.random.Generator,
    height: int,
    width: int,
    fracture: bool,
    *,
    lateral: bool = False,
    cast: bool = False,
    metal: bool = False,
    boxes: list[tuple[str, Box]] | None = None,
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
        boxes: when given, gets a (class name, normalised box) for the fracture line on each broken bone, the
            plate and screws (`metal`) and the side marker (`text`), computed from what was drawn: the random
            draws and so the image are the same with and without it.

    Returns:
        float64 [height, width] in [0, 1], bone bright.
    """
    scale = min(1.0, 640 / max(height, width))  # geometry at <= 640 px, then resized: fast at 2500 x 2000
    ch, cw = max(8, round(height * scale)), max(8, round(width * scale))
    geo = _sample_geometry(rng, ch, cw, lateral)
    frac = _sample_fracture(rng, geo)
    u, v = _axis_coords(geo)
    broken = frac if fracture else None
    density = _f(0.04) + _f(0.3) * _soft_tissue(u, v, geo, broken)
    density += _f(0.55) * (_forearm(u, v, geo, broken) + _hand(rng, u, v, geo))
    if cast:
        _add_cast(rng, density, u, v, geo)
    found: list[tuple[str, Box | None]] = (
        [("fracture", b) for b in _fracture_boxes(u, v, geo, frac)] if fracture else []
    )
    if metal:
        found.append(("metal", _add_metal(rng, density, u, v, geo)))
    sigma = min(ch, cw) * rng.uniform(0.002, 0.006)
    density = cv2.GaussianBlur(density, (0, 0), sigma) if sigma > 0.3 else density
    if rng.random() < 0.85:
        found.append(("text", _add_marker(rng, density)))
    if boxes is not None:
        boxes.extend((name, box) for name, box in found if box is not None)
    img = _expose(rng, density)
    if (ch, cw) != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = rng.standard_normal((height, width), dtype=np.float64) * _f(rng.uniform(0.008, 0.03))
    img += noise
    return np.clip(img, 0, 1, out=img)


def augment_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A slight variation of `image` (small rotation, shift, brightness/contrast), like offline augmentation."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.95, 1.05))
    m[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = out * _f(rng.uniform(0.92, 1.08)) + _f(rng.uniform(-0.05, 0.05))
    return np.clip(out, 0, 1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float image to uint8 (full 0-255 scale)."""
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def to_uint16(image: np.ndarray, low: int = 0, high: int = 65535) -> np.ndarray:
    """Quantise a [0, 1] float image to uint16, mapping 0 -> `low` and 1 -> `high`."""
    if not 0 <= low < high <= 65535:
        raise ValueError(f"need 0 <= low < high <= 65535, got {low}, {high}")
    return np.rint(low + np.clip(image, 0, 1) * (high - low)).astype(np.uint16)
