"""Label corrections from the clinical review: the corrections file's contract and applying it to a manifest.

The review app exports the "label looks wrong" verdicts as a CSV with `CORRECTION_COLUMNS` (one row per image and
reviewer). `read_corrections` checks it (labels 0/1, one new label per image: reviewers who disagree about an
image must settle it first), and `apply_corrections` sets the new labels with `label_source = "review"`,
refusing a correction whose old label is no longer the manifest's (the file is stale).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from fracture.base.errors import InputError

CORRECTION_COLUMNS = ("image_id", "old_label", "new_label", "reviewer", "reason")
LABEL_SOURCE = "review"


def corrections_from_verdicts(verdicts: Iterable[Mapping], labels: Mapping[str, int]) -> pd.DataFrame:
    """The corrections of the current verdicts that flag a label (`label_wrong` with a different suggestion)."""
    rows = [
        {"image_id": v["image_id"], "old_label": int(labels[v["image_id"]]), "new_label": int(v["suggested_label"]),
         "reviewer": v["reviewer"], "reason": v.get("note") or ""}
        for v in verdicts
        if v.get("label_wrong") and v.get("suggested_label") is not None and v["image_id"] in labels
        and int(v["suggested_label"]) != int(labels[v["image_id"]])
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(CORRECTION_COLUMNS))


def read_corrections(path: Path) -> pd.DataFrame:
    """Read and check a corrections file.

    Raises:
        InputError: naming the file and the problem (missing column, a label not 0/1, conflicting new labels).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "reviewer": str, "reason": str}, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: cannot read the corrections file ({err})") from None
    missing = [c for c in CORRECTION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    for column in ("old_label", "new_label"):
        if not table[column].isin([0, 1]).all():
            raise InputError(f"{path}: {column} must be 0 or 1")
    if (table["old_label"] == table["new_label"]).any():
        raise InputError(f"{path}: a row's new_label equals its old_label (not a correction)")
    conflicts = table.groupby("image_id")["new_label"].nunique()
    if (conflicts > 1).any():
        raise InputError(f"{path}: reviewers disagree on the new label of {conflicts[conflicts > 1].index[0]}")
    return table[list(CORRECTION_COLUMNS)]


def apply_corrections(manifest: pd.DataFrame, corrections: pd.DataFrame, source: str) -> tuple[pd.DataFrame, int]:
    """The manifest with the corrected labels (label_source "review") and how many images changed.

    Raises:
        InputError: a corrected image is not in the manifest, or its old label is not the manifest's (stale file).
    """
    first = corrections.drop_duplicates("image_id").set_index("image_id")
    ids = manifest["image_id"].astype(str)
    unknown = sorted(set(first.index) - set(ids))
    if unknown:
        raise InputError(f"{source}: image {unknown[0]} is not in the manifest ({len(unknown)} unknown)")
    hit = ids.isin(first.index).to_numpy()
    current = manifest.loc[hit, "label"].astype(int).to_numpy()
    expected = first.loc[ids[hit], "old_label"].astype(int).to_numpy()
    if (current != expected).any():
        raise InputError(f"{source}: old labels no longer match the manifest (a stale corrections file)")
    out = manifest.copy()
    out.loc[hit, "label"] = first.loc[ids[hit], "new_label"].to_numpy().astype(out["label"].dtype)
    out.loc[hit, "label_source"] = LABEL_SOURCE
    return out, int(hit.sum())
