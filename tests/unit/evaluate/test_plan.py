"""The locked analysis plan: train locks it, evaluate / report / register / promote refuse a changed one (naming the
changed keys) unless `fracture relock` recorded the change, its reason and whether test results had been seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fracture.base.errors import InputError
from fracture.contracts.plan import (
    BLOCK,
    PLAN_KEYS,
    analysis_plan,
    check_plan,
    check_version_plan,
    plan_block,
    plan_hash,
    plan_tags,
    read_relocks,
)
from fracture.registry.relock import run_relock
from tests.conftest import write_model_dir

CHANGES = {"evaluate": {"primary": {"metric": "sensitivity"}, "gate": {"min_auroc": 0.6}}}
CHANGED = r"evaluate\.gate\.min_auroc: 0\.7 -> 0\.6; evaluate\.primary\.metric: 'auroc' -> 'sensitivity'"


@pytest.fixture
def locked_model(tmp_path, params) -> Path:
    """A model dir whose metadata.json holds the plan `params` lock (as train writes it)."""
    return write_model_dir(tmp_path / "model", params, metadata={"val_auroc": 0.5, BLOCK: plan_block(params)})


def test_the_plan_holds_every_key_that_decides_and_hashes_stably(params):
    plan = analysis_plan(params)
    assert tuple(plan) == PLAN_KEYS and plan["evaluate.gate.primary_bound"] == "ci_low"
    assert plan_hash(plan) == plan_hash(dict(reversed(plan.items()))) == plan_block(params)["sha256"]
    json.dumps(plan)  # a registry tag and a metadata block: must serialise


def test_evaluate_report_and_register_refuse_a_changed_plan_naming_the_keys(locked_model, params, make_params):
    from fracture.evaluate import run_evaluate
    from fracture.registry.register import run_register
    from fracture.report.render import run_report

    edited = make_params(CHANGES)
    assert check_plan(locked_model, params, "evaluate")["sha256"] == plan_block(params)["sha256"]
    nowhere = locked_model / "nowhere"  # the plan is checked before any input is read
    with pytest.raises(InputError, match=rf"evaluate: the analysis plan differs .*\({CHANGED}\); .*fracture relock"):
        run_evaluate(edited, locked_model, nowhere, nowhere, nowhere, nowhere)
    with pytest.raises(InputError, match=rf"report: the analysis plan differs .*\({CHANGED}\)"):
        run_report(edited, nowhere, ingest_dir=nowhere, validation_dir=nowhere, splits_path=nowhere,
                   model_dir=locked_model, eval_dir=nowhere, explain_dir=nowhere)  # fmt: skip
    with pytest.raises(InputError, match=rf"register: the analysis plan differs .*\({CHANGED}\)"):
        run_register(edited, locked_model, nowhere, name="m")


def test_relock_records_the_change_reason_and_seen_test_and_then_the_plan_holds(locked_model, params, make_params):
    edited = make_params(CHANGES)
    with pytest.raises(InputError, match="--reason"):
        run_relock(edited, locked_model, "  ", True, "me", "now")
    with pytest.raises(InputError, match="nothing to re-lock"):
        run_relock(params, locked_model, "why not", False, "me", "now")
    record = run_relock(edited, locked_model, "reader study protocol v2", True, "me", "2026-12-07T19:00:00+00:00")
    assert record["changed"] == {
        "evaluate.gate.min_auroc": [0.7, 0.6],
        "evaluate.primary.metric": ["auroc", "sensitivity"],
    }
    assert record["seen_test"] is True and read_relocks(locked_model) == [record]
    checked = check_plan(locked_model, edited, "evaluate")
    assert checked["sha256"] == plan_block(edited)["sha256"] and checked["relocks"] == [record]
    with pytest.raises(InputError, match=r"evaluate\.primary\.metric: 'sensitivity' -> 'auroc'"):
        check_plan(locked_model, params, "evaluate")  # the old plan is now the changed one


def test_promote_refuses_a_version_registered_under_another_plan(params, make_params):
    tags = plan_tags(params, {"sha256": "abc", "relocks": []})
    check_version_plan(tags, params, "3")
    with pytest.raises(InputError, match=rf"version 3 was registered with \({CHANGED}\)"):
        check_version_plan(tags, make_params(CHANGES), "3")
    check_version_plan({}, make_params(CHANGES), "1")  # registered before plans were locked: warned, not refused


def test_a_model_dir_without_a_plan_is_not_checked(tmp_path, params, caplog):
    model = write_model_dir(tmp_path / "old", params)
    assert check_plan(model, params, "evaluate") == {"sha256": None, "relocks": []}
    assert "no locked analysis plan" in caplog.text
