"""Run infra validation: build the request set, serve the candidate, send, check, record.

Entry points: `run_infravalidate` for a model that is served from a URI with its model dir and evaluation at
hand (the KFP task, before registration), and `validate_version` for a registered version (promotion): its
`predictions.parquet` comes from the version's evaluation evidence on the run, its model dir from the registry.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fracture.base.errors import InputError, MultiLine, first_line
from fracture.config import InfraValidationParams, Params
from fracture.contracts.artifacts import MODEL_CONFIG, PREDICTIONS
from fracture.infravalidate import checks
from fracture.infravalidate.checks import Answer, Case
from fracture.infravalidate.requestset import bad_cases, evaluation_rows, good_cases, path_roots, select_rows
from fracture.serving.server import LOOPBACK, running_server, verified_source, wait_port_closed

log = logging.getLogger(__name__)

EVIDENCE_PREDICTIONS = "evaluation/predictions.parquet"  # on the version's run, uploaded by `fracture register`


def post_json(url: str, body: dict, timeout_s: float) -> Answer:
    """POST a JSON body; the answer's status is 0 when no HTTP answer arrived (timeout, connection reset)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - our loopback server
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        status, text = 0, f"no answer: {err}"
    seconds = time.perf_counter() - start
    try:
        return Answer(status, json.loads(text), seconds)
    except json.JSONDecodeError:
        return Answer(status, text, seconds)


def ping(url: str) -> int:
    """HTTP status of GET /ping (0 when there is no answer)."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as resp:  # noqa: S310 - our loopback server
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def exercise(
    url: str, good: Sequence[Case], bad: Sequence[Case], iv: InfraValidationParams, threshold: float
) -> tuple[list[dict], dict]:
    """Send the request set to a running server and check the answers; returns (checks, measured facts)."""
    invocations = f"{url}/invocations"
    answers = [post_json(invocations, c.body, iv.request_timeout_s) for c in good]
    bad_answers = [post_json(invocations, c.body, iv.request_timeout_s) for c in bad]
    ping_status = ping(url)
    repeat = post_json(invocations, good[0].body, iv.request_timeout_s)
    timed = [good[i % len(good)] for i in range(iv.latency_requests)]
    seconds = [a.seconds for a in answers] + [
        post_json(invocations, c.body, iv.request_timeout_s).seconds for c in timed
    ]
    found = [
        checks.check_answered(good, answers),
        checks.check_probabilities(good, answers, iv.tolerance),
        checks.check_threshold(good, answers, threshold),
        checks.check_bad_inputs(bad, bad_answers),
        checks.check_still_serving(ping_status, answers[0], repeat),
        checks.check_latency(seconds, iv.max_p95_latency_s),
    ]
    diffs = checks.probability_differences(good, answers)
    facts = {"max_abs_diff": max(diffs.values(), default=None), "n_requests": len(good) + len(bad) + 2 + len(timed)}
    return found, {**facts, **checks.latency_summary(seconds)}


def offline_model(model_dir: Path) -> Any:
    """Offline probabilities for image files from the model dir, through the `fracture predict` decode path."""
    from fracture.model.core import CONFIG_FILE, load_model_dir, predict_proba, read_contract

    model, config = load_model_dir(model_dir, map_location="cpu")
    contract = read_contract(config, Path(model_dir) / CONFIG_FILE)  # the model's own input contract

    def predict(paths: Sequence[Path]) -> np.ndarray:
        images = np.stack([contract.decode(Path(p)) for p in paths])
        return predict_proba(model, images, contract.mean, contract.std, batch_size=contract.batch_size)

    return predict


def build_request_set(
    predictions_path: Path, manifest_path: Path, data_root: Path, model_dir: Path, n_images: int, work_dir: Path
) -> tuple[list[Case], list[Case]]:
    """(good cases, bad cases) from the evaluation's predictions and the manifest's files.

    Raises:
        InputError: the predictions or the manifest cannot be read, or no evaluation image is readable.
    """
    from fracture.base.io import read_manifest, read_parquet

    predictions = read_parquet(Path(predictions_path))
    manifest, roots = read_manifest(Path(manifest_path))
    rows = select_rows(evaluation_rows(predictions, manifest, roots, Path(data_root)), n_images)
    good = good_cases(rows, offline_model(Path(model_dir)), Path(work_dir))
    rasters = [Path(f) for f, k in zip(rows["file"], rows["kind"], strict=True) if k in ("png8", "png16")]
    bad = bad_cases(rasters[0] if rasters else Path(rows["file"].iloc[0]))
    log.info("request set: %d images (%s), %d requests, %d bad inputs", len(rows), ", ".join(sorted(set(rows["kind"]))),
             len(good), len(bad))  # fmt: skip
    return good, bad


def _kinds(good: Sequence[Case]) -> list[str]:
    return sorted({c.name.rsplit("/", 2)[-2] for c in good})


def validate_served(
    params: Params,
    model_uri: str,
    model_dir: Path,
    predictions_path: Path,
    manifest_path: Path,
    data_root: Path,
    env: dict[str, str] | None = None,
) -> dict:
    """Serve `model_uri` with `mlflow models serve` on loopback, replay the evaluation, and check the answers.

    Args:
        params: resolved params (`register.infra_validation`, `serve`).
        model_uri: what the server loads (`models:/NAME/VERSION`, or a local pyfunc dir).
        model_dir: the same model's dir (config.json's frozen threshold; offline reference for re-encoded images).
        predictions_path: the evaluation's predictions.parquet.
        manifest_path: the manifest the model was evaluated on (image files of the predictions).
        data_root: where the manifest's relative source roots resolve.
        env: the server's base environment (default: this process's).

    Returns:
        {"passed", "reasons", "checks", "max_abs_diff", "p95_latency_s", "n_requests", "model_uri", ...}; a server
        that does not start, or a request set that cannot be built, gives a failed result with the reason.
    """
    iv = params.register_.infra_validation
    threshold = float(json.loads((Path(model_dir) / MODEL_CONFIG).read_text())["threshold"])
    facts: dict[str, Any] = {"model_uri": model_uri, "threshold": threshold, "tolerance": iv.tolerance}
    with tempfile.TemporaryDirectory(prefix="fracture-infravalidate-") as tmp:
        try:
            good, bad = build_request_set(predictions_path, manifest_path, data_root, model_dir, iv.n_images, Path(tmp))
        except InputError as err:
            return checks.failed_result(f"request set: {first_line(err)}", **facts)
        facts.update(kinds=_kinds(good), n_images=len({c.name.rsplit("/", 1)[0] for c in good}))
        # Its own server reads the request set's files by `path`: only their folders (serve.allowed_path_roots
        # keeps applying to every other server, off by default).
        server_args = {"workers": params.serve.workers, "timeout_s": params.serve.timeout_s}
        server_args["path_roots"] = path_roots(good)
        try:
            with (
                verified_source(model_uri) as source,
                running_server(source, startup_timeout_s=iv.startup_timeout_s, env=env, **server_args) as server,
            ):
                found, measured = exercise(server.url, good, bad, iv, threshold)
        except InputError as err:
            return checks.failed_result(f"serving {model_uri}: {first_line(err)}", **facts)
    facts["server_stopped"] = wait_port_closed(LOOPBACK, server.port)
    if not facts["server_stopped"]:
        found.append({"check": "server stopped", "passed": False, "detail": f"port {server.port} still open"})
    result = checks.summarise(found, **facts, **measured)
    _log_result(result)
    return result


def _log_result(result: dict) -> None:
    lines = [f"  {'pass' if c['passed'] else 'FAIL'}  {c['check']}: {c['detail']}" for c in result["checks"]]
    verdict = "PASSED" if result["passed"] else "FAILED: " + "; ".join(result["reasons"])
    table = MultiLine("\n".join(lines))  # newlines meant: kept by the log filter
    log.info("infra validation of %s:\n%s\ninfra validation %s", result.get("model_uri"), table, verdict)


def run_infravalidate(
    params: Params, model_dir: Path, eval_dir: Path, manifest_path: Path, data_root: Path, out_path: Path | None
) -> dict:
    """The `infravalidate` step: serve a model dir (saved as the registered pyfunc would be) and replay its evaluation.

    Writes the result to `out_path` (JSON) when given. Used before registration (the KFP task) and by
    `fracture infravalidate`; `fracture promote` validates the registered version instead.

    Raises:
        GateError: the model failed infra validation (the result file is written first).
        InputError: the model dir cannot be saved as a pyfunc.
    """
    from fracture.base.errors import GateError
    from fracture.base.io import write_json
    from fracture.registry.register import save_pyfunc

    with tempfile.TemporaryDirectory(prefix="fracture-pyfunc-") as tmp:
        pyfunc_dir = save_pyfunc(Path(model_dir), Path(tmp) / "pyfunc")
        predictions = Path(eval_dir) / PREDICTIONS
        result = validate_served(params, str(pyfunc_dir), Path(model_dir), predictions, manifest_path, data_root)
    result["model_uri"] = str(model_dir)
    if out_path is not None:
        write_json(Path(out_path), result)
    if not result["passed"]:
        raise GateError(f"{model_dir}: infra validation failed: {'; '.join(result['reasons'])}")
    return result
