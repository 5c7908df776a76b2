"""tests/lockcheck.py: which differences between two dvc.lock files fail CI on any machine, and which on one."""

import copy

import pytest

from tests.lockcheck import main, portable_problems, same_problems


def _out(path, md5):
    return {"path": path, "hash": "md5", "md5": md5, "size": 10, "nfiles": 2}


LOCK = {
    "synth@demo": {
        "cmd": "fracture synth --out data/raw/demo",
        "deps": [_out("fracture/synth", "code1.dir")],
        "params": {"params.yaml": {"base.seed": 42}},
        "outs": [_out("data/raw/demo", "pixels.dir")],
    },
    "ingest": {
        "cmd": "fracture ingest --kaggle data/raw/demo/GRAZPEDWRI-DX --out data/interim/ingest",
        "deps": [_out("data/raw/demo/GRAZPEDWRI-DX", "kaggle.dir"), _out("fracture/ingest.py", "code2")],
        "params": {"params.yaml": {"ingest": {"min_side": 8}}},
        "outs": [_out("data/interim/ingest", "manifest.dir")],
    },
    "train": {
        "cmd": "fracture train --cache data/processed/cache --out models/demo",
        "deps": [_out("data/interim/ingest", "manifest.dir"), _out("fracture/train", "code3.dir")],
        "params": {"params.yaml": {"train": {"epochs": 24}}},
        "outs": [_out("models/demo", "weights.dir")],
    },
    "evaluate": {
        "cmd": "fracture evaluate --model models/demo --out reports/eval",
        "deps": [_out("models/demo", "weights.dir"), _out("fracture/evaluate", "code4.dir")],
        "params": {"params.yaml": {"evaluate": {"n_bootstrap": 1000}}},
        "outs": [_out("reports/eval", "metrics.dir")],
    },
}


def _changed(stage, field, index, md5):
    lock = copy.deepcopy(LOCK)
    lock[stage][field][index]["md5"] = md5
    return lock


def test_identical_locks_pass_both_checks():
    assert portable_problems(LOCK, copy.deepcopy(LOCK)) == []
    assert same_problems(LOCK, copy.deepcopy(LOCK)) == []


def test_other_training_bits_pass_on_another_machine_but_not_on_one():
    """Another CPU: the weights hash differs, and with it evaluate's dependency on them."""
    fresh = _changed("train", "outs", 0, "other-weights.dir")
    fresh["evaluate"]["deps"][0]["md5"] = "other-weights.dir"
    fresh["evaluate"]["outs"][0]["md5"] = "other-metrics.dir"
    assert portable_problems(LOCK, fresh) == []
    assert same_problems(LOCK, fresh) == [
        "evaluate: differs between two fresh runs on this machine",
        "train: differs between two fresh runs on this machine",
    ]


def test_a_folder_dep_holding_outputs_of_another_stage_is_that_stages():
    """report depends on reports/eval, a folder whose files are evaluate's outputs (seen with the SIMD paths off)."""
    lock = copy.deepcopy(LOCK)
    lock["evaluate"]["outs"] = [_out("reports/eval/metrics.json", "m1"), _out("reports/eval/gate.json", "g1")]
    lock["report"] = {"cmd": "fracture report", "deps": [_out("reports/eval", "eval.dir")], "outs": []}
    fresh = copy.deepcopy(lock)
    fresh["evaluate"]["outs"][0]["md5"] = "m2"
    fresh["report"]["deps"][0]["md5"] = "eval2.dir"
    assert portable_problems(lock, fresh) == []


def test_synthetic_data_that_depends_on_the_machine_fails_everywhere():
    fresh = _changed("synth@demo", "outs", 0, "other-pixels.dir")
    fresh["ingest"]["deps"][0]["md5"] = "other-kaggle.dir"
    problems = portable_problems(LOCK, fresh)
    assert any("synth@demo: output data/raw/demo differs" in p for p in problems), problems
    assert any("ingest: dependency data/raw/demo/GRAZPEDWRI-DX (output of synth@demo)" in p for p in problems)


@pytest.mark.parametrize(
    ("stage", "edit", "expected"),
    [
        ("train", lambda s: s["deps"][1].update(md5="new-code.dir"), "dependency fracture/train (source)"),
        ("train", lambda s: s["params"]["params.yaml"]["train"].update(epochs=2), "params differs"),
        ("evaluate", lambda s: s.update(cmd="fracture evaluate --new-flag"), "cmd differs"),
    ],
)
def test_a_stale_committed_lock_fails_on_any_machine(stage, edit, expected):
    fresh = copy.deepcopy(LOCK)
    edit(fresh[stage])
    problems = portable_problems(LOCK, fresh)
    assert any(p.startswith(f"{stage}: ") and expected in p for p in problems), problems


def test_a_stage_missing_from_the_commit_fails():
    fresh = copy.deepcopy(LOCK)
    fresh["report"] = copy.deepcopy(LOCK["evaluate"])
    assert portable_problems(LOCK, fresh) == [
        "report: not in the committed dvc.lock (run make demo and commit dvc.lock)"
    ]


def test_cli_exit_codes(tmp_path, capsys):
    import yaml

    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    a.write_text(yaml.safe_dump({"schema": "2.0", "stages": LOCK}))
    b.write_text(yaml.safe_dump({"schema": "2.0", "stages": _changed("train", "outs", 0, "x.dir")}))
    assert main(["portable", str(a), str(b)]) == 0
    assert main(["same", str(a), str(b)]) == 1
    assert "train: differs" in capsys.readouterr().out
    assert main(["other", str(a), str(b)]) == 2
