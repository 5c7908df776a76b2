"""Tasks (`base.task`): the physeal target, its split, and a backbone started from another model without leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fracture.base.errors import InputError
from fracture.base.io import read_parquet, write_manifest
from fracture.contracts.schema import coerce_manifest
from fracture.contracts.tasks import TASK_REASON, apply_task, check_split_classes, patient_hashes, task_reasons
from fracture.evaluate.run import model_task
from fracture.model.core import build_model, read_state_dict
from fracture.serving.predict import decide
from fracture.sources.ao import ao_fields
from fracture.split.run import run_split
from fracture.train.init import PATIENTS_KEY, check_no_leak, init_backbone, read_init_source, set_backbone_frozen
from fracture.train.loader import select_rows
from tests.conftest import manifest_row, write_model_dir


def kaggle_row(patient: int, view: int, cell: str, visible: bool, **extra) -> dict:
    path = f"{patient:04d}_{view}.png"
    return manifest_row(
        "kaggle", path, int(visible), f"kaggle:{patient:04d}", ao_code=cell or None, **ao_fields(cell, visible), **extra
    )


def test_physeal_target_and_the_reason_for_every_row_outside_it() -> None:
    rows = [
        kaggle_row(1, 0, "23r-E/2.1; 23u-E/7", True),  # Salter-Harris II: physeal
        kaggle_row(2, 0, "23r-M/2.1; 23u-E/7", True),  # buckle + styloid avulsion: not physeal
        kaggle_row(3, 0, "23r-E/2.1", False),  # coded for the study, not visible here
        kaggle_row(4, 0, "", True),  # visible, uncoded: unknown
        kaggle_row(5, 0, "72B(b)", True),
        kaggle_row(6, 0, "23r-E/2.x", True),
        manifest_row("mura", "p/1.png", 1),
    ]
    df = coerce_manifest(pd.DataFrame(rows))
    reasons = task_reasons(df, "physeal").tolist()
    assert reasons[:2] == [pd.NA, pd.NA]
    assert reasons[2:] == [
        "task physeal: no visible fracture",
        "task physeal: fracture without an AO code (target unknown)",
        "task physeal: AO code not PCCF (target unknown)",
        "task physeal: AO code malformed (target unknown)",
        "task physeal: source has no AO codes",
    ]
    seen = apply_task(df, "physeal")
    assert seen["label"].tolist()[:2] == [1, 0] and seen["label"].dtype == df["label"].dtype
    fracture = apply_task(df, "fracture")
    assert fracture["label"].tolist() == df["label"].tolist() and fracture[TASK_REASON].isna().all()


def physeal_manifest(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """Kaggle patients with two views each: about a third physeal, some normal, some uncoded; plus MURA rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        kind = rng.choice(["physeal", "other", "normal", "uncoded"], p=[0.35, 0.35, 0.2, 0.1])
        cell = {"physeal": "23r-E/2.1", "other": "23r-M/2.1; 23u-E/7", "normal": "", "uncoded": ""}[kind]
        for view in range(2):
            rows.append(kaggle_row(p, view, cell, kind != "normal"))
    rows += [manifest_row("mura", f"p{i}/1.png", i % 2) for i in range(10)]
    return coerce_manifest(pd.DataFrame(rows))


def test_physeal_split_is_patient_grouped_kfold_with_both_classes_in_every_split(tmp_path, make_params) -> None:
    df = physeal_manifest()
    write_manifest(df, tmp_path / "manifest.parquet", {})
    params = make_params({"base": {"task": "physeal"}, "split": {"strategy": "kfold"}})
    report = run_split(params, tmp_path / "manifest.parquet", tmp_path / "splits.parquet")
    splits = read_parquet(tmp_path / "splits.parquet").merge(df, on="image_id")
    inside = splits["split"] != "excluded"
    assert set(splits.loc[inside, "source"]) == {"kaggle"} and splits.loc[inside, "label"].eq(1).all()
    assert splits.groupby("patient_id")["split"].nunique().max() == 1
    target = splits["physeal"].astype("boolean")
    for name in ("train", "val", "test"):
        assert set(target[splits["split"] == name]) == {True, False}, name
    assert report["task"] == "physeal"
    assert report["exclusions"]["task physeal: no visible fracture"] == int(
        ((df["label"] == 0) & (df["source"] == "kaggle")).sum()
    )


def test_tasks_other_than_fracture_refuse_a_cross_domain_split(tmp_path, make_params) -> None:
    write_manifest(physeal_manifest(), tmp_path / "manifest.parquet", {})
    params = make_params({"base": {"task": "physeal"}, "split": {"strategy": "cross_domain"}})
    with pytest.raises(InputError, match="kfold"):
        run_split(params, tmp_path / "manifest.parquet", tmp_path / "splits.parquet")


def test_a_split_without_positives_is_refused_naming_it() -> None:
    splits = pd.DataFrame({"split": ["train", "train", "val", "val", "test", "test"]})
    with pytest.raises(InputError, match="the test split has 0 positive and 2 negative"):
        check_split_classes(splits, pd.Series([1, 0, 1, 0, 0, 0]), "physeal")


def test_training_refuses_splits_made_for_another_task(tmp_path, make_params) -> None:
    df = physeal_manifest()
    write_manifest(df, tmp_path / "manifest.parquet", {})
    run_split(make_params({"split": {"strategy": "kfold"}}), tmp_path / "manifest.parquet", tmp_path / "s.parquet")
    seen = apply_task(df, "physeal")
    seen.attrs["task"] = "physeal"
    with pytest.raises(InputError, match=r"outside task 'physeal'.*rerun `fracture split` with base.task: physeal"):
        select_rows(seen, read_parquet(tmp_path / "s.parquet"), tmp_path / "s.parquet")


def test_a_backbone_that_trained_on_a_held_out_patient_is_refused_naming_the_count(tmp_path, params) -> None:
    meta = {"val_auroc": 0.5, PATIENTS_KEY: patient_hashes(["kaggle:0001", "kaggle:0002", "mura:p9"])}
    source_dir = write_model_dir(tmp_path / "binary", params, metadata=meta)
    source = read_init_source(source_dir, params.model)
    check_no_leak(source, pd.Series(["kaggle:0003", "kaggle:0004"]), source_dir)  # disjoint: fine
    with pytest.raises(InputError, match="2 patient"):
        check_no_leak(source, pd.Series(["kaggle:0001", "kaggle:0002", "kaggle:0003"]), source_dir)


def test_a_model_dir_without_its_patient_record_cannot_start_a_task(tmp_path, params) -> None:
    source_dir = write_model_dir(tmp_path / "old", params)
    with pytest.raises(InputError, match=PATIENTS_KEY):
        read_init_source(source_dir, params.model)


def test_init_from_loads_the_backbone_keeps_a_new_head_and_freezes_on_request(tmp_path, params) -> None:
    source_dir = write_model_dir(tmp_path / "binary", params, seed=1, metadata={PATIENTS_KEY: []})
    torch.manual_seed(2)
    model = build_model(params.model, params.base.image_size, pretrained=False)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    init_backbone(model, source_dir)
    saved = read_state_dict(source_dir / "model.pt")
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[f"backbone.{k}"]), k
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    set_backbone_frozen(model, True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_backbone_frozen(model, False)
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_a_different_backbone_cannot_start_the_task(tmp_path, params) -> None:
    source_dir = write_model_dir(tmp_path / "binary", params, metadata={PATIENTS_KEY: []})
    config = json.loads((source_dir / "config.json").read_text())
    (source_dir / "config.json").write_text(json.dumps({**config, "backbone_kwargs": {"embed_dim": 48}}))
    with pytest.raises(InputError, match="differs from model.backbone"):
        read_init_source(source_dir, params.model)


def test_the_model_dir_records_its_task_and_evaluate_refuses_another(tmp_path, params) -> None:
    config = json.loads((write_model_dir(tmp_path / "m", params) / "config.json").read_text())
    assert (config["task"], config["classes"]) == ("fracture", ["fracture"])
    assert model_task(config, "fracture", Path("c")) == "fracture"
    assert model_task({}, "fracture", Path("c")) == "fracture"  # model dirs from before tasks
    with pytest.raises(InputError, match="trained for task 'fracture' but base.task is 'physeal'"):
        model_task(config, "physeal", Path("c"))


def test_predict_names_the_tasks_class(make_params) -> None:
    assert (decide(0.7, 0.5, "physeal"), decide(0.2, 0.5, "physeal")) == ("physeal", "not physeal")
    assert (decide(0.7, 0.5), decide(0.2, 0.5)) == ("fracture", "normal")
    assert make_params({"base": {"task": "physeal"}}).registered_model_name == "fracture-swin-physeal"
    assert make_params({}).registered_model_name == "fracture-swin"


def test_a_frozen_backbone_stays_put_through_a_real_training_epoch(params) -> None:
    """AdamW (with weight decay) leaves parameters without gradients alone; the head still learns."""
    from fracture.train.epoch import train_one_epoch
    from fracture.train.optim import make_optimisation
    from fracture.train.runtime import Runtime

    torch.manual_seed(0)
    size = params.base.image_size
    model = build_model(params.model, size, pretrained=False)
    rt = Runtime(torch.device("cpu"))
    batches = [(torch.randn(4, 1, size, size), torch.tensor([0.0, 1.0, 0.0, 1.0])) for _ in range(2)]
    opt = make_optimisation(model, params.train, rt, len(batches), 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    set_backbone_frozen(model, True)
    train_one_epoch(model, batches, opt, rt, params.train)
    after = model.state_dict()
    assert all(torch.equal(before[k], v) for k, v in after.items() if k.startswith("backbone."))
    assert any(not torch.equal(before[k], v) for k, v in after.items() if k.startswith("head."))

    set_backbone_frozen(model, False)
    train_one_epoch(model, batches, opt, rt, params.train)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("backbone."))
