"""params.yaml is kept in the form `dvc exp run -S` writes back: an experiment's diff is only its changed values."""

import shutil

import pytest
import yaml

from tests.params_format import PARAMS_FILES, REPO, dvc_rewrite, format_diff


@pytest.mark.parametrize("rel", PARAMS_FILES)
def test_params_file_is_in_the_form_dvc_writes_back(rel):
    diff = format_diff(REPO / rel)
    assert not diff, f"{rel} is not in DVC's form; run `make params-format`:\n{diff}"


def test_an_experiment_changes_one_line(tmp_path):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S train.epochs=2` calls

    path = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    apply_overrides(str(path), ["train.epochs=2"])
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].strip().startswith("epochs: 2"), changed
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 2


def test_format_diff_sees_a_flow_list(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  test_sources: [kaggle]\n")
    assert "- kaggle" in format_diff(path)
    dvc_rewrite(path)
    assert not format_diff(path)
