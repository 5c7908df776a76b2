"""Download a registered version's model dir by `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fracture.base.errors import InputError
from fracture.registry.client import access_error, mlflow_client, registry_errors
from fracture.registry.names import FINGERPRINT_TAG
from fracture.registry.verify import check_mlmodel, check_model_files, check_weights
from fracture.tracking import redact, tracking_uri

log = logging.getLogger(__name__)

_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))/?$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, alias, version).

    Raises:
        InputError: any other form.
    """
    m = _URI_RE.match(uri.strip())
    if m is None:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def _version(uri: str) -> tuple[str, Any]:
    """(name, model version) behind `uri`.

    Raises:
        InputError: bad URI or no such model / alias / version. AccessError: 401 / 403.
    """
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    client = mlflow_client()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        missing = InputError(f"{uri}: no such registered model version on {redact(tracking_uri())}")
        raise access_error(err) or missing from None
    return name, mv


def _mlmodel(repo: Any, tmp: str) -> dict:
    import yaml

    return yaml.safe_load(Path(repo.download_artifacts("MLmodel", tmp)).read_text()) or {}


@registry_errors
def download_model_dir(uri: str, dst: Path) -> Path:
    """Download a registered version's model dir (model.pt, config.json, metadata.json) into `dst`.

    The version must be models-from-code (no pickle) and the files must hash to the version's fingerprint tag
    before they are moved into place (`fracture.registry.verify`).

    Returns:
        `dst`, now a local model dir loadable by `fracture.model.core.load_model_dir`.

    Raises:
        InputError: bad URI, unknown model/alias/version, a pickled pyfunc, missing files, or a fingerprint mismatch.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    name, mv = _version(uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    repo = ModelsArtifactRepository(f"models:/{name}/{mv.version}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst) as tmp:
        sub = check_mlmodel(uri, _mlmodel(repo, tmp))
        local = Path(repo.download_artifacts(sub, tmp))
        check_weights(uri, local, mv.tags.get(FINGERPRINT_TAG))
        for item in local.iterdir():
            os.replace(item, dst / item.name)
    log.info("downloaded %s (version %s) to %s", uri, mv.version, dst)
    return dst


@registry_errors
def fetch_model(uri: str, dst: Path) -> Path:
    """Download a registered version's whole MLflow model into `dst`, verified, for serving or promotion.

    Checked before anything is loaded: models-from-code only, no pickle file, the model code is this package's
    `model_code.py`, and the weights hash to the version's fingerprint tag. Serve the result with
    `mlflow models serve -m DST --env-manager local` (or load it with `mlflow.pyfunc.load_model`).

    Returns:
        `dst` (it must not exist yet, or be empty).

    Raises:
        InputError: bad URI, unknown version, or any failed check (the message says which).
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    name, mv = _version(uri)
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise InputError(f"{dst}: not empty; fetch a model into a new directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    repo = ModelsArtifactRepository(f"models:/{name}/{mv.version}")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dst.parent) as tmp:
        mlmodel = _mlmodel(repo, tmp)
        sub = check_mlmodel(uri, mlmodel)
        (Path(tmp) / "model").mkdir()
        root = Path(repo.download_artifacts("", str(Path(tmp) / "model")))
        check_model_files(uri, root, mlmodel["flavors"]["python_function"]["model_code_path"])
        check_weights(uri, root / sub, mv.tags.get(FINGERPRINT_TAG))
        if dst.exists():
            dst.rmdir()
        os.replace(root, dst)
    log.info("fetched and verified %s (version %s) into %s", uri, mv.version, dst)
    return dst
