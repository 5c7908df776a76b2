"""Column contracts of the artifacts that steps exchange; this module is their one owner."""

from __future__ import annotations

import pandas as pd

from fracture.base.errors import InputError

# name -> pandas dtype. Nullable dtypes where a source may not know the value.
MANIFEST_COLUMNS: dict[str, str] = {
    "image_id": "string",
    "source": "string",
    "path": "string",
    "patient_id": "string",
    "study_id": "string",
    "label": "int8",
    "label_source": "string",
    "body_part": "string",
    "age": "Float64",
    "sex": "string",
    "projection": "string",
    "ao_code": "string",  # GRAZPEDWRI-DX `ao_classification` as written (stripped)
    # Parsed by fracture.sources.ao (GRAZPEDWRI-DX rows; null elsewhere): the codes that parsed, normalised and
    # `;`-joined; the row's parse status (none | ok | not_pccf | malformed); and the image's AO targets, known only
    # for a visible fracture whose codes are all PCCF: growth plate involved (E/1-E/6), Salter-Harris types
    # (`II;IV`, "" = none).
    "ao_codes": "string",
    "ao_status": "string",
    "physeal": "boolean",
    "salter_harris": "string",
    "initial_exam": "boolean",
    "cast": "boolean",
    "metal": "boolean",
    "diagnosis_uncertain": "boolean",
    "osteopenia": "boolean",
    "source_split": "string",
    "group_id": "string",
    "augmented_from": "string",  # an offline-augmented copy's original (its group key); null for originals
    "width": "int32",
    "height": "int32",
    "bit_depth": "int8",
    "sha256": "string",
}

# `ao_status` per GRAZPEDWRI-DX row: blank cell, every code PCCF, some code not PCCF (none malformed), some malformed.
AO_STATUSES = ("none", "ok", "not_pccf", "malformed")

QUARANTINE_COLUMNS = ("source", "path", "reason", "code")  # code: the reason's stable category (flow counts)

# cluster_id: the leakage group the split keeps whole (connected patient_id / group_id component); the bootstrap
# resamples it, so one value per group and never shared by two groups.
SPLIT_COLUMNS: dict[str, str] = {
    "image_id": "string",
    "split": "string",
    "fold": "Int8",
    "reason": "string",
    "cluster_id": "string",
}
SPLITS = ("train", "val", "test", "excluded")
COPY_REASON = "augmented_copy"  # splits.parquet reason of an augmented copy kept out of val/test


def copy_exclusion_reason(split: str) -> str:
    """The splits.parquet reason of an augmented copy whose group landed in `split` (val or test)."""
    return f"{COPY_REASON} (group in {split})"


SEXES = ("M", "F", "O")


def empty_manifest() -> pd.DataFrame:
    """A zero-row manifest with the right dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MANIFEST_COLUMNS.items()})


def coerce_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Order and type the manifest columns; raise naming the missing ones."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"manifest is missing columns: {', '.join(missing)}")
    return df[list(MANIFEST_COLUMNS)].astype(MANIFEST_COLUMNS).reset_index(drop=True)
