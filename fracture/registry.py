"""MLflow model registry: register with lineage and evidence, gated promotion, rollback, download by alias.

Aliases, not stages (deprecated in MLflow 3): `register` points `challenger` at the new version; `promote`
moves `champion` when the candidate passes the gate against the current champion and keeps the old one as
`previous-champion`; `rollback` restores it. Everything a decision rests on is stored as version tags (the
lineage, the headline test metrics with their CIs, the frozen threshold, the gate result) so that the
registry alone shows why a version is where it is, and who moved it when.

Registration is all or nothing: the version is created only after the model's artifacts are uploaded; a
failed upload deletes the half-logged model (and the run, when it was created here) and raises InputError.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any, TypeVar

from fracture.config import Params, PromoteParams
from fracture.errors import GateError, InputError
from fracture.tracking import redact, tracking_uri

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
FINGERPRINT_TAG = "fingerprint"
AUROC, SENSITIVITY = "test.auroc", "test.frozen.sensitivity"
HEADLINE_METRICS = (AUROC, SENSITIVITY, "test.frozen.specificity", "test.auprc", "test.prevalence")
LINEAGE_KEYS = ("git_commit", "manifest_hash", "splits_hash", "params_hash", "split_strategy")
MODEL_DIR_FILES = ("model.pt", "config.json", "metadata.json", "history.csv", "params.yaml", "model_card.md")
EVAL_FILES = ("metrics.json", "gate.json", "thresholds.json")
MODEL_NAME = "model"  # the logged model's name inside its run
MAX_TAG_CHARS = 8000
# Runtime requirements written into the MLmodel; the fracture package itself must be installed where it is served.
PIP_PACKAGES = ("mlflow", "torch", "timm", "numpy", "pandas", "opencv-python-headless", "pydicom", "pyyaml")
_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))/?$")
_EPS = 1e-9  # tolerance for float comparisons against gate limits (0.85 - 0.84 > 0.01 in binary floats)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegisterInputs:
    """What registration reads from the model dir and the eval dir."""

    config: dict
    metadata: dict
    metrics: dict
    gate: dict
    thresholds: dict
    report_path: Path | None = None
    eval_files: tuple[Path, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------------------ helpers
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return os.environ.get("FRACTURE_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def _client() -> Any:
    """An MlflowClient on the explicitly resolved tracking URI (also set globally for log_model)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _first_line(err: BaseException, limit: int = 400) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else type(err).__name__)[:limit]


def _registry_errors(fn: F) -> F:
    """Turn MLflow / connection errors into InputError naming the tracking server (no traceback, no secrets)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        try:
            return fn(*args, **kwargs)
        except (MlflowException, RequestException) as err:
            raise InputError(f"MLflow registry at {redact(tracking_uri())}: {_first_line(err)}") from None

    return wrapper  # type: ignore[return-value]


def _tag(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text[:MAX_TAG_CHARS]


# ------------------------------------------------------------------------------------------------ pure: register
def _check_name(name: str) -> str:
    """Registered model names go into registry search filters: no quotes, no surrounding blanks."""
    if not name.strip() or name != name.strip() or any(c in name for c in "'\"`/@"):
        raise InputError(f"registered model name {name!r}: must be non-empty, without quotes, '/' or '@'")
    return name


def fingerprint_model_dir(model_dir: Path) -> str:
    """sha256 over model.pt then config.json: the identity of a trained model, whatever its dir is called."""
    import hashlib

    h = hashlib.sha256()
    for name in ("model.pt", "config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(f"{path}: missing (a model dir needs model.pt, config.json and metadata.json)")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def check_force(force: bool, reason: str | None) -> None:
    """`--force` must say why.

    Raises:
        InputError: force without a non-empty reason.
    """
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT: say why the gate may be overridden (it is recorded)")


def check_gate(gate: dict, gate_path: Path, force: bool, reason: str | None) -> bool:
    """Apply the evaluation gate; returns True when a failed gate is overridden by force.

    Raises:
        GateError: the gate failed and the override was not asked for.
    """
    if gate.get("passed") is True:
        return False
    reasons = "; ".join(map(str, gate.get("reasons") or [])) or "no reason recorded"
    if force:
        log.warning("evaluation gate failed (%s); registering anyway: --force, reason: %s", reasons, reason)
        return True
    raise GateError(f"{gate_path}: evaluation gate failed, not registering: {reasons} (override: --force --reason)")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The headline test metrics with their CI bounds, as present in metrics.json."""
    out = {}
    for key in HEADLINE_METRICS:
        for name in (key, f"{key}_ci_low", f"{key}_ci_high"):
            value = metrics.get(name)
            if isinstance(value, int | float) and value == value:  # skip NaN
                out[name] = float(value)
    return out


def version_tags(inputs: RegisterInputs, fingerprint: str, run_origin: str, reason: str | None) -> dict[str, str]:
    """Every tag a new version gets: lineage, evidence, gate, threshold, who/when, and the override if any."""
    meta, gate = inputs.metadata, inputs.gate
    tags = {key: str(meta.get(key) if meta.get(key) is not None else "unknown") for key in LINEAGE_KEYS}
    tags.update({name: repr(value) for name, value in headline_metrics(inputs.metrics).items()})
    tags.update(
        {
            FINGERPRINT_TAG: fingerprint,
            "threshold": repr(float(inputs.config["threshold"])),
            "threshold_method": str(inputs.thresholds.get("method") or inputs.config.get("threshold_method")),
            "gate.passed": "true" if gate.get("passed") is True else "false",
            "gate.reasons": _tag(list(gate.get("reasons") or [])),
            "run_origin": run_origin,
            "train_run_id": str(meta.get("mlflow_run_id") or "none"),
            "registered_by": _user(),
            "registered_at": _now(),
        }
    )
    if reason is not None and gate.get("passed") is not True:
        tags.update({"forced": "true", "force_reason": _tag(reason.strip())})
    return tags


# -------------------------------------------------------------------------------------------------- load inputs
def _read_json(path: Path) -> dict:
    from fracture.io import read_json

    if not path.is_file():
        raise InputError(f"{path}: missing")
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def load_register_inputs(model_dir: Path, eval_dir: Path, report_path: Path | None = None) -> RegisterInputs:
    """Read and cross-check the model dir and the eval dir.

    Raises:
        InputError: a file is missing or unreadable, a headline metric is absent, or the eval dir's frozen
            threshold is not the model's (the evaluation belongs to another model).
    """
    model_dir, eval_dir = Path(model_dir), Path(eval_dir)
    config, metadata = _read_json(model_dir / "config.json"), _read_json(model_dir / "metadata.json")
    metrics, gate = _read_json(eval_dir / "metrics.json"), _read_json(eval_dir / "gate.json")
    thresholds = _read_json(eval_dir / "thresholds.json")
    for key in (AUROC, SENSITIVITY):
        if not isinstance(metrics.get(key), int | float):
            raise InputError(f"{eval_dir / 'metrics.json'}: no numeric {key!r} (needed for promotion gates)")
    if not isinstance(config.get("threshold"), int | float):
        raise InputError(f"{model_dir / 'config.json'}: no frozen 'threshold'")
    frozen = thresholds.get("frozen")
    if isinstance(frozen, int | float) and abs(float(frozen) - float(config["threshold"])) > 1e-6:
        raise InputError(
            f"{eval_dir / 'thresholds.json'}: frozen threshold {frozen} is not the model's {config['threshold']} "
            f"in {model_dir / 'config.json'}; this evaluation belongs to another model"
        )
    if report_path is None and (eval_dir.parent / "report.html").is_file():
        report_path = eval_dir.parent / "report.html"
    if report_path is not None and not Path(report_path).is_file():
        raise InputError(f"{report_path}: report not found")
    files = tuple(eval_dir / name for name in EVAL_FILES)
    return RegisterInputs(config, metadata, metrics, gate, thresholds, report_path, files)


def _check_loadable(model_dir: Path) -> None:
    """Refuse a model dir whose weights do not rebuild the configured network (before anything is uploaded).

    Raises:
        InputError: from fracture.model, naming the file and the mismatch.
    """
    from fracture.model import load_model_dir

    load_model_dir(model_dir, map_location="cpu")


# ----------------------------------------------------------------------------------------------- MLflow phases
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
        log.warning("clean-up after a failed registration could not remove %s (%s)", target, _first_line(err))


def _log_pyfunc(client: Any, pending: _Pending, staged: Path, config: dict, fingerprint: str) -> str:
    """Log the pyfunc (artifacts uploaded to the artifact store) and link it to the run; returns the model id.

    Raises:
        InputError: the artifact upload failed (endpoint down, bucket missing, refused credentials).
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.entities import LoggedModelOutput

    from fracture.serving import MODEL_DIR_ARTIFACT, FracturePyfunc, encode_bytes, signature

    exp_id = client.get_run(pending.run_id).info.experiment_id
    tags = {FINGERPRINT_TAG: fingerprint}
    model = client.create_logged_model(exp_id, name=MODEL_NAME, source_run_id=pending.run_id, tags=tags)
    pending.model_id = model.model_id
    example = pd.DataFrame({"image": [encode_bytes(example_image_png(int(config["img_size"])))]})
    try:
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            model_id=model.model_id,
            python_model=FracturePyfunc(),
            artifacts={MODEL_DIR_ARTIFACT: str(staged)},
            signature=signature(),
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
    except Exception as err:
        target = _upload_target(client, model.model_id)
        detail = _first_line(_root_error(err))
        server_failed = re.search(r"\b500\b", detail) is not None
        hint = " (the tracking server failed to store them: check its artifact store / S3 endpoint)"
        hint = hint if server_failed else ""
        raise InputError(f"could not upload model artifacts to {target}: {detail}{hint}") from None
    client.log_outputs(pending.run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _log_evidence(client: Any, run_id: str, inputs: RegisterInputs) -> None:
    """The evaluation files, the report and the headline test metrics, on the run."""
    import time

    from mlflow.entities import Metric

    try:
        for path in inputs.eval_files:
            client.log_artifact(run_id, str(path), "evaluation")
        if inputs.report_path is not None:
            client.log_artifact(run_id, str(inputs.report_path), "evaluation")
    except Exception as err:
        raise InputError(f"could not upload the evaluation evidence for run {run_id}: {_first_line(err)}") from None
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in headline_metrics(inputs.metrics).items()]
    client.log_batch(run_id, metrics=metrics)


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
        "created": created,
        "aliases": aliases,
        "tracking_uri": redact(tracking_uri()),
    }


# ------------------------------------------------------------------------------------------------------ register
@_registry_errors
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
    name = _check_name(name or params.register_.model_name)
    check_force(force, reason)
    inputs = load_register_inputs(model_dir, eval_dir, report_path)
    forced = check_gate(inputs.gate, Path(eval_dir) / "gate.json", force, reason)
    _check_loadable(Path(model_dir))
    fingerprint = fingerprint_model_dir(model_dir)
    client = _client()
    existing = find_version(client, name, fingerprint)
    if existing is not None:
        return _reuse_version(client, name, existing)
    run_id, origin = _resolve_run(client, inputs.metadata, params.train.experiment, fingerprint)
    with tempfile.TemporaryDirectory(prefix="fracture-register-") as tmp:
        staged = _stage_model_dir(Path(model_dir), Path(tmp))
        with _all_or_nothing(client, _Pending(run_id, origin == "register_run")) as pending:
            model_id = _log_pyfunc(client, pending, staged, inputs.config, fingerprint)
            _log_evidence(client, run_id, inputs)
            tags = version_tags(inputs, fingerprint, origin, reason if forced else None)
            if inputs.report_path is not None:
                tags["evaluation_report"] = f"runs:/{run_id}/evaluation/{Path(inputs.report_path).name}"
            version = _create_version(client, name, model_id, run_id, tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("registered %s version %s (run %s, %s); alias %s", name, version.version, run_id, origin, CHALLENGER)
    return _record(client, name, client.get_model_version(name, version.version), created=True)


# ------------------------------------------------------------------------------------------------- pure: promote
def _metric_tag(tags: dict[str, str], key: str, version: str | None) -> float:
    try:
        return float(tags[key])
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"version {version} has no numeric tag {key!r}; was it registered by `fracture register`?"
        ) from None


def _check(name: str, candidate: Any, champion: Any, limit: Any, passed: bool | None, why: str = "") -> dict:
    return {"check": name, "candidate": candidate, "champion": champion, "limit": limit, "passed": passed, "why": why}


def _absolute_checks(
    candidate: dict[str, str], champion: dict[str, str] | None, promote: PromoteParams, versions: tuple[str, str | None]
) -> list[dict]:
    cand_v, champ_v = versions
    gate_ok = candidate.get("gate.passed") == "true"
    gate_why = f"version {cand_v} was registered although its evaluation gate failed"
    sens = _metric_tag(candidate, SENSITIVITY, cand_v)
    champ_sens = None if champion is None else _metric_tag(champion, SENSITIVITY, champ_v)
    sens_ok = sens + _EPS >= promote.min_sensitivity
    sens_why = f"{SENSITIVITY} {sens:.4f} < min_sensitivity {promote.min_sensitivity:.4f}"
    return [
        _check("evaluation gate at registration", candidate.get("gate.passed"), None, "true", gate_ok, gate_why),
        _check(f"{SENSITIVITY} >= min", sens, champ_sens, promote.min_sensitivity, sens_ok, sens_why),
    ]


def _auroc_check(
    candidate: dict[str, str], champion: dict[str, str] | None, promote: PromoteParams, versions: tuple[str, str | None]
) -> dict:
    cand_v, champ_v = versions
    auroc = _metric_tag(candidate, AUROC, cand_v)
    if champion is None:
        return _check(f"{AUROC} (no champion: absolute gates only)", auroc, None, None, None)
    ref = _metric_tag(champion, AUROC, champ_v)
    limit = ref - promote.max_auroc_drop
    why = (
        f"{AUROC} {auroc:.4f} is {ref - auroc:.4f} below champion v{champ_v} ({ref:.4f}); "
        f"max_auroc_drop {promote.max_auroc_drop:.4f}"
    )
    return _check(f"{AUROC} drop <= max_auroc_drop", auroc, ref, limit, auroc + _EPS >= limit, why)


def compare_versions(
    candidate: dict[str, str], champion: dict[str, str] | None, promote: PromoteParams, versions: tuple[str, str | None]
) -> dict:
    """Gate a candidate against the champion (absolute gates only when there is none).

    Args:
        candidate: the candidate version's tags.
        champion: the current champion's tags, or None before the first promotion.
        promote: `register.promote` params (max_auroc_drop, min_sensitivity).
        versions: (candidate version, champion version or None), for the messages.

    Returns:
        {"candidate_version", "champion_version", "passed", "reasons", "checks": [...]}; a check's `passed` is
        None for rows shown for information only.
    """
    checks = _absolute_checks(candidate, champion, promote, versions)
    checks.append(_auroc_check(candidate, champion, promote, versions))
    for key in ("test.frozen.specificity", "threshold"):
        if key in candidate:
            checks.append(_check(key, candidate[key], (champion or {}).get(key), None, None))
    reasons = [c["why"] for c in checks if c["passed"] is False]
    for c in checks:
        del c["why"]
    return {
        "candidate_version": versions[0],
        "champion_version": versions[1],
        "passed": not reasons,
        "reasons": reasons,
        "checks": checks,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


def format_comparison(comparison: dict) -> str:
    """The comparison as a plain-text table (logged at INFO)."""
    champ = comparison["champion_version"]
    head = ("check", f"candidate v{comparison['candidate_version']}", f"champion v{champ}" if champ else "champion")
    rows = [(*head, "limit", "result")]
    for c in comparison["checks"]:
        result = {True: "pass", False: "FAIL", None: "info"}[c["passed"]]
        rows.append((c["check"], _cell(c["candidate"]), _cell(c["champion"]), _cell(c["limit"]), result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "PASSED" if comparison["passed"] else "FAILED: " + "; ".join(comparison["reasons"])
    return "\n".join([*lines, f"gate {verdict}"])


# ------------------------------------------------------------------------------------------------ promote/rollback
def _aliases(client: Any, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException:
        raise InputError(f"no registered model {name!r} on {redact(tracking_uri())}") from None


def _candidate(client: Any, name: str, version: int | None, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    aliases = _aliases(client, name)
    if version is None:
        if alias not in aliases:
            raise InputError(f"registered model {name!r} has no alias {alias!r} (aliases: {sorted(aliases) or 'none'})")
        version = int(aliases[alias])
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise InputError(f"registered model {name!r} has no version {version}") from None


def _append_history(client: Any, name: str, event: dict) -> None:
    """Model-level history: tags `history.0001`, `history.0002`, ... (JSON), shown on the registered model."""
    tags = client.get_registered_model(name).tags
    n = 1 + sum(1 for key in tags if key.startswith("history."))
    client.set_registered_model_tag(name, f"history.{n:04d}", _tag(event))


def _apply_promotion(client: Any, name: str, candidate: Any, champion: Any | None, event: dict) -> None:
    v = candidate.version
    for key, value in {
        "promoted_by": event["by"],
        "promoted_at": event["at"],
        "promotion_reason": event["reason"] or "",
        "promotion_forced": "true" if event["forced"] else "false",
        "promoted_from": champion.version if champion is not None else "none",
        "promotion_comparison": _tag(event["comparison"]),
    }.items():
        client.set_model_version_tag(name, v, key, value)
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        client.set_model_version_tag(name, champion.version, "demoted_at", event["at"])
        client.set_model_version_tag(name, champion.version, "superseded_by", v)
    client.set_registered_model_alias(name, CHAMPION, v)
    if _aliases(client, name).get(CHALLENGER) == v:
        client.delete_registered_model_alias(name, CHALLENGER)  # the challenger has become the champion
    _append_history(client, name, {k: event[k] for k in ("event", "version", "from", "by", "at", "reason", "forced")})


@_registry_errors
def run_promote(
    params: Params,
    name: str | None,
    version: int | None = None,
    alias: str = "challenger",
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
) -> dict:
    """Move `champion` to the candidate when it passes the gate against the current champion.

    Args:
        params: resolved params (`register.promote` gates, default model name).
        name: registered model name (default: params).
        version: the candidate version; when None, the version holding `alias`.
        alias: alias of the candidate when no version is given.
        dry_run: compare and log, change nothing.
        force: promote although the gate failed (needs reason).
        reason: why (recorded on the version, required with force).

    Returns:
        {"name", "candidate_version", "champion_version", "passed", "promoted", "dry_run", "forced", "comparison"}.

    Raises:
        GateError: the candidate fails the gate and force was not given (also in a dry run, exit 1).
        InputError: unknown model, version or alias, or force without reason.
    """
    name = name or params.register_.model_name
    check_force(force, reason)
    client = _client()
    candidate = _candidate(client, name, version, alias)
    champ_v = _aliases(client, name).get(CHAMPION)
    champion = client.get_model_version(name, champ_v) if champ_v else None
    record = {"name": name, "candidate_version": int(candidate.version), "dry_run": dry_run, "promoted": False}
    record["champion_version"] = int(champ_v) if champ_v else None
    if champion is not None and champion.version == candidate.version:
        log.info("%s version %s is already the champion; nothing to do", name, candidate.version)
        return {**record, "passed": True, "forced": False, "comparison": None}
    cmp = compare_versions(
        candidate.tags, champion.tags if champion else None, params.register_.promote, (candidate.version, champ_v)
    )
    log.info("promotion gate for %s:\n%s", name, format_comparison(cmp))
    record.update(passed=cmp["passed"], forced=not cmp["passed"] and force, comparison=cmp)
    if not cmp["passed"] and not force:
        raise GateError(f"{name} version {candidate.version} not promoted: {'; '.join(cmp['reasons'])}")
    if dry_run:
        log.info("dry run: would move %s of %s to version %s; nothing changed", CHAMPION, name, candidate.version)
        return record
    event = {
        "event": "promote",
        "version": candidate.version,
        "from": champ_v,
        "by": _user(),
        "at": _now(),
        "reason": reason,
        "forced": record["forced"],
        "comparison": cmp,
    }
    _apply_promotion(client, name, candidate, champion, event)
    log.info("%s: %s -> version %s (previous: %s)", name, CHAMPION, candidate.version, champ_v or "none")
    return {**record, "promoted": True, "promoted_by": event["by"], "promoted_at": event["at"]}


@_registry_errors
def run_rollback(params: Params, name: str | None) -> dict:
    """Point `champion` back at `previous-champion`; the demoted version is tagged `rolled_back_at`.

    Returns:
        {"name", "champion_version" (restored), "rolled_back_version"}.

    Raises:
        InputError: no champion, or no previous champion to return to.
    """
    name = name or params.register_.model_name
    client = _client()
    aliases = _aliases(client, name)
    if CHAMPION not in aliases:
        raise InputError(f"registered model {name!r} has no {CHAMPION}; nothing to roll back")
    if PREVIOUS not in aliases:
        raise InputError(f"registered model {name!r} has no {PREVIOUS} to roll back to")
    current, previous, at, by = aliases[CHAMPION], aliases[PREVIOUS], _now(), _user()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)  # a second rollback must not bring the bad model back
    for key, value in {"rolled_back_at": at, "rolled_back_by": by, "rolled_back_to": previous}.items():
        client.set_model_version_tag(name, current, key, value)
    client.set_model_version_tag(name, previous, "restored_at", at)
    _append_history(client, name, {"event": "rollback", "version": previous, "from": current, "by": by, "at": at})
    log.info("%s: %s rolled back from version %s to version %s", name, CHAMPION, current, previous)
    return {"name": name, "champion_version": int(previous), "rolled_back_version": int(current)}


# ------------------------------------------------------------------------------------------------------ download
def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, alias, version).

    Raises:
        InputError: any other form.
    """
    m = _URI_RE.match(uri.strip())
    if m is None:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


@_registry_errors
def download_model_dir(uri: str, dst: Path) -> Path:
    """Download a registered version's model dir (model.pt, config.json, metadata.json) into `dst`.

    The downloaded files are checked against the version's fingerprint tag before they are moved into place.

    Returns:
        `dst`, now a local model dir loadable by `fracture.model.load_model_dir`.

    Raises:
        InputError: bad URI, unknown model/alias/version, missing files, or a fingerprint mismatch.
    """
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    name, alias, version = parse_model_uri(uri)
    client = _client()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        raise InputError(f"{uri}: no such registered model version on {redact(tracking_uri())}") from None
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    repo = ModelsArtifactRepository(f"models:/{name}/{mv.version}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst) as tmp:
        mlmodel = yaml.safe_load(Path(repo.download_artifacts("MLmodel", tmp)).read_text())
        sub = mlmodel["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
        local = Path(repo.download_artifacts(sub, tmp))
        _check_download(uri, local, mv.tags.get(FINGERPRINT_TAG))
        for item in local.iterdir():
            os.replace(item, dst / item.name)
    log.info("downloaded %s (version %s) to %s", uri, mv.version, dst)
    return dst


def _check_download(uri: str, local: Path, fingerprint: str | None) -> None:
    missing = [f for f in ("model.pt", "config.json", "metadata.json") if not (local / f).is_file()]
    if missing:
        raise InputError(f"{uri}: the registered model dir lacks {', '.join(missing)}")
    if fingerprint and fingerprint_model_dir(local) != fingerprint:
        raise InputError(f"{uri}: downloaded model.pt/config.json do not match the version's fingerprint tag")
