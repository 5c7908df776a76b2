"""The GRAZPEDWRI-DX layout planner: `dataset.csv` (BOM, 17 columns, `1`-or-empty flags) and nested PNG folders."""

from __future__ import annotations

import numpy as np

from fracture.synth.plan import ImageSpec, SourcePlan, assign_positive, count_images, csv_bytes, pick, sample_size

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
LABELS_DIR = "folder_structure/yolov5/labels"  # the detection download's layout, inside the root here
LEGACY_AO_CHOICES = 9  # codes the planner once drew from the image stream; one such draw per coded study remains
# AO pediatric (PCCF) codes of a distal forearm, weights roughly as in children's wrist series (Joeris et al., Acta
# Orthop 2017: most distal forearm fractures metaphyseal and half of them incomplete; Salter-Harris II the commonest
# epiphyseal pattern), with physeal cases over-represented so that the demo's physeal task has positives.
AO_RADIUS = {
    "23r-M/2.1": 0.26,  # buckle / greenstick
    "23r-M/3.1": 0.12,
    "23-M/2.1": 0.05,  # both bones, same pattern: no r/u
    "23-M/3.1": 0.05,
    "23r-E/1.1": 0.06,  # Salter-Harris I
    "23r-E/2.1": 0.22,  # Salter-Harris II
    "23r-E/3.1": 0.05,
    "23r-E/4.1": 0.04,
    "23r-E/8.1": 0.03,  # flake: epiphyseal, not physeal
    "22r-D/2.1": 0.04,
    "22-D/4.1": 0.04,
    "23r-M/2.2": 0.04,
}
AO_ULNA = {"": 0.5, "23u-E/7": 0.38, "23u-M/2.1": 0.08, "23u-E/2.1": 0.04}  # ulnar styloid avulsion is common
AO_NOT_PCCF = ("72B(b)", "72A(a)")  # carpal (scaphoid) AO/OTA codes: parse, but not PCCF long-bone codes
AO_MALFORMED = ("23r-M/2.1 23u-E/7", "23r-M/2,1", "23r-E/2.1; 23u-E/7.7", "23r/M-3.1")


def _draw_ao_code(rng: np.random.Generator) -> str:
    """One plausible coded study: a radius (or both-bone) code, often with an ulnar one, as the dataset writes it."""
    codes = [str(rng.choice(list(AO_RADIUS), p=np.array(list(AO_RADIUS.values())) / sum(AO_RADIUS.values())))]
    ulna = str(rng.choice(list(AO_ULNA), p=list(AO_ULNA.values())))
    if ulna and not codes[0].startswith("23-") and not codes[0].startswith("22-"):
        codes.append(ulna)
    text = "; ".join(codes)
    return text.upper() if rng.random() < 0.03 else text  # a few hand-typed variants (case)


def _ao_codes(rng: np.random.Generator, coded: list[int]) -> dict[int, str]:
    """AO code text per coded study: plausible PCCF codes, and a few malformed, not-PCCF (carpal) or missing ones."""
    codes = {i: _draw_ao_code(rng) for i in coded}
    few = max(1, round(0.04 * len(coded)))
    for k, i in enumerate(sorted(pick(rng, coded, 3 * few))):
        if k % 3 == 0:
            codes[i] = AO_MALFORMED[int(rng.integers(len(AO_MALFORMED)))]
        elif k % 3 == 1:  # a carpal code beside the forearm ones
            codes[i] = f"{codes[i]}; {AO_NOT_PCCF[int(rng.integers(len(AO_NOT_PCCF)))]}"
        else:  # a fracture nobody coded
            codes[i] = ""
    return codes


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
        "metal": pick(rng, range(n), few),
        "diagnosis_uncertain": pick(rng, range(n), few),
        "osteopenia": pick(rng, range(n), few),
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
    return positive, {i: int(rng.integers(2)) for i in sorted(pick(rng, two_view, n_hidden))}


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
    proj3 = pick(rng, [i for i, s in enumerate(studies) if s[2] == 2], max(1, round(0.02 * n)))
    rows: list[dict] = []
    coded: dict[int, range] = {}  # coded study -> its rows
    for i, (p, number, views) in enumerate(studies):
        study = _kaggle_study(rng, patients[p], number, views)
        uncertain = i in flags["diagnosis_uncertain"]
        if positive[i] or (uncertain and rng.random() < 0.5):
            rng.integers(LEGACY_AO_CHOICES)  # the draw that once chose the code: every later draw stays put
            coded[i] = range(len(rows), len(rows) + views)
        study.update(positive=bool(positive[i]), hidden=hidden.get(i, -1), proj3={1} if i in proj3 else set(), ao="")
        rows += _kaggle_view_rows(rng, study, {name: i in members for name, members in flags.items()})
    # AO codes come from their own stream (spawned from the planner's seed), so the images stay as they were.
    ao_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
    for i, text in _ao_codes(ao_rng, list(coded)).items():
        for j in coded[i]:
            rows[j]["ao_classification"] = text
    return rows


def plan_kaggle(rng: np.random.Generator, n: int, positive_fraction: float, sides: tuple[int, int]) -> SourcePlan:
    """GRAZPEDWRI-DX: `dataset.csv` (BOM, 17 columns) + 16-bit PNGs in `images_part1..4` (the last one nested).

    Each image also gets its YOLO box file under `folder_structure/yolov5/labels/` (empty when nothing is boxed).
    """
    rows = _kaggle_table(rng, n, positive_fraction)
    specs = []
    for i, row in enumerate(rows):
        part = 1 + i * KAGGLE_PARTS // len(rows)
        folder = f"images_part{part}/images_part{part}" if part == KAGGLE_PARTS else f"images_part{part}"
        h, w = sample_size(rng, sides, portrait=1.0)
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
                labels=f"{LABELS_DIR}/{row['filestem']}.txt",
            )
        )
    table = csv_bytes(KAGGLE_COLUMNS, [[row[c] for c in KAGGLE_COLUMNS] for row in rows], bom=True)
    return SourcePlan(specs, {"dataset.csv": table}, count_images(specs))
