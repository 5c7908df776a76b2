"""What the layout planners share: the image spec, the per-source plan, and the unit, size and CSV helpers."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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
    labels: str | None = None  # YOLO box labels file to write (GRAZPEDWRI-DX's folder_structure/yolov5/labels)


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


def pick(rng: np.random.Generator, candidates: Sequence[int], k: int) -> set[int]:
    """Up to `k` distinct candidates, drawn without replacement."""
    k = min(k, len(candidates))
    return {int(i) for i in rng.choice(np.asarray(candidates, dtype=int), size=k, replace=False)} if k else set()


def sample_size(rng: np.random.Generator, sides: tuple[int, int], portrait: float) -> tuple[int, int]:
    """(height, width) with both sides in [min_side, max_side]; portrait with probability `portrait`."""
    lo, hi = sides
    long = int(rng.integers((lo + hi) // 2, hi + 1))
    short = int(rng.integers(lo, long + 1))
    return (long, short) if rng.random() < portrait else (short, long)


def count_images(specs: Sequence[ImageSpec]) -> dict[str, int]:
    """Images, positives and negatives of a plan, augmented copies included."""
    pos = sum((1 + len(s.copies)) * s.fracture for s in specs)
    total = sum(1 + len(s.copies) for s in specs)
    return {"images": total, "positive": pos, "negative": total - pos}


def csv_bytes(header: Sequence[str] | None, rows: Sequence[Sequence[object]], bom: bool = False) -> bytes:
    """A CSV file's bytes: UTF-8, one record per line, a BOM in front when `bom`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8-sig" if bom else "utf-8")
