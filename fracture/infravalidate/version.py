"""Infra validation of a registered model version (called by `fracture promote` before it moves `champion`).

The server loads `models:/NAME/VERSION` from the registry (what a deployment would load); the version's own
evaluation evidence (`evaluation/predictions.parquet` on its run, uploaded by `fracture register`) gives the
offline probabilities, and its model dir, downloaded with the fingerprint check, gives the frozen threshold.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracture.base.errors import InputError, first_line
from fracture.config import Params
from fracture.infravalidate import checks
from fracture.infravalidate.run import EVIDENCE_PREDICTIONS, validate_served
from fracture.tracking import tracking_uri

log = logging.getLogger(__name__)


def fetch_predictions(client: Any, version: Any, dst: Path) -> Path:
    """Download the version's `evaluation/predictions.parquet` from its run.

    Raises:
        InputError: the run holds no predictions.parquet (registered before it was part of the evidence).
    """
    from mlflow.exceptions import MlflowException

    try:
        local = client.download_artifacts(version.run_id, EVIDENCE_PREDICTIONS, str(dst))
    except (MlflowException, OSError) as err:
        raise InputError(
            f"version {version.version}: no {EVIDENCE_PREDICTIONS} on run {version.run_id} ({first_line(err)}); "
            "register it again from an eval dir written by `fracture evaluate`"
        ) from None
    return Path(local)


def server_env() -> dict[str, str]:
    """This process's environment with the tracking URI spelled out (the server resolves `models:/` URIs)."""
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}


def validate_version(
    params: Params, client: Any, name: str, version: Any, manifest_path: Path, data_root: Path
) -> dict:
    """Serve `models:/NAME/VERSION` and replay its evaluation; returns the result (see `validate_served`)."""
    from fracture.registry.download import download_model_dir

    uri = f"models:/{name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="fracture-infravalidate-") as tmp:
        try:
            predictions = fetch_predictions(client, version, Path(tmp))
            model_dir = download_model_dir(uri, Path(tmp) / "model")
        except InputError as err:
            return checks.failed_result(f"evidence: {first_line(err)}", model_uri=uri)
        return validate_served(params, uri, model_dir, predictions, manifest_path, data_root, env=server_env())


def record_result(client: Any, name: str, version: str, result: dict, at: str) -> None:
    """The result as `infra_validation.*` tags on the version."""
    for key, value in checks.result_tags(result, at).items():
        client.set_model_version_tag(name, version, key, value)


@dataclass(frozen=True)
class InfraData:
    """Where infra validation finds the evaluation's image files: the manifest and the data root."""

    manifest_path: Path
    data_root: Path


def infra_gate(params: Params, client: Any, name: str, version: Any, data: InfraData, record: bool, at: str) -> dict:
    """Validate a candidate version and (unless `record` is False, a dry run) tag the version with the result."""
    result = validate_version(params, client, name, version, data.manifest_path, data.data_root)
    if record:
        record_result(client, name, version.version, result, at)
    return result
