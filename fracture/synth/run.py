"""`run_synth`, the synth step: plan the three sources, render and write them into a temporary folder, publish."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fracture.base.errors import InputError
from fracture.base.io import write_json
from fracture.base.parallel import progress
from fracture.config import Params, dump_params
from fracture.contracts.artifacts import SYNTH_SUMMARY
from fracture.sources import SOURCE_DIRS
from fracture.sources.boxes import CLASS_NAMES
from fracture.synth.dicom import write_dicom
from fracture.synth.hospital import plan_hospital
from fracture.synth.kaggle import plan_kaggle
from fracture.synth.mura import plan_mura
from fracture.synth.plan import ImageSpec, SourcePlan
from fracture.synth.render import augment_copy, make_radiograph, to_uint8, to_uint16

log = logging.getLogger(__name__)

SOURCE_CODES = {"kaggle": 1, "mura": 2, "hospital": 3}
MIN_PER_SOURCE = 16  # fewer images cannot hold every layout feature (nested part folder, O sex, DICOMs, ...)


def _entropy(seed: int) -> int:
    """Map any int seed to the non-negative entropy numpy's SeedSequence accepts (distinct seeds stay distinct)."""
    return seed % (1 << 64)


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


def render_spec(
    spec: ImageSpec, seed: int, source_code: int, boxes: list | None = None
) -> tuple[np.random.Generator, np.ndarray]:
    """Render one planned image from its own random stream (independent of every other image).

    `boxes`, when given, gets the drawn fracture, metal and marker boxes (render.make_radiograph).
    """
    rng = np.random.default_rng([_entropy(seed), source_code, 1, spec.key])
    image = make_radiograph(
        rng,
        spec.height,
        spec.width,
        spec.fracture,
        lateral=spec.lateral,
        cast=spec.cast,
        metal=spec.metal,
        boxes=boxes,
    )
    return rng, image


def yolo_lines(boxes: list) -> str:
    """A YOLO labels file: `class x_center y_center width height` per box, class indices in GRAZPEDWRI-DX's order."""
    return "".join(f"{CLASS_NAMES.index(name)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}\n" for name, (xc, yc, w, h) in boxes)


def write_source(root: Path, plan: SourcePlan, seed: int, source_code: int) -> None:
    """Render and write every image of a plan, then its text files (CSV tables, junk files)."""
    for spec in progress(plan.specs, total=len(plan.specs), desc=f"synth {root.name}"):
        boxes: list = []
        rng, image = render_spec(spec, seed, source_code, boxes)
        _save(root / spec.rel_path, image, spec.kind, rng, seed, spec.key)
        if spec.labels is not None:
            (root / spec.labels).parent.mkdir(parents=True, exist_ok=True)
            (root / spec.labels).write_text(yolo_lines(boxes), encoding="ascii", newline="\n")
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
    write_json(out_dir / SYNTH_SUMMARY, {"seed": seed, "n_per_source": n, "counts": counts})
    dump_params(_resolved(params, n, seed), out_dir / "params.yaml")
    summary = ", ".join(f"{k} {c['images']} ({c['positive']} positive)" for k, c in counts.items())
    log.info("synth: wrote %s to %s in %.1f s (seed %d)", summary, out_dir, time.perf_counter() - start, seed)
    return counts
