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

from fracture.base.errors import InputError
from fracture.base.io import hash_file
from fracture.config import Params
from fracture.contracts.artifacts import GATE, HISTORY, MODEL_CONFIG, MODEL_METADATA, WEIGHTS
from fracture.contracts.plan import check_plan, plan_tags
from fracture.registry.client import first_line, mlflow_client, registry_errors
from fracture.registry.cv_evidence import cv_evidence, log_cv_evidence
from fracture.registry.lineage import (
    DATA_DOCS_DIR,
    PREDICTIONS_FILE,
    VALIDATION_PAGE,
    RegisterInputs,
    check_force,
    check_gate,
    check_name,
    fingerprint_model_dir,
    headline_metrics,
    headline_table,
    load_register_inputs,
    run_metric_name,
    version_tags,
)
from fracture.registry.names import (
    AUROC,
    CHALLENGER,
    CHAMPION,
    FINGERPRINT_TAG,
    HEADLINE_METRICS,
    SENSITIVITY,
    TEST_PREDICTIONS_TAG,
)
from fracture.tracking import (
    GIT_COMMIT_TAG,
    MODEL_DIGEST_TAG,
    NOTE_TAG,
    UI_PORT,
    dataset_input,
    ensure_experiment,
    git_commit,
    params_hash,
    redact,
    run_name,
    sig4,
    tracking_uri,
    ui_base,
    ui_links,
)

log = logging.getLogger(__name__)

# The model dir's contract files uploaded with the model (fracture.model.core.save_model_dir writes them; no
# checkpoints).
MODEL_DIR_FILES = (WEIGHTS, MODEL_CONFIG, MODEL_METADATA, HISTORY, "params.yaml")
MODEL_NAME = "model"  # the logged model's name inside its run
EVIDENCE_DIR = "evaluation"  # the run's artifact dir for the evaluation files, the report and validate's pages
# Runtime requirements written into the MLmodel; the fracture package itself must be installed where it is served.
PIP_PACKAGES = ("mlflow", "torch", "timm", "numpy", "pandas", "opencv-python-headless", "pydicom", "pyyaml")


def _check_loadable(model_dir: Path) -> None:
    """Refuse a model dir whose weights do not rebuild the configured network (before anything is uploaded).

    Raises:
        InputError: from fracture.model.core, naming the file and the mismatch.
    """
    from fracture.model.core import load_model_dir

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


def find_training_run(client: Any, exp_id: str, fingerprint: str) -> str | None:
    """The newest FINISHED training run of the experiment tagged with this model digest, if any."""
    where = (
        f"tags.`{MODEL_DIGEST_TAG}` = '{fingerprint}' and tags.`fracture.step` = 'train' "
        "and attributes.status = 'FINISHED'"
    )
    runs = client.search_runs([exp_id], where, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _resolve_run(client: Any, experiment: str, fingerprint: str, params_digest: str) -> tuple[str, str]:
    """The training run of this model (found by its digest tag), else a new run; returns (run_id, origin)."""
    exp_id = ensure_experiment(client, experiment)
    run_id = find_training_run(client, exp_id, fingerprint)
    if run_id is not None:
        return run_id, "train_run"
    name = run_name("register", params_digest)
    log.info(
        "no finished training run with model digest %s in experiment %r (train's outputs restored from DVC's run "
        "cache, or MLflow unreachable while training): logging the model in a new run, %s",
        fingerprint[:12],
        experiment,
        name,
    )
    tags = {"fracture.step": "register", MODEL_DIGEST_TAG: fingerprint, GIT_COMMIT_TAG: git_commit() or "unknown"}
    return client.create_run(exp_id, run_name=name, tags=tags).info.run_id, "register_run"


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
    code" (`fracture/serving/model_code.py`, no pickle); its config carries the weights' fingerprint, which
    `load_context` checks before loading them.
    """
    import pandas as pd

    from fracture.registry.verify import model_code_path
    from fracture.serving.pyfunc import FINGERPRINT_CONFIG_KEY, MODEL_DIR_ARTIFACT, encode_bytes, signature

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
    config = json.loads((Path(model_dir) / MODEL_CONFIG).read_text(encoding="utf-8"))
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


def validation_artifact_path(validation_dir: Path, report_path: Path | None) -> str:
    """Where validate's pages go in the run: the report's relative link to them, under `evaluation/`.

    The report (at `evaluation/<report name>`) links to them by their path relative to its own dir
    (`validation/validation.html` in the demo); anything that would climb out of `evaluation/` lands in
    `evaluation/validation`.
    """
    rel = os.path.relpath(Path(validation_dir), Path(report_path).parent) if report_path is not None else ".."
    rel = Path(rel).as_posix()
    return f"{EVIDENCE_DIR}/{rel}" if rel != "." and not rel.startswith("..") else f"{EVIDENCE_DIR}/validation"


def _log_validation(client: Any, run_id: str, inputs: RegisterInputs) -> None:
    """validation.html and, when present, data_docs/, where the logged report's links find them."""
    if inputs.validation_dir is None:
        return
    target = validation_artifact_path(inputs.validation_dir, inputs.report_path)
    client.log_artifact(run_id, str(inputs.validation_dir / VALIDATION_PAGE), target)
    docs = inputs.validation_dir / DATA_DOCS_DIR
    if docs.is_dir():
        client.log_artifacts(run_id, str(docs), f"{target}/{DATA_DOCS_DIR}")


def _log_evidence(client: Any, run_id: str, inputs: RegisterInputs) -> dict[str, str]:
    """Log the evaluation evidence on the run: files, report, validate's pages, the test set, headline metrics.

    The files are the eval dir's (predictions.parquet included); the test set becomes the run's evaluation dataset;
    the headline test metrics are `test/auroc`, ..., their CI bounds a table (`evaluation/headline_metrics.json`).

    Returns:
        The evidence tags for the version (`test_predictions`: the runs:/ URI of predictions.parquet, whose test
        rows a paired promotion comparison reads).
    """
    import time

    from mlflow.entities import Metric

    try:
        for path in inputs.eval_files:
            client.log_artifact(run_id, str(path), EVIDENCE_DIR)
        if inputs.report_path is not None:
            client.log_artifact(run_id, str(inputs.report_path), EVIDENCE_DIR)
        _log_validation(client, run_id, inputs)
        client.log_table(run_id, headline_table(inputs.metrics), f"{EVIDENCE_DIR}/headline_metrics.json")
    except Exception as err:
        raise InputError(f"could not upload the evaluation evidence for run {run_id}: {first_line(err)}") from None
    now = int(time.time() * 1000)
    values = {k: v for k, v in headline_metrics(inputs.metrics).items() if k in HEADLINE_METRICS}
    client.log_batch(run_id, metrics=[Metric(run_metric_name(k), v, now, 0) for k, v in values.items()])
    if PREDICTIONS_FILE not in {Path(path).name for path in inputs.eval_files}:
        return {}
    predictions = next(Path(p) for p in inputs.eval_files if Path(p).name == PREDICTIONS_FILE)
    if inputs.test_predictions is not None:
        digest = hash_file(predictions)
        test_set = dataset_input(inputs.test_predictions, "test-set", digest, str(predictions), "evaluation")
        client.log_inputs(run_id, [test_set])
    return {TEST_PREDICTIONS_TAG: f"runs:/{run_id}/{EVIDENCE_DIR}/{PREDICTIONS_FILE}"}


def report_link(client: Any, run_id: str, inputs: RegisterInputs) -> str:
    """A markdown link to the logged report inside the MLflow UI (relative: it works on any UI host), or ''."""
    if inputs.report_path is None:
        return ""
    exp_id = client.get_run(run_id).info.experiment_id
    artifact = f"{EVIDENCE_DIR}/{Path(inputs.report_path).name}"
    return f"[{artifact}](#/experiments/{exp_id}/runs/{run_id}/artifacts/{artifact})"


def headline_text(inputs: RegisterInputs) -> str:
    """One sentence: test AUROC with its CI, sensitivity and specificity at the frozen threshold (4 significant)."""
    m = headline_metrics(inputs.metrics)
    ci = f" (95% CI {sig4(m[AUROC + '_ci_low'])}-{sig4(m[AUROC + '_ci_high'])})" if AUROC + "_ci_low" in m else ""
    spec = m.get("test.frozen.specificity")
    return (
        f"test AUROC {sig4(m.get(AUROC))}{ci}; sensitivity {sig4(m.get(SENSITIVITY))}, specificity {sig4(spec)} "
        f"at threshold {sig4(inputs.config['threshold'])} ({inputs.config.get('threshold_method')}, frozen on val)"
    )


def _describe(client: Any, run_id: str, inputs: RegisterInputs) -> str:
    """Add the evaluation headline and the report link to the run's description; returns the version's text."""
    link = report_link(client, run_id, inputs)
    text = f"**Evaluation** (external test domain): {headline_text(inputs)}." + (f" Report: {link}." if link else "")
    note = client.get_run(run_id).data.tags.get(NOTE_TAG)
    client.set_tag(run_id, NOTE_TAG, f"{note}\n\n{text}" if note else text)
    return f"Wrist fracture classifier (Swin). {text}"


def _create_version(client: Any, name: str, model_id: str, run_id: str, tags: dict[str, str], description: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Wrist fracture classifier (fracture-mlops).")
    return client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id, description=description
    )


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
        "gate_status": version.tags.get("gate.status") or "unknown",
        "registered": True,
        "created": created,
        "aliases": aliases,
        "tracking_uri": redact(tracking_uri()),
    }


RECEIPT_KEYS = ("registered", "name", "fingerprint", "forced", "gate_status")


def outcome_record(record: dict) -> dict:
    """What `register --out` writes (the DVC stage's output): the outcome, a pure function of the stage's inputs.

    The model's name and fingerprint, registered or not, forced or not; a refused model's gate reasons. Not the
    version number, run or model ids, or the tracking URI: they depend on what the registry held before (a fresh
    store gives version 1, a shared one version 17), so they would change dvc.lock on every fresh run. The
    version is found by its fingerprint (`registered_version`), and `fracture register` logs it.
    """
    if record.get("registered") is False:
        return record
    return {key: record[key] for key in RECEIPT_KEYS}


def registered_version(name: str, fingerprint: str) -> dict | None:
    """The registry's version of `name` with this fingerprint now: {"version", "aliases"}, or None when absent."""
    client = mlflow_client()
    version = find_version(client, name, fingerprint)
    if version is None:
        return None
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items() if v == version.version)
    return {"version": int(version.version), "aliases": aliases}


def not_registered_record(eval_dir: Path) -> dict:
    """The registration record of a model the evaluation gate refused: a result, kept with the experiment."""
    from fracture.registry.lineage import read_gate

    gate = read_gate(Path(eval_dir) / GATE)
    return {"registered": False, "why": f"gate {gate.status}", "reasons": list(gate.reasons)}


@registry_errors
def run_register(
    params: Params,
    model_dir: Path,
    eval_dir: Path,
    name: str | None = None,
    report_path: Path | None = None,
    force: bool = False,
    reason: str | None = None,
    validation_dir: Path | None = None,
    cv_dir: Path | None = None,
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
        validation_dir: validate's output dir; its validation.html and data_docs/ are logged where the report's
            relative links find them.
        cv_dir: a CV study's pool dir, attached as evidence when it is of the model's training recipe.

    Returns:
        The registration record: name, version, model_uri, run_id, fingerprint, created, aliases, ...

    Raises:
        GateError: the evaluation gate failed (exit 1). InputError: bad inputs, or the upload failed.
    """
    name = check_name(name or params.registered_model_name)
    check_force(force, reason)
    plan = check_plan(Path(model_dir), params, "register")
    inputs = load_register_inputs(model_dir, eval_dir, report_path, validation_dir)
    forced = check_gate(inputs.gate, Path(eval_dir) / GATE, force, reason)
    _check_loadable(Path(model_dir))
    fingerprint = fingerprint_model_dir(model_dir)
    cv = cv_evidence(Path(model_dir), Path(cv_dir)) if cv_dir is not None else None
    client = mlflow_client()
    _check_can_register(client, name)
    existing = find_version(client, name, fingerprint)
    if existing is not None:
        return _reuse_version(client, name, existing)
    run_id, origin = _resolve_run(client, params.train.experiment, fingerprint, params_hash(params))
    with tempfile.TemporaryDirectory(prefix="fracture-register-") as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp))
        with _all_or_nothing(client, _Pending(run_id, origin == "register_run")) as pending:
            model_id = _log_pyfunc(client, pending, staged, inputs.config, fingerprint)
            evidence_tags = {**_log_evidence(client, run_id, inputs), **log_cv_evidence(client, run_id, cv)}
            train_run = run_id if origin == "train_run" else None
            commit = client.get_run(run_id).data.tags.get(GIT_COMMIT_TAG)  # the training run's, else this checkout's
            why = reason if forced else None
            tags = {**version_tags(inputs, fingerprint, origin, why, train_run, commit), **evidence_tags}
            tags.update(plan_tags(params, plan))
            if inputs.report_path is not None:
                tags["evaluation_report"] = f"runs:/{run_id}/{EVIDENCE_DIR}/{Path(inputs.report_path).name}"
            description = _describe(client, run_id, inputs)
            version = _create_version(client, name, model_id, run_id, tags, description)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("registered %s version %s (run %s, %s); alias %s", name, version.version, run_id, origin, CHALLENGER)
    _log_links(client, run_id, name)
    return _record(client, name, client.get_model_version(name, version.version), created=True)


def _log_links(client: Any, run_id: str, name: str) -> None:
    """Where to look: direct MLflow UI links (a database store has no UI of its own: `mlflow ui` serves one)."""
    ui = ui_base(tracking_uri())
    if ui is None:
        ui = f"http://127.0.0.1:{UI_PORT}"
        log.info("MLflow UI: mlflow ui --backend-store-uri %s --port %d, then open:", redact(tracking_uri()), UI_PORT)
    for link in ui_links(ui, client.get_run(run_id).info.experiment_id, name):
        log.info("MLflow %s", link)
