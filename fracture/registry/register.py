"""The `register` step: upload a trained, evaluated model dir to MLflow and create a registry version.

All or nothing: the version is created only after the model's artifacts and the evaluation evidence are
uploaded; a failed upload deletes the half-logged model (and the run, when it was created here).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from fracture.config import Params
from fracture.errors import InputError
from fracture.registry.client import first_line, mlflow_client, registry_errors
from fracture.registry.lineage import (
    PREDICTIONS_FILE,
    RegisterInputs,
    check_force,
    check_gate,
    check_name,
    fingerprint_model_dir,
    headline_metrics,
    load_register_inputs,
    version_tags,
)
from fracture.registry.names import (
    CHALLENGER,
    CHAMPION,
    FINGERPRINT_TAG,
    TEST_PREDICTIONS_TAG,
)
from fracture.tracking import redact, tracking_uri

log = logging.getLogger(__name__)

# The model dir's contract files uploaded with the model (fracture.model.save_model_dir writes them; no checkpoints).
MODEL_DIR_FILES = ("model.pt", "config.json", "metadata.json", "history.csv", "params.yaml")
MODEL_NAME = "model"  # the logged model's name inside its run
# Runtime requirements written into the MLmodel; the fracture package itself must be installed where it is served.
PIP_PACKAGES = ("mlflow", "torch", "timm", "numpy", "pandas", "opencv-python-headless", "pydicom", "pyyaml")


def _check_loadable(model_dir: Path) -> None:
    """Refuse a model dir whose weights do not rebuild the configured network (before anything is uploaded).

    Raises:
        InputError: from fracture.model, naming the file and the mismatch.
    """
    from fracture.model import load_model_dir

    load_model_dir(model_dir, map_location="cpu")


def _check_can_register(client: Any, name: str) -> None:
    """A user without EDIT on an existing registered model is refused before anything is uploaded.

    Raises:
        AccessError: 401 / 403, one line naming who and what.
    """
    from mlflow.exceptions import MlflowException

    from fracture.access.identity import require_permission
    from fracture.access.names import REGISTER_PERMISSION

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return  # a new model: creating it is MLflow's own check
    require_permission(tracking_uri(), name, REGISTER_PERMISSION, "register a version of")


def find_version(client: Any, name: str, fingerprint: str) -> Any | None:
    """The registered version of `name` whose fingerprint tag matches, if any."""
    found = client.search_model_versions(f"name = '{name}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _resolve_run(client: Any, metadata: dict, experiment: str, fingerprint: str) -> tuple[str, str]:
    """The train run when it exists on this server, else a new run in the experiment; returns (run_id, origin)."""
    from mlflow.exceptions import MlflowException

    run_id = metadata.get("mlflow_run_id")
    if run_id:
        try:
            run = client.get_run(run_id)
            if run.info.lifecycle_stage == "active":
                return run_id, "train_run"
        except MlflowException:
            log.info("train run %s is not on this tracking server; logging the model in a new run", run_id)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    tags = {"fracture.step": "register", "fracture.train_run_id": str(run_id or "none")}
    run = client.create_run(exp_id, run_name=f"register-{fingerprint[:12]}", tags=tags)
    return run.info.run_id, "register_run"


def _stage_model_dir(model_dir: Path, tmp: Path) -> Path:
    """Copy the model dir's contract files (no checkpoints) into `tmp/model_dir`, hard-linking when possible."""
    staged = tmp / "model_dir"
    staged.mkdir()
    for name in MODEL_DIR_FILES:
        src = Path(model_dir) / name
        if not src.is_file():
            continue
        try:
            os.link(src, staged / name)
        except OSError:
            shutil.copy2(src, staged / name)
    return staged


def _pip_requirements() -> list[str]:
    reqs = []
    for pkg in PIP_PACKAGES:
        try:
            reqs.append(f"{pkg}=={pkg_metadata.version(pkg).split('+')[0]}")  # no local label (+cu130)
        except pkg_metadata.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def example_image_png(size: int) -> bytes:
    """A deterministic synthetic grayscale PNG (a bright bar on a dark field): the logged input example."""
    import cv2
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    img = (40 + 60 * yy / max(size - 1, 1)).astype(np.uint8)
    img[(np.abs(xx - size // 2) < max(size // 8, 1))] = 200
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 array
        raise RuntimeError("could not encode the example image")
    return buf.tobytes()


def _root_error(err: BaseException) -> BaseException:
    """The earliest MLflow/boto error in the exception's context chain.

    When an upload fails, MLflow's clean-up (marking the logged model FAILED) may itself fail and replace the
    upload error; the upload error is the one the user needs to see.
    """
    from mlflow.exceptions import MlflowException

    kinds: tuple[type[BaseException], ...] = (MlflowException,)
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        kinds += (BotoCoreError, ClientError)
    except ImportError:  # pragma: no cover - boto3 is installed with dvc[s3]
        pass
    best, seen, cur = err, set(), err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        best = cur if isinstance(cur, kinds) else best
        cur = cur.__context__
    return best


def _upload_target(client: Any, model_id: str) -> str:
    try:
        location = client.get_logged_model(model_id).artifact_location
    except Exception:  # noqa: BLE001 - the server may be what is down; the message still needs a target
        location = f"the artifact store of logged model {model_id}"
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    via = f" via {redact(tracking_uri())}" + (f", S3 endpoint {redact(endpoint)}" if endpoint else "")
    return f"{location}{via}"


@dataclass
class _Pending:
    """What a registration has created so far, for clean-up when a later phase fails."""

    run_id: str
    run_created: bool
    model_id: str | None = None


@contextmanager
def _all_or_nothing(client: Any, pending: _Pending) -> Iterator[_Pending]:
    """On any failure: delete the half-logged model and the run created here; the error goes on."""
    try:
        yield pending
    except BaseException:
        if pending.model_id is not None:
            _try_cleanup(client.delete_logged_model, pending.model_id)
        if pending.run_created:
            _try_cleanup(client.delete_run, pending.run_id)
        raise
    if pending.run_created:
        client.set_terminated(pending.run_id, "FINISHED")


def _try_cleanup(undo: Callable[[str], Any], target: str) -> None:
    try:
        undo(target)
    except Exception as err:  # noqa: BLE001 - the original error matters more than clean-up's
        log.warning("clean-up after a failed registration could not remove %s (%s)", target, first_line(err))


def pyfunc_spec(staged: Path, config: dict) -> dict[str, Any]:
    """The pyfunc's definition: model code, model dir artifact, fingerprint, signature, input example, requirements.

    The one place it is spelled, shared by registration and by `save_pyfunc`. The pyfunc is MLflow "models from
    code" (`fracture/model_code.py`, no pickle); its config carries the weights' fingerprint, which `load_context`
    checks before loading them.
    """
    import pandas as pd

    from fracture.registry.verify import model_code_path
    from fracture.serving import FINGERPRINT_CONFIG_KEY, MODEL_DIR_ARTIFACT, encode_bytes, signature

    example = pd.DataFrame({"image": [encode_bytes(example_image_png(int(config["img_size"])))]})
    return {
        "python_model": str(model_code_path()),  # models from code: a Python file, no pickle
        "model_config": {FINGERPRINT_CONFIG_KEY: fingerprint_model_dir(staged)},
        "artifacts": {MODEL_DIR_ARTIFACT: str(staged)},
        "signature": signature(),
        "input_example": example,
        "pip_requirements": _pip_requirements(),
    }


def save_pyfunc(model_dir: Path, dst: Path) -> Path:
    """Save the model dir as a local MLflow pyfunc at `dst` (what registration logs, without a registry).

    Raises:
        InputError: the model dir does not rebuild the configured network.
    """
    import json

    import mlflow.pyfunc

    _check_loadable(Path(model_dir))
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="fracture-pyfunc-") as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp))
        mlflow.pyfunc.save_model(path=str(dst), **pyfunc_spec(staged, config))
    return Path(dst)


def _log_pyfunc(client: Any, pending: _Pending, staged: Path, config: dict, fingerprint: str) -> str:
    """Log the pyfunc (artifacts uploaded to the artifact store) and link it to the run; returns the model id.

    Raises:
        InputError: the artifact upload failed (endpoint down, bucket missing, refused credentials).
    """
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput

    exp_id = client.get_run(pending.run_id).info.experiment_id
    tags = {FINGERPRINT_TAG: fingerprint}
    model = client.create_logged_model(exp_id, name=MODEL_NAME, source_run_id=pending.run_id, tags=tags)
    pending.model_id = model.model_id
    try:
        mlflow.pyfunc.log_model(name=MODEL_NAME, model_id=model.model_id, **pyfunc_spec(staged, config))
    except Exception as err:
        target = _upload_target(client, model.model_id)
        detail = first_line(_root_error(err))
        server_failed = re.search(r"\b500\b", detail) is not None
        hint = " (the tracking server failed to store them: check its artifact store / S3 endpoint)"
        hint = hint if server_failed else ""
        raise InputError(f"could not upload model artifacts to {target}: {detail}{hint}") from None
    client.log_outputs(pending.run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _log_evidence(client: Any, run_id: str, inputs: RegisterInputs) -> dict[str, str]:
    """The evaluation files (predictions.parquet included), the report and the headline test metrics, on the run.

    Returns:
        The evidence tags for the version (`test_predictions`: the runs:/ URI of predictions.parquet, whose test
        rows a paired promotion comparison reads).
    """
    import time

    from mlflow.entities import Metric

    try:
        for path in inputs.eval_files:
            client.log_artifact(run_id, str(path), "evaluation")
        if inputs.report_path is not None:
            client.log_artifact(run_id, str(inputs.report_path), "evaluation")
    except Exception as err:
        raise InputError(f"could not upload the evaluation evidence for run {run_id}: {first_line(err)}") from None
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in headline_metrics(inputs.metrics).items()]
    client.log_batch(run_id, metrics=metrics)
    if PREDICTIONS_FILE not in {Path(path).name for path in inputs.eval_files}:
        return {}
    return {TEST_PREDICTIONS_TAG: f"runs:/{run_id}/evaluation/{PREDICTIONS_FILE}"}


def _create_version(client: Any, name: str, model_id: str, run_id: str, tags: dict[str, str]) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Wrist fracture classifier (fracture-mlops).")
    return client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id)


def _reuse_version(client: Any, name: str, version: Any) -> dict:
    """Same model dir registered again: point `challenger` at the existing version unless it already leads."""
    aliases = client.get_registered_model(name).aliases
    if aliases.get(CHALLENGER) != version.version and aliases.get(CHAMPION) != version.version:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        log.info(
            "%s version %s already registered (same fingerprint); alias %s -> it", name, version.version, CHALLENGER
        )
    else:
        log.info("%s version %s already registered (same fingerprint); nothing to do", name, version.version)
    return _record(client, name, version, created=False)


def _record(client: Any, name: str, version: Any, created: bool) -> dict:
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if v == version.version)
    return {
        "name": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": version.run_id,
        "model_id": getattr(version, "model_id", None) or str(version.source).removeprefix("models:/"),
        "fingerprint": version.tags.get(FINGERPRINT_TAG),
        "run_origin": version.tags.get("run_origin"),
        "forced": version.tags.get("forced") == "true",
        "registered": True,
        "created": created,
        "aliases": aliases,
        "tracking_uri": redact(tracking_uri()),
    }


def not_registered_record(eval_dir: Path) -> dict:
    """The registration record of a model the evaluation gate refused: a result, kept with the experiment."""
    from fracture.io import read_json

    gate = read_json(Path(eval_dir) / "gate.json")
    return {"registered": False, "why": "gate failed", "reasons": [str(r) for r in gate.get("reasons") or []]}


@registry_errors
def run_register(
    params: Params,
    model_dir: Path,
    eval_dir: Path,
    name: str | None = None,
    report_path: Path | None = None,
    force: bool = False,
    reason: str | None = None,
) -> dict:
    """Register a trained, evaluated model as a new version of the registered model; alias `challenger`.

    Args:
        params: resolved params (`register.model_name`, `train.experiment`).
        model_dir: model dir from train (model.pt, config.json, metadata.json).
        eval_dir: eval dir from evaluate (metrics.json, gate.json, thresholds.json).
        name: registered model name (default: params).
        report_path: report.html to attach (default: `eval_dir/../report.html` when present).
        force: register although the evaluation gate failed.
        reason: why force is justified (required with force; recorded).

    Returns:
        The registration record: name, version, model_uri, run_id, fingerprint, created, aliases, ...

    Raises:
        GateError: the evaluation gate failed (exit 1). InputError: bad inputs, or the upload failed.
    """
    name = check_name(name or params.register_.model_name)
    check_force(force, reason)
    inputs = load_register_inputs(model_dir, eval_dir, report_path)
    forced = check_gate(inputs.gate, Path(eval_dir) / "gate.json", force, reason)
    _check_loadable(Path(model_dir))
    fingerprint = fingerprint_model_dir(model_dir)
    client = mlflow_client()
    _check_can_register(client, name)
    existing = find_version(client, name, fingerprint)
    if existing is not None:
        return _reuse_version(client, name, existing)
    run_id, origin = _resolve_run(client, inputs.metadata, params.train.experiment, fingerprint)
    with tempfile.TemporaryDirectory(prefix="fracture-register-") as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp))
        with _all_or_nothing(client, _Pending(run_id, origin == "register_run")) as pending:
            model_id = _log_pyfunc(client, pending, staged, inputs.config, fingerprint)
            evidence_tags = _log_evidence(client, run_id, inputs)
            tags = {**version_tags(inputs, fingerprint, origin, reason if forced else None), **evidence_tags}
            if inputs.report_path is not None:
                tags["evaluation_report"] = f"runs:/{run_id}/evaluation/{Path(inputs.report_path).name}"
            version = _create_version(client, name, model_id, run_id, tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("registered %s version %s (run %s, %s); alias %s", name, version.version, run_id, origin, CHALLENGER)
    return _record(client, name, client.get_model_version(name, version.version), created=True)
