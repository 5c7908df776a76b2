"""The MURA v1.1 layout planner: header-less CSVs, per-study labels, RGB-stored PNGs, other study types, junk."""

from __future__ import annotations

import numpy as np

from fracture.synth.plan import ImageSpec, SourcePlan, assign_positive, count_images, csv_bytes, pick, sample_size

MURA_OTHER_TYPE = "XR_ELBOW"
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(58)


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
    rgb = pick(rng, range(n), max(1, round(0.08 * n)))  # indices among the wrist images
    specs: list[ImageSpec] = []
    paths: dict[str, list] = {"train": [], "valid": []}
    labels: dict[str, list] = {"train": [], "valid": []}
    n_wrist = 0
    for s in studies:
        labels[s["split"]].append([f"MURA-v1.1/{s['dir']}/", int(s["positive"])])
        for m in range(1, s["size"] + 1):
            rel = f"{s['dir']}/image{m}.png"
            paths[s["split"]].append([f"MURA-v1.1/{rel}"])
            h, w = sample_size(rng, sides, portrait=0.7)
            is_wrist = s["type"] == "XR_WRIST"
            kind = "rgb" if is_wrist and n_wrist in rgb else "png8"
            n_wrist += is_wrist
            specs.append(ImageSpec(rel, h, w, s["positive"], kind, len(specs), lateral=m == 2))
    texts = {}
    for split in ("train", "valid"):
        texts[f"{split}_image_paths.csv"] = csv_bytes(None, paths[split])
        texts[f"{split}_labeled_studies.csv"] = csv_bytes(None, labels[split])
    junk_dirs = [s["dir"] for s in studies if s["type"] == "XR_WRIST"][:2]
    texts.update({f"{d}/._image1.png": APPLEDOUBLE for d in junk_dirs})
    wrist = [sp for sp in specs if "/XR_WRIST/" in sp.rel_path]
    counts = {**count_images(wrist), "other_study_type": len(specs) - len(wrist), "junk_files": len(junk_dirs)}
    return SourcePlan(specs, texts, counts)
