"""The hospital layout planner: PNG, JPEG and DICOM per part and label, augmented copies, a partial `metadata.csv`."""

from __future__ import annotations

import numpy as np

from fracture.synth.plan import ImageSpec, SourcePlan, assign_positive, count_images, csv_bytes, pick, sample_size

HOSPITAL_PARTS = ("radius", "scaphoid_set", "styloid")  # `_set` suffix on purpose: ingest must strip it


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
    missing = pick(rng, range(len(plain)), max(1, round(0.1 * len(plain))))
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
    return csv_bytes(("path", "patient_id", "age", "sex"), sorted(rows))


def plan_hospital(rng: np.random.Generator, n: int, positive_fraction: float, sides: tuple[int, int]) -> SourcePlan:
    """hospital/<part>/{positive,negative}/...: PNG, JPEG, two DICOMs, augmented copies, partial metadata.csv."""
    units = _hospital_units(rng, n)
    positive = assign_positive(rng, [1 + u["copies"] for u in units], round(n * positive_fraction))
    _hospital_names(rng, units, positive)
    specs = []
    for i, (unit, pos) in enumerate(zip(units, positive, strict=True)):
        h, w = sample_size(rng, sides, portrait=0.5)
        specs.append(ImageSpec(unit["path"], h, w, bool(pos), unit["kind"], i, copies=unit.get("copy_paths", ())))
    counts = {
        **count_images(specs),
        "dicom": sum(s.kind.startswith("dcm") for s in specs),
        "augmented_copies": sum(len(s.copies) for s in specs),
    }
    return SourcePlan(specs, {"metadata.csv": _hospital_metadata(rng, units)}, counts)
