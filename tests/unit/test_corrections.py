"""Clinical-review label corrections through ingest: labels change with `label_source: review`, the summary counts
them, no image changes split, and a corrected test label makes a new test-set fingerprint."""

from __future__ import annotations

import pandas as pd

from fracture.base.io import read_manifest, read_parquet
from fracture.registry.compare import fingerprint_test_set


def test_corrections_change_labels_but_never_splits(tmp_path, params, demo_raw, demo_manifest, demo_splits):
    from fracture.ingest import run_ingest
    from fracture.split.run import run_split

    before, _ = read_manifest(demo_manifest)
    splits = read_parquet(demo_splits).set_index("image_id")["split"]
    picked = [before[before["image_id"].map(splits) == s].iloc[0] for s in ("test", "train")]
    corrections = pd.DataFrame([
        {"image_id": r["image_id"], "old_label": int(r["label"]), "new_label": 1 - int(r["label"]),
         "reviewer": "alice", "reason": "re-read"} for r in picked
    ])  # fmt: skip
    path = tmp_path / "corrections.csv"
    corrections.to_csv(path, index=False)
    summary = run_ingest(params, tmp_path / "ingest", kaggle_dir=demo_raw / "GRAZPEDWRI-DX",
                         mura_dir=demo_raw / "MURA-v1.1", hospital_dir=demo_raw / "hospital",
                         label_corrections=path)  # fmt: skip
    assert summary["label_corrections"] == 2
    after, _ = read_manifest(tmp_path / "ingest" / "manifest.parquet")
    merged = before.merge(after, on="image_id", suffixes=("_old", "_new"))
    changed = merged[merged["label_old"] != merged["label_new"]]
    assert sorted(changed["image_id"]) == sorted(corrections["image_id"])
    assert set(changed["label_source_new"]) == {"review"}

    run_split(params, tmp_path / "ingest" / "manifest.parquet", tmp_path / "splits.parquet")
    new_splits = read_parquet(tmp_path / "splits.parquet").set_index("image_id")["split"]
    assert new_splits.sort_index().equals(splits.sort_index())  # no image moved

    def test_fingerprint(manifest: pd.DataFrame) -> str:
        return fingerprint_test_set(manifest[manifest["image_id"].map(splits) == "test"])

    assert test_fingerprint(after) != test_fingerprint(before)
