"""The command line as a user meets it: --version, -v after the command, and a failed gate inside DVC."""

import json
import logging
import os
import re

import pytest
from typer.testing import CliRunner

from fracture.cli import app


def test_version_prints_the_package_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fracture {version('fracture-mlops')}"


@pytest.mark.parametrize("argv", [["-v", "synth"], ["synth", "-v"], ["synth", "--verbose"]])
def test_verbose_is_accepted_before_and_after_the_command(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "o"), "--params", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2, result.output  # the missing params file, not "No such option: -v"
    assert logging.getLogger("fracture").getEffectiveLevel() == logging.DEBUG


def test_verbose_after_a_double_dash_is_left_alone(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "o"), "--", "-v"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()


def _failed_gate_dirs(tmp_path):  # noqa: ANN001, ANN202
    """A model dir and an eval dir registration accepts, except that the gate refused the model."""
    from tests.unit.registry.test_registry_core import _model_and_eval

    model, ev = _model_and_eval(tmp_path)
    from fracture.contracts.verdict import Verdict, write_verdict

    reasons = ("test.auroc 0.5500 < 0.7", "test.frozen.sensitivity 0.4000 < 0.6")
    write_verdict(Verdict("evaluate", "failed", reasons), ev / "gate.json")
    return model, ev


def test_register_exits_1_on_a_failed_gate_by_default(tmp_path, params_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: must not be reached
    model, ev = _failed_gate_dirs(tmp_path)
    out = tmp_path / "registration.json"
    args = ["register", "--model", str(model), "--eval", str(ev), "--out", str(out), "--params", str(params_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and not out.exists()


def test_register_records_a_failed_gate_as_a_result_with_the_flag(tmp_path, params_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    model, ev = _failed_gate_dirs(tmp_path)
    out = tmp_path / "registration.json"
    args = ["register", "--model", str(model), "--eval", str(ev), "--out", str(out), "--params", str(params_file)]
    result = CliRunner().invoke(app, [*args, "--gate-failure-ok"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record == {
        "registered": False,
        "why": "gate failed",
        "reasons": ["test.auroc 0.5500 < 0.7", "test.frozen.sensitivity 0.4000 < 0.6"],
    }
    assert "not registered: gate failed (test.auroc 0.5500 < 0.7; test.frozen.sensitivity" in result.output


def test_demo_summary_says_why_a_model_was_not_registered():
    from tools.demo import registration_line

    line = registration_line({"registered": False, "why": "gate failed", "reasons": ["test.auroc 0.55 < 0.7"]}, None)
    assert line.strip() == "not registered: gate failed (test.auroc 0.55 < 0.7)"
    reg = {"name": "fracture-swin", "fingerprint": "f" * 64, "registered": True, "forced": False}
    found = {"version": 3, "aliases": ["challenger", "champion"]}
    assert (
        registration_line(reg, found).strip()
        == "registered model: fracture-swin version 3 (alias challenger, champion)"
    )
    assert "no version with its fingerprint" in registration_line(reg, None)
    undecidable = registration_line({**reg, "gate_status": "undecidable"}, {"version": 4, "aliases": ["challenger"]})
    assert (
        undecidable.strip()
        == "registered model: fracture-swin version 4 (alias challenger); evaluation gate undecidable"
    )


def test_register_out_is_the_outcome_alone():
    """Regression: registration.json held the version, run id and tracking URI, so a fresh run changed dvc.lock."""
    from fracture.registry.register import outcome_record

    full = {"name": "m", "version": 7, "run_id": "r", "model_id": "m-1", "fingerprint": "f" * 64}
    full |= {"forced": False, "registered": True, "created": True, "aliases": ["a"], "tracking_uri": "sqlite:///x"}
    full |= {"gate_status": "undecidable"}
    assert outcome_record(full) == {
        "registered": True, "name": "m", "fingerprint": "f" * 64, "forced": False, "gate_status": "undecidable"
    }  # fmt: skip
    refused = {"registered": False, "why": "gate failed", "reasons": ["x"]}
    assert outcome_record(refused) == refused


def test_mlflow_info_lines_and_progress_bar_stay_out_of_the_log(monkeypatch):
    from fracture.base.logs import setup_logging

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    setup_logging(verbose=False)
    assert not logging.getLogger("mlflow.system_metrics.system_metrics_monitor").isEnabledFor(logging.INFO)
    assert logging.getLogger("fracture.train").isEnabledFor(logging.INFO)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_mlflow_records_go_through_the_project_handler_in_its_format(monkeypatch, capfd):
    import mlflow  # noqa: F401 - on import mlflow gives its loggers a handler and format of their own

    from fracture.base.logs import setup_logging

    setup_logging(verbose=False)
    mlflow_logger = logging.getLogger("mlflow")
    assert mlflow_logger.handlers == [] and mlflow_logger.propagate
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    logging.getLogger("mlflow.pyfunc").warning("something worth a warning")
    err = capfd.readouterr().err
    assert "Creating initial" not in err and "INFO mlflow" not in err
    # One format: HH:MM:SS LEVEL name: message (mlflow's own is `2026/12/02 03:12:45 ...`).
    assert re.search(r"^\d\d:\d\d:\d\d WARNING mlflow.pyfunc: something worth a warning$", err, re.M), err
    setup_logging(verbose=True)  # -v shows mlflow's INFO lines, still in the project's format
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    assert re.search(r"^\d\d:\d\d:\d\d INFO mlflow.store.db.utils: Creating", capfd.readouterr().err, re.M)
    setup_logging(verbose=False)


def test_demo_summary_links_to_the_experiment_runs_and_the_registered_model(params, tmp_path, monkeypatch):
    import mlflow

    from tools.demo import mlflow_links

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # An explicit URI: a tracking URI set globally by an earlier test in this process must not be used here.
    exp_id = mlflow.MlflowClient(tracking_uri=uri).create_experiment(params.train.experiment)
    links = mlflow_links("http://127.0.0.1:5000", params)
    assert links == [
        f"runs:   http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning",
        f"models: http://127.0.0.1:5000/#/models/{params.register_.model_name}",
    ]


def _commands():  # noqa: ANN202
    """(name, click command) for every visible command and subcommand of `fracture`."""
    import typer

    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        if cmd.hidden:
            continue
        subs = getattr(cmd, "commands", None)
        out += [(f"{name} {sub}", c) for sub, c in subs.items()] if subs else [(name, cmd)]
    return out


def test_every_command_has_examples_that_parse():
    """Each command's `--help` shows examples, and each example parses against that command's options."""
    import shlex

    for name, _ in _commands():
        result = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
        assert result.exit_code == 0 and "Examples" in result.output, name
    from fracture.vocab import EXAMPLES

    typer_root = __import__("typer").main.get_command(app)
    for name, cmd in _commands():
        key = name.replace(" ", "_").replace("-", "_")
        assert EXAMPLES.get(key), f"no examples for `fracture {name}`"
        for example in EXAMPLES[key]:
            argv = shlex.split(example)
            assert argv[: 1 + len(name.split())] == ["fracture", *name.split()], example
            args = [a for a in argv[1 + len(name.split()) :] if a not in ("-v", "--verbose")]
            cmd.make_context(name, args, parent=typer_root.make_context("fracture", [name.split()[0]]))


def test_help_shows_no_type_beside_flags_and_lists_the_body_parts():
    from fracture.vocab import BODY_PARTS

    for argv in ([], ["train"], ["promote"], ["pipeline", "compile"], ["registry", "fetch"]):
        result = CliRunner().invoke(app, [*argv, "--help"], terminal_width=200)
        assert result.exit_code == 0 and "<bool>" not in result.output, argv
        assert re.search(r"<(path|file|str|integer|int)>", result.output) or not argv  # value types stay
    predict_help = CliRunner().invoke(app, ["predict", "--help"], terminal_width=200).output
    assert all(part in predict_help for part in BODY_PARTS)
