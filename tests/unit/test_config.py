import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from fracture.base.errors import ConfigError
from fracture.cli import app
from fracture.config import load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_and_are_frozen():
    params = load_params(REPO / "params.yaml")
    assert params.register_.model_name == "fracture-swin"
    with pytest.raises(ValidationError):
        params.base.seed = 1  # type: ignore[misc]


def test_unknown_key_is_named(demo_params_dict):
    data = {**demo_params_dict, "train": {**demo_params_dict["train"], "epochz": 3}}
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        parse_params(data, "p.yaml")


@pytest.mark.parametrize(
    ("section", "key", "value", "path"),
    [
        ("train", "epochs", -1, r"train\.epochs"),
        ("train", "lr", "fast", r"train\.lr"),
        ("split", "strategy", "random", r"split\.strategy"),
        ("base", "image_size", 0, r"base\.image_size"),
        ("train", "epochs", True, r"train\.epochs: expected a number"),
        ("train", "batch_size", "32", r"train\.batch_size: expected a number"),
    ],
)
def test_bad_values_are_named(demo_params_dict, section, key, value, path):
    data = {**demo_params_dict, section: {**demo_params_dict[section], key: value}}
    with pytest.raises(ConfigError, match=path):
        parse_params(data, "p.yaml")


def test_cli_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: -3\n")
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "o"), "--params", str(bad)])
    assert result.exit_code == 2
    assert "train.epochs" in result.output


def test_missing_params_file_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def _leaf_keys(data: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every key whose value is not a section (a non-empty mapping of settings)."""
    out = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        is_section = isinstance(value, dict) and value and key not in ("severity", "backbone_kwargs", "node_selector")
        is_section = is_section and not (prefix == "paths." and key == "synth")
        out += _leaf_keys(value, dotted + ".") if is_section else [dotted]
    return out


def _without(data: dict, dotted: str) -> dict:
    head, _, rest = dotted.partition(".")
    return {
        k: (_without(v, rest) if k == head and rest else v) for k, v in data.items() if not (k == head and not rest)
    }


def test_params_yaml_is_the_one_source_of_defaults(demo_params_dict):
    """Deleting any key from params.yaml fails by name: no default elsewhere can silently take its place."""
    keys = _leaf_keys(demo_params_dict)
    assert len(keys) > 80
    for dotted in keys + list(demo_params_dict):
        with pytest.raises(ConfigError, match=rf"p\.yaml: {re.escape(dotted)}: Field required"):
            parse_params(_without(demo_params_dict, dotted), "p.yaml")


def test_profiles_have_the_same_keys(demo_params_dict):
    production = yaml.safe_load((REPO / "configs" / "production.yaml").read_text())
    assert _leaf_keys(production) == _leaf_keys(demo_params_dict)
    load_params(REPO / "configs" / "production.yaml")
