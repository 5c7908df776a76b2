"""Security guarantees: no code runs from a crafted weights file, no unsafe loader in the package, no default key.

A crafted pickle whose unpickling would run a shell command is handed to every loader a user can reach (model dir,
`fracture predict --weight`, `fracture train --resume`): each refuses it with a clear error and the command never
runs (its marker file is never created). A grep over the package proves no loader bypasses `weights_only=True`.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fracture.base.errors import InputError
from fracture.cli import app
from fracture.config import dump_params
from fracture.model.core import load_model_dir
from fracture.sources.privacy import KEY_ENV
from fracture.train.checkpoint import load_checkpoint
from tests.conftest import write_model_dir

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("fracture", "benchmarks")  # the KFP components and pipeline live in fracture/kubeflow
SIZE = 32
TINY = {"base": {"image_size": SIZE}, "train": {"epochs": 1, "batch_size": 8, "augment": {"enabled": False}}}


class Payload:
    """Unpickling this runs `touch MARKER`: what an attacker's weights file would do with a plain torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_torch_payload(path: Path, marker: Path) -> Path:
    """A torch zip file whose data.pkl carries the payload inside an otherwise plausible state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"head.0.weight": torch.zeros(2, 2)}, "extra": Payload(marker)}, path)
    return path


def write_raw_payload(path: Path, marker: Path) -> Path:
    """A bare (legacy, non-zip) pickle stream with the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return path


WRITERS = {"torch-zip": write_torch_payload, "raw-pickle": write_raw_payload}


@pytest.fixture(scope="module")
def tiny_params(make_params):
    return make_params(TINY)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_params) -> Path:
    """A genuine (untrained) model dir in the contract format."""
    return write_model_dir(tmp_path_factory.mktemp("model") / "model", tiny_params)


def evil_model_dir(model_dir: Path, dst: Path, kind: str, marker: Path) -> Path:
    """A copy of a genuine model dir whose model.pt is the payload."""
    dst.mkdir(parents=True)
    for name in ("config.json", "metadata.json"):
        (dst / name).write_bytes((model_dir / name).read_bytes())
    WRITERS[kind](dst / "model.pt", marker)
    return dst


def assert_clean_cli_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


# ----------------------------------------------------------------------------------------------- the payload
@pytest.mark.parametrize("kind", list(WRITERS))
def test_payload_is_live_when_loaded_unsafely(tmp_path, kind):
    # Proves the refusals below mean something: an unsafe load of the same file does run the command.
    marker = tmp_path / "pwned"
    path = WRITERS[kind](tmp_path / "evil.pt", marker)
    if kind == "raw-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", list(WRITERS))
def test_load_model_dir_refuses_a_code_carrying_pickle(tmp_path, model_dir, kind):
    marker = tmp_path / "pwned"
    evil = evil_model_dir(model_dir, tmp_path / "evil", kind, marker)
    with pytest.raises(InputError, match=r"model\.pt"):
        load_model_dir(evil)
    assert not marker.exists(), "unpickling ran the attacker's command"


@pytest.mark.parametrize("kind", list(WRITERS))
def test_predict_cli_refuses_a_code_carrying_pickle(tmp_path, model_dir, tiny_params, kind):
    import cv2

    marker = tmp_path / "pwned"
    evil = evil_model_dir(model_dir, tmp_path / "evil", kind, marker)
    img = tmp_path / "wrist.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8))
    params_path = tmp_path / "params.yaml"
    dump_params(tiny_params, params_path)
    runner = CliRunner()
    for weight in (evil, evil / "model.pt"):  # a model dir, and a weights file with config.json beside it
        args = ["predict", "--img", str(img), "--weight", str(weight), "--out", str(tmp_path / "out")]
        result = runner.invoke(app, [*args, "--params", str(params_path)])
        assert_clean_cli_error(result, str(weight), "model.pt")
        assert not marker.exists(), "predict ran the attacker's command"
    assert not (tmp_path / "out" / "wrist.json").exists()


@pytest.mark.parametrize("kind", list(WRITERS))
def test_checkpoint_loader_refuses_a_code_carrying_pickle(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = WRITERS[kind](tmp_path / "checkpoints" / "last.pt", marker)
    with pytest.raises(InputError, match=r"last\.pt.*cannot read checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_train_resume_cli_refuses_a_code_carrying_checkpoint(tmp_path, tiny_params, monkeypatch):
    from tests.unit.train.test_train import write_tiny_dataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = write_tiny_dataset(tmp_path / "data", n={"train": 16, "val": 8, "test": 8})
    marker = tmp_path / "pwned"
    out = tmp_path / "model"
    write_torch_payload(out / "checkpoints" / "last.pt", marker)
    params_path = tmp_path / "params.yaml"
    dump_params(tiny_params, params_path)
    args = ["train", "--manifest", str(data["manifest"]), "--splits", str(data["splits"]), "--cache"]
    args += [str(data["cache"]), "--out", str(out), "--resume", "--params", str(params_path)]
    result = CliRunner().invoke(app, args)
    assert_clean_cli_error(result, "last.pt", "cannot read checkpoint")
    assert not marker.exists(), "train --resume ran the attacker's command"
    assert not (out / "model.pt").exists()


# ------------------------------------------------------------------------------------------------ static rules
def _package_sources() -> list[Path]:
    assert all((REPO / d).is_dir() for d in PACKAGE_DIRS), PACKAGE_DIRS  # a renamed folder must not drop out
    files = [p for d in PACKAGE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert any(p.parent.name == "fracture" for p in files)
    return files


def _calls(text: str, name: str) -> list[str]:
    """The full text of every call `name(...)` in `text` (balanced parentheses, so multi-line calls count)."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\s*\(", text):
        depth, i = 0, match.end() - 1
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        calls.append(text[match.start() : i + 1])
    return calls


def test_no_unsafe_deserialisation_in_the_package():
    offences = []
    for path in _package_sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        offences += [f"{rel}: {c}" for c in _calls(text, "torch.load") if not re.search(r"weights_only\s*=\s*True", c)]
        offences += [f"{rel}: {c}" for c in _calls(text, "np.load") if re.search(r"allow_pickle\s*=\s*True", c)]
        offences += [f"{rel}: {c}" for c in _calls(text, "yaml.load") if "SafeLoader" not in c]
        offences += [
            f"{rel}: {c}" for name in ("pickle.load", "pickle.loads", "joblib.load") for c in _calls(text, name)
        ]
    assert not offences, "unsafe loaders:\n" + "\n".join(offences)


def test_no_pil_rgb_conversion_of_radiographs():
    pattern = re.compile(r"""\.convert\(\s*["'](RGB|L)["']""")
    offences = []
    for path in _package_sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#") and "`" not in line:
                offences.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offences, "PIL convert() clips 16-bit radiographs:\n" + "\n".join(offences)


def test_static_rules_catch_offences():
    # The scanners above must see a violation when there is one, including a call split over lines.
    text = 'x = torch.load(\n    p,\n    map_location="cpu",\n)\ny = torch.load(p, weights_only=True)\n'
    calls = _calls(text, "torch.load")
    assert len(calls) == 2
    assert [bool(re.search(r"weights_only\s*=\s*True", c)) for c in calls] == [False, True]


# ----------------------------------------------------------------------------------------- pseudonymisation key
def test_ingest_cli_without_the_key_refuses_identifiable_sources(tmp_path, params_file, monkeypatch):
    from tests.unit.sources.test_dicom import make_dicom

    root = tmp_path / "hospital"
    make_dicom(root / "radius" / "positive" / "IM0001.dcm", rows=24, cols=20)
    out = tmp_path / "out"
    for value in (None, "", "  "):
        if value is None:
            monkeypatch.delenv(KEY_ENV, raising=False)
        else:
            monkeypatch.setenv(KEY_ENV, value)
        result = CliRunner().invoke(
            app, ["ingest", "--hospital", str(root), "--out", str(out), "--params", str(params_file)]
        )
        assert_clean_cli_error(result, KEY_ENV, "pseudonymise")
        assert not out.exists(), "nothing is written without the key"


def test_the_key_lives_nowhere_in_the_repository_config():
    # No default key: not in params.yaml, not in the config schema, not as a literal fallback in the package.
    assert KEY_ENV.lower() not in (REPO / "params.yaml").read_text().lower()
    assert "pseudonym" not in (REPO / "fracture" / "config.py").read_text().lower()
    for path in _package_sources():
        text = path.read_text(encoding="utf-8")
        assert not re.search(rf"""environ(?:\.get)?\(\s*["']{KEY_ENV}["']\s*,\s*["'][^"']+["']""", text), path
        assert not re.search(rf"""getenv\(\s*["']{KEY_ENV}["']\s*,\s*["'][^"']+["']""", text), path
