"""Split step: no patient or augmented group straddles splits, stratification, determinism, cohort policy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fracture.base.errors import InputError
from fracture.base.io import read_parquet, write_manifest
from fracture.cli import app
from fracture.config import dump_params
from fracture.contracts.schema import COPY_REASON, SPLIT_COLUMNS, coerce_manifest, copy_exclusion_reason
from fracture.split.run import (
    exclusion_reasons,
    group_components,
    make_splits,
    resolve_strategy,
    run_split,
    summarise_splits,
)
from tests.conftest import manifest_row

SOURCES = ("hospital", "kaggle", "mura")


def _row(source: str, path: str, patient: str, label: int, group: str | None = None, **extra) -> dict:
    row = manifest_row(source, path, label, f"{source}:{patient}", study_id=f"{source}:{patient}/s1")
    return {**row, "group_id": group or row["image_id"], **extra}


def make_manifest(seed: int, patients_per_source: int = 14, sources=SOURCES, flag_rate: float = 0.05) -> pd.DataFrame:
    """Random manifest: 1-4 images per patient, augmented copies in hospital, some cross-patient groups."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in sources:
        for p in range(patients_per_source):
            label_p = rng.random() < 0.45
            for k in range(int(rng.integers(1, 5))):
                label = int(label_p if rng.random() < 0.8 else not label_p)
                flags = {f: bool(rng.random() < flag_rate) for f in ("metal", "diagnosis_uncertain")}
                sex = str(rng.choice(["M", "F", "O"], p=[0.48, 0.48, 0.04]))
                projection = str(rng.choice(["ap_pa", "lateral", "other"], p=[0.5, 0.45, 0.05]))
                base = _row(source, f"p{p}/img{k}.png", f"pt{p:03d}", label, sex=sex, projection=projection, **flags)
                base["source_split"] = ("valid" if p % 5 == 0 else "train") if source == "mura" else None
                rows.append(base)
                if source == "hospital" and rng.random() < 0.3:  # offline-augmented copies share group_id
                    group = f"hospital:radius/p{p}_img{k}"
                    base["group_id"] = group
                    if rng.random() < 0.2:  # the original file is missing: only its copies are in the manifest
                        rows.pop()
                    for c in range(int(rng.integers(1, 4))):
                        copy = _row(source, f"p{p}/img{k}_{c}.png", f"pt{p:03d}", label, group=group)
                        rows.append({**copy, "augmented_from": group})
    df = pd.DataFrame(rows)
    # Link a few groups across patients (same image re-filed under another patient): must merge both patients.
    hosp = df.index[df["source"] == "hospital"].to_numpy()
    for a, b in rng.choice(hosp, size=(2, 2), replace=False) if len(hosp) >= 4 else []:
        df.loc[b, "group_id"] = df.loc[a, "group_id"]
    return coerce_manifest(df)


def _assert_no_leak(df: pd.DataFrame, splits: pd.DataFrame) -> None:
    joined = df[["image_id", "patient_id", "group_id"]].merge(splits, on="image_id")
    used = joined[joined["split"] != "excluded"]
    for key in ("patient_id", "group_id"):
        per_key = used.groupby(key)["split"].nunique()
        assert per_key.max() == 1, f"{key} in several splits: {list(per_key[per_key > 1].index)[:5]}"


def _assert_complete(df: pd.DataFrame, splits: pd.DataFrame) -> None:
    assert list(splits.columns) == list(SPLIT_COLUMNS)
    assert len(splits) == len(df)
    assert splits["image_id"].is_unique
    assert set(splits["image_id"]) == set(df["image_id"])
    assert set(splits["split"]) <= {"train", "val", "test", "excluded"}
    assert splits.loc[splits["split"] == "excluded", "reason"].notna().all()
    assert splits.loc[splits["split"] != "excluded", "reason"].isna().all()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), strategy=st.sampled_from(["cross_domain", "kfold", "loso"]))
def test_no_patient_or_group_in_two_splits(make_params, seed: int, strategy: str) -> None:
    sp = make_params().split
    df = make_manifest(seed)
    folds = {"cross_domain": [0], "kfold": range(sp.n_folds), "loso": range(len(SOURCES))}[strategy]
    for fold in folds:
        splits = make_splits(df, sp, strategy, fold, seed=seed % 1000)
        _assert_complete(df, splits)
        _assert_no_leak(df, splits)
        assert {"train", "val", "test"} <= set(splits["split"])


def test_group_components_merge_patients_linked_by_group_id() -> None:
    df = coerce_manifest(
        pd.DataFrame(
            [
                _row("hospital", "a.png", "p1", 1, group="g1"),
                _row("hospital", "a_0.png", "p2", 1, group="g1"),  # copy filed under another patient
                _row("hospital", "b.png", "p2", 0),
                _row("hospital", "c.png", "p3", 0),
            ]
        )
    )
    comp = group_components(df)
    assert comp.iloc[0] == comp.iloc[1] == comp.iloc[2]
    assert comp.iloc[3] != comp.iloc[0]


def test_cross_domain_uses_sources_and_patients(make_params) -> None:
    sp = make_params().split  # train mura+hospital, test kaggle
    df = make_manifest(3, patients_per_source=20, flag_rate=0.0)
    df["sex"], df["projection"] = "F", "ap_pa"
    splits = make_splits(df, sp, "cross_domain", 0, seed=42)
    by_source = df[["source"]].assign(split=splits["split"].to_numpy())[df["augmented_from"].isna().to_numpy()]
    assert set(by_source.loc[by_source["source"] == "kaggle", "split"]) == {"test"}
    assert set(by_source.loc[by_source["source"] != "kaggle", "split"]) == {"train", "val"}
    val_share = (splits["split"] == "val").sum() / (splits["split"].isin(["train", "val"])).sum()
    assert 0.1 < val_share < 0.4  # val_fraction 0.25 by patient groups


def test_stratification_roughly_holds(make_params) -> None:
    sp = make_params().split
    df = make_manifest(11, patients_per_source=60, flag_rate=0.0)
    overall = df["label"].mean()
    for strategy in ("kfold", "cross_domain"):
        splits = make_splits(df, sp, strategy, 0, seed=7)
        for name in ("train", "val") if strategy == "cross_domain" else ("train", "val", "test"):
            prev = df.loc[(splits["split"] == name).to_numpy(), "label"].mean()
            ref = overall if strategy == "kfold" else df.loc[df["source"] != "kaggle", "label"].mean()
            assert abs(prev - ref) < 0.08, (strategy, name, prev, ref)


def test_same_seed_same_splits_other_seed_differs(make_params) -> None:
    sp = make_params().split
    df = make_manifest(5, patients_per_source=25)
    a = make_splits(df, sp, "kfold", 1, seed=42)
    b = make_splits(df, sp, "kfold", 1, seed=42)
    c = make_splits(df, sp, "kfold", 1, seed=43)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_row_order_does_not_change_assignment(make_params) -> None:
    sp = make_params().split
    df = make_manifest(8, patients_per_source=25)
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    for strategy in ("kfold", "cross_domain", "loso"):
        a = make_splits(df, sp, strategy, 1, seed=42).set_index("image_id").sort_index()
        b = make_splits(shuffled, sp, strategy, 1, seed=42).set_index("image_id").sort_index()
        pd.testing.assert_frame_equal(a, b)


def test_exclusions_carry_reasons_and_rows_are_kept(make_params) -> None:
    rows = [_row("kaggle", f"k{i}.png", f"k{i}", i % 2) for i in range(12)]
    rows[0].update(metal=True)
    rows[1].update(metal=True, sex="O")
    rows[2].update(diagnosis_uncertain=True)
    rows[3].update(projection="other")
    rows[4].update(metal=False, diagnosis_uncertain=None, sex="M", projection="lateral")
    df = coerce_manifest(pd.DataFrame(rows))
    params = make_params()
    reasons = exclusion_reasons(df, params.split.exclude)
    assert reasons.iloc[:5].tolist() == ["metal", "metal; sex O", "diagnosis_uncertain", "projection other", pd.NA]
    off = make_params({"split": {"exclude": {"metal": False, "sex_other": False}}}).split.exclude
    assert exclusion_reasons(df, off).iloc[:2].isna().all()

    big = make_manifest(2, patients_per_source=15, flag_rate=0.2)
    splits = make_splits(big, params.split, "kfold", 0, seed=1)
    _assert_complete(big, splits)
    excluded = splits["split"] == "excluded"
    assert excluded.any()
    expected = exclusion_reasons(big, params.split.exclude)
    by_policy = (excluded & ~splits["reason"].str.startswith(COPY_REASON)).to_numpy()
    assert splits.loc[by_policy, "reason"].tolist() == expected[by_policy].tolist()
    assert expected[excluded.to_numpy() & ~by_policy].isna().all()  # the rest: augmented copies, nothing else
    assert splits.loc[excluded, "fold"].isna().all()
    assert splits.loc[~excluded, "fold"].notna().all()


def test_sources_outside_cross_domain_are_excluded_with_reason(make_params) -> None:
    sp = make_params({"split": {"train_sources": ["mura"], "test_sources": ["kaggle"]}}).split
    df = make_manifest(4, flag_rate=0.0)
    df["sex"], df["projection"] = "M", "lateral"
    splits = make_splits(df, sp, "cross_domain", 0, seed=42)
    hosp = (df["source"] == "hospital").to_numpy()
    assert set(splits.loc[hosp, "split"]) == {"excluded"}
    assert splits.loc[hosp, "reason"].str.contains("source hospital not in split.train_sources").all()


def test_loso_holds_out_the_indexed_source(make_params) -> None:
    sp = make_params().split
    df = make_manifest(6)
    for fold, source in enumerate(sorted(SOURCES)):
        splits = make_splits(df, sp, "loso", fold, seed=42)
        test_sources = set(df.loc[(splits["split"] == "test").to_numpy(), "source"])
        assert test_sources == {source}
    with pytest.raises(InputError, match="loso.*fold 3 out of range"):
        make_splits(df, sp, "loso", 3, seed=42)


def test_empty_split_is_a_clear_error(make_params) -> None:
    sp = make_params().split
    df = make_manifest(1, sources=("mura", "hospital"))
    with pytest.raises(InputError, match=r"'cross_domain'.*test_sources \['kaggle'\].*leaves test empty"):
        make_splits(df, sp, "cross_domain", 0, seed=42)
    with pytest.raises(InputError, match="kfold.*n_folds=5"):
        make_splits(make_manifest(1, patients_per_source=1, sources=("kaggle", "mura")), sp, "kfold", 0, seed=42)


def test_groups_spanning_sources_are_refused(make_params) -> None:
    df = make_manifest(9)
    df.loc[df.index[df["source"] == "kaggle"][0], "patient_id"] = df.loc[
        df.index[df["source"] == "mura"][0], "patient_id"
    ]
    with pytest.raises(InputError, match="span several sources"):
        make_splits(df, make_params().split, "cross_domain", 0, seed=42)


def test_resolve_strategy_overrides_and_validates(make_params) -> None:
    sp = make_params().split
    assert resolve_strategy(sp, None, None) == (sp.strategy, sp.fold)
    assert resolve_strategy(sp, "kfold", 3) == ("kfold", 3)
    with pytest.raises(InputError, match="unknown split strategy 'random'"):
        resolve_strategy(sp, "random", None)
    with pytest.raises(InputError, match="fold 5 out of range"):
        resolve_strategy(sp, "kfold", 5)


def test_summary_counts_match_splits(make_params) -> None:
    df = make_manifest(12)
    splits = make_splits(df, make_params().split, "cross_domain", 0, seed=42)
    summary = summarise_splits(df, splits)
    totals = summary[summary["source"] == "all"].set_index("split")
    for name, count in splits["split"].value_counts().items():
        assert totals.loc[name, "images"] == count
        members = df.loc[(splits["split"] == name).to_numpy()]
        assert totals.loc[name, "patients"] == members["patient_id"].nunique()
        assert totals.loc[name, "positives"] == members["label"].sum()
        assert totals.loc[name, "prevalence"] == pytest.approx(members["label"].mean(), abs=1e-4)
    per_source = summary[summary["source"] != "all"]
    assert per_source["images"].sum() == len(df)


def test_run_split_writes_artifacts(tmp_path, make_params) -> None:
    df = make_manifest(21)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(df, manifest, {s: str(tmp_path / s) for s in SOURCES})
    out = tmp_path / "split" / "splits.parquet"
    report = run_split(make_params(), manifest, out, strategy="kfold", fold=2)
    splits = read_parquet(out)
    _assert_complete(df, splits.astype(SPLIT_COLUMNS))
    assert {str(c): str(t) for c, t in splits.dtypes.items()} == SPLIT_COLUMNS
    on_disk = json.loads((out.parent / "split_summary.json").read_text())
    assert on_disk == report
    assert (on_disk["strategy"], on_disk["fold"], on_disk["seed"]) == ("kfold", 2, 42)
    assert set(on_disk["rows"][0]) == {"split", "source", "images", "patients", "positives", "prevalence"}
    csv = pd.read_csv(out.parent / "split_summary.csv")
    assert len(csv) == len(on_disk["rows"])
    assert "strategy: kfold" in (out.parent / "params.yaml").read_text()


def test_cli_split_exit_codes(tmp_path, make_params) -> None:
    params_path = tmp_path / "params.yaml"
    dump_params(make_params(), params_path)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(make_manifest(30, sources=("mura", "hospital")), manifest, {})
    out = tmp_path / "splits.parquet"
    base = ["split", "--manifest", str(manifest), "--out", str(out), "--params", str(params_path)]
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--strategy", "random"])
    assert bad.exit_code == 2 and "unknown split strategy 'random'" in bad.output
    empty = runner.invoke(app, base)  # cross_domain, but no kaggle rows
    assert empty.exit_code == 2 and "leaves test empty" in empty.output
    assert not out.exists()
    ok = runner.invoke(app, [*base, "--strategy", "loso", "--fold", "1"])
    assert ok.exit_code == 0, ok.output
    assert out.exists()


def test_demo_manifest_splits_without_leaks(demo_manifest, params) -> None:
    """The real synth -> ingest chain (hospital augmented copies included) splits cleanly under every strategy."""
    df = pd.read_parquet(demo_manifest)
    for strategy, fold in (("cross_domain", 0), ("kfold", 0), ("loso", 2)):
        splits = make_splits(df, params.split, strategy, fold, seed=params.base.seed)
        _assert_complete(df, splits)
        _assert_no_leak(df, splits)


def _assert_copies_follow_their_group(df: pd.DataFrame, splits: pd.DataFrame) -> None:
    """No copy in val/test; a copy is in train with its group or excluded naming the split its group got."""
    is_copy = df["augmented_from"].notna().to_numpy()
    assert not splits.loc[is_copy, "split"].isin(["val", "test"]).any()
    originals = splits[~is_copy & (splits["split"] != "excluded").to_numpy()]
    group_split = originals.groupby("cluster_id")["split"].first()
    for _, copy in splits[is_copy].iterrows():
        if copy["cluster_id"] not in group_split:
            continue  # the group's originals are absent or excluded by the cohort policy
        placed = group_split[copy["cluster_id"]]
        if placed == "train":
            assert copy["split"] == "train"
        elif copy["split"] == "excluded" and str(copy["reason"]).startswith(COPY_REASON):
            assert copy["reason"] == copy_exclusion_reason(placed)


@pytest.mark.parametrize("mura_valid", ["pool", "val", "test"])
def test_augmented_copies_never_in_val_or_test_under_any_strategy(make_params, mura_valid: str) -> None:
    sp = make_params({"split": {"mura_valid": mura_valid}}).split
    for seed in range(4):
        df = make_manifest(seed, patients_per_source=16)
        assert df["augmented_from"].notna().sum() > 5
        for strategy, folds in (("cross_domain", [0]), ("kfold", range(sp.n_folds)), ("loso", range(3))):
            for fold in folds:
                splits = make_splits(df, sp, strategy, fold, seed=seed)
                _assert_complete(df, splits)
                _assert_no_leak(df, splits)
                _assert_copies_follow_their_group(df, splits)


def test_copies_of_an_absent_original_share_one_split_and_cluster(make_params) -> None:
    rows = [_row("hospital", f"h{i}.png", f"h{i}", i % 2) for i in range(30)]
    group = "hospital:radius/nega_1000"  # nega_1000.png itself is missing
    for k in range(2):  # two copies with no patient id of their own: ingest gave them the group's fallback patient
        rows.append({**_row("hospital", f"nega_1000_{k}.png", "fallback-g", 0, group=group), "augmented_from": group})
    rows += [_row("kaggle", f"k{i}.png", f"k{i}", i % 2) for i in range(10)]
    df = coerce_manifest(pd.DataFrame(rows))
    for seed in range(20):
        splits = make_splits(df, make_params().split, "cross_domain", 0, seed=seed)
        copies = splits.iloc[30:32]
        assert copies["cluster_id"].nunique() == 1
        assert copies["split"].nunique() == 1 and copies["reason"].nunique(dropna=False) == 1
        assert set(copies["split"]) <= {"train", "excluded"}


def test_cluster_id_is_the_leakage_group(make_params) -> None:
    rows = [
        _row("hospital", "a.png", "p1", 1, group="g1"),
        _row("hospital", "a_0.png", "p2", 1, group="g1"),  # the same image filed under p2 links p1 and p2
        _row("hospital", "b.png", "p2", 0),
        _row("hospital", "c.png", "p3", 0),
        _row("hospital", "d.png", "p3", 1),
    ]
    rows += [_row(s, f"x{i}.png", f"x{i}", i % 2) for s in ("hospital", "kaggle") for i in range(12)]
    df = coerce_manifest(pd.DataFrame(rows))
    splits = make_splits(df, make_params().split, "cross_domain", 0, seed=1)
    assert str(splits["cluster_id"].dtype) == "string" and splits["cluster_id"].notna().all()
    assert splits["cluster_id"].iloc[0] == splits["cluster_id"].iloc[1] == splits["cluster_id"].iloc[2]
    assert splits["cluster_id"].iloc[3] == splits["cluster_id"].iloc[4] != splits["cluster_id"].iloc[0]
    assert splits["cluster_id"].nunique() == 2 + 24
    big = make_manifest(4)
    big_splits = make_splits(big, make_params().split, "kfold", 0, seed=4)
    joined = big[["patient_id", "group_id"]].assign(cluster_id=big_splits["cluster_id"].to_numpy())
    for key in ("patient_id", "group_id"):
        assert joined.groupby(key)["cluster_id"].nunique().max() == 1
    used = big_splits[big_splits["split"] != "excluded"]
    assert used.groupby("cluster_id")["split"].nunique().max() == 1


@pytest.mark.parametrize("strategy", ["cross_domain", "kfold", "loso"])
def test_mura_valid_option_places_the_official_valid_set(make_params, strategy: str) -> None:
    df = make_manifest(13, patients_per_source=20, flag_rate=0.0)
    df["sex"], df["projection"] = "F", "ap_pa"
    mura = (df["source"] == "mura").to_numpy()
    official = mura & df["source_split"].eq("valid").fillna(False).to_numpy(dtype=bool)
    for target in ("val", "test"):
        sp = make_params({"split": {"mura_valid": target}}).split
        splits = make_splits(df, sp, strategy, 0, seed=3)  # loso fold 0 holds out hospital: MURA trains
        assert set(splits.loc[official, "split"]) == {target}
        if target == "val":  # MURA's own split decides every MURA row
            assert set(splits.loc[mura & ~official, "split"]) == {"train"}
        else:  # MURA's train rows still give val images under cross_domain and loso
            assert target not in set(splits.loc[mura & ~official, "split"]) or strategy == "kfold"
    pooled = make_splits(df, make_params().split, strategy, 0, seed=3)
    assert len(set(pooled.loc[official, "split"])) > 1  # pool: MURA's valid set is split like any other rows


def test_mura_valid_leaves_a_held_out_mura_whole(make_params) -> None:
    df = make_manifest(14, flag_rate=0.0)
    sp = make_params({"split": {"mura_valid": "val"}}).split
    splits = make_splits(df, sp, "loso", sorted(SOURCES).index("mura"), seed=3)
    assert set(splits.loc[(df["source"] == "mura").to_numpy() & (splits["reason"].isna()).to_numpy(), "split"]) == {
        "test"
    }
