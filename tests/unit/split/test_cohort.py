"""Split's cohort tables: STARD flow counts add up, baseline characteristics match the split they describe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fracture.base.io import read_parquet, write_manifest
from fracture.contracts.schema import COPY_REASON
from fracture.split.cohort import ao_classes, baseline_table, flow_counts
from fracture.split.run import make_splits, run_split
from tests.unit.split.test_split import SOURCES, make_manifest

QUARANTINE = pd.DataFrame(
    {
        "source": ["kaggle", "kaggle", "mura", "hospital", "hospital", "hospital"],
        "path": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
        "reason": [
            "file missing",
            "file missing",
            "no label (study not listed)",
            "truncated (x)",
            "truncated (y)",
            "x",
        ],
        "code": ["file missing", "file missing", "no label", "truncated", "truncated", "unreadable file"],
    }
)


def _with_clinical_fields(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kaggle = (df["source"] == "kaggle").to_numpy()
    df["age"] = pd.array(np.where(rng.random(len(df)) < 0.1, np.nan, rng.uniform(2, 90, len(df))), dtype="Float64")
    df["cast"] = pd.array(np.where(kaggle, rng.random(len(df)) < 0.3, None), dtype="boolean")
    df["initial_exam"] = pd.array(np.where(kaggle, rng.random(len(df)) < 0.6, None), dtype="boolean")
    codes = rng.choice(["23r-M/3.1", "23r-M/2.1; 23u-E/7", None], len(df))
    df["ao_code"] = pd.array(np.where(kaggle, codes, None), dtype="string")
    return df


def _assert_flow_adds_up(flow: dict, splits: pd.DataFrame) -> None:
    for counts in [flow["total"], *flow["sources"].values()]:
        assert counts["candidates"] == counts["quarantined"] + counts["excluded"] + counts["included"]
        assert counts["accepted"] == counts["excluded"] + counts["included"]
        assert counts["quarantined"] == sum(counts["quarantined_by_reason"].values())
        assert counts["excluded"] == sum(counts["excluded_by_reason"].values())
        assert counts["included"] == sum(counts["included_by_split"].values())
    for name, entry in flow["splits"].items():
        assert entry["assigned"] == entry["excluded"] + entry["included"]
        assert entry["included"] == int((splits["split"] == name).sum())
    total = flow["total"]
    assert sum(s["candidates"] for s in flow["sources"].values()) == total["candidates"]
    copies_excluded = sum(v for k, v in total["excluded_by_reason"].items() if k.startswith(COPY_REASON))
    assert copies_excluded == flow["splits"]["val"]["excluded"] + flow["splits"]["test"]["excluded"]


@pytest.mark.parametrize("strategy", ["cross_domain", "kfold", "loso"])
def test_flow_counts_add_up(make_params, strategy: str) -> None:
    df = make_manifest(31, patients_per_source=20)
    splits = make_splits(df, make_params().split, strategy, 1, seed=2)
    flow = flow_counts(df, splits, QUARANTINE, strategy, 1)
    _assert_flow_adds_up(flow, splits)
    assert flow["total"]["candidates"] == len(df) + len(QUARANTINE)
    assert flow["total"]["quarantined_by_reason"] == {
        "file missing": 2,
        "no label": 1,
        "truncated": 2,
        "unreadable file": 1,
    }
    assert flow["sources"]["hospital"]["quarantined"] == 3
    assert flow["splits"]["val"]["excluded"] + flow["splits"]["test"]["excluded"] > 0  # planted copies
    assert flow["splits"]["train"]["excluded"] == 0 and not flow["splits"]["train"]["scored"]


def test_run_split_writes_flow_and_baseline_beside_splits(tmp_path, make_params) -> None:
    df = _with_clinical_fields(make_manifest(32, patients_per_source=20), 32)
    manifest = tmp_path / "ingest" / "manifest.parquet"
    manifest.parent.mkdir()
    write_manifest(df, manifest, {s: str(tmp_path / s) for s in SOURCES})
    QUARANTINE.to_csv(manifest.parent / "quarantine.csv", index=False)
    out = tmp_path / "split" / "splits.parquet"
    run_split(make_params(), manifest, out, strategy="cross_domain", fold=0)
    splits = read_parquet(out)
    flow = json.loads((out.parent / "flow.json").read_text())
    assert flow["quarantine_known"] and flow["strategy"] == "cross_domain"
    _assert_flow_adds_up(flow, splits)
    assert flow["total"]["candidates"] == len(df) + len(QUARANTINE)
    baseline = pd.read_csv(out.parent / "baseline.csv")
    images = baseline[(baseline["characteristic"] == "images") & (baseline["source"] == "all")].set_index("split")
    for name, count in splits["split"].value_counts().items():
        assert images.loc[name, "n"] == count


def test_flow_without_quarantine_file_says_so(tmp_path, make_params) -> None:
    df = make_manifest(33)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(df, manifest, {})
    out = tmp_path / "split" / "splits.parquet"
    run_split(make_params(), manifest, out, strategy="kfold", fold=0)
    flow = json.loads((out.parent / "flow.json").read_text())
    assert not flow["quarantine_known"]
    assert flow["total"]["candidates"] == flow["total"]["accepted"] == len(df)
    _assert_flow_adds_up(flow, read_parquet(out))


def test_baseline_matches_the_rows_of_each_split(make_params) -> None:
    df = _with_clinical_fields(make_manifest(34, patients_per_source=25), 34)
    splits = make_splits(df, make_params().split, "cross_domain", 0, seed=5)
    table = baseline_table(df, splits)
    test = df[(splits["split"] == "test").to_numpy()]
    rows = table[(table["split"] == "test") & (table["source"] == "all")]

    def get(characteristic: str, level: str, unit: str = "image") -> pd.Series:
        hit = rows[(rows["characteristic"] == characteristic) & (rows["level"] == level) & (rows["unit"] == unit)]
        assert len(hit) == 1, (characteristic, level, unit)
        return hit.iloc[0]

    assert get("images", "all")["n"] == len(test)
    assert get("patients", "all", "patient")["n"] == test["patient_id"].nunique()
    assert get("label", "fracture")["n"] == test["label"].sum()
    assert get("age", "median")["value"] == pytest.approx(float(np.median(test["age"].dropna())), abs=1e-3)
    assert get("age", "missing")["n"] == test["age"].isna().sum()
    assert get("cast", "yes")["n"] == test["cast"].sum()
    assert get("cast", "yes")["percent"] == pytest.approx(100 * test["cast"].mean(), abs=0.01)
    assert get("initial_exam", "no")["n"] == (test["initial_exam"] == False).sum()  # noqa: E712 - nullable
    assert get("ao_class", "23r-M")["n"] == test["ao_code"].notna().sum()
    assert get("ao_class", "23u-E")["n"] == test["ao_code"].eq("23r-M/2.1; 23u-E/7").sum()
    for characteristic, unit, total in (("sex", "image", len(test)), ("sex", "patient", test["patient_id"].nunique())):
        levels = rows[(rows["characteristic"] == characteristic) & (rows["unit"] == unit)]
        assert levels["n"].sum() == total and levels["percent"].sum() == pytest.approx(100, abs=0.1)
    train_mura = table[(table["split"] == "train") & (table["source"] == "mura")]
    assert "ao_class" not in set(train_mura["characteristic"])  # only where the source has AO codes
    assert set(table["split"]) == set(splits["split"])


def test_ao_classes_split_joined_codes() -> None:
    codes = pd.Series(["23r-M/3.1; 23u-E/7", None, "", "23r-E/2.1"], dtype="string")
    assert ao_classes(codes) == [{"23r-M", "23u-E"}, set(), set(), {"23r-E"}]
