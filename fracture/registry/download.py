"""Download a registered version's model dir by `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from fracture.errors import InputError
from fracture.registry.client import access_error, mlflow_client, registry_errors
from fracture.registry.lineage import fingerprint_model_dir
from fracture.registry.names import FINGERPRINT_TAG
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


@registry_errors
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
    client = mlflow_client()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        missing = InputError(f"{uri}: no such registered model version on {redact(tracking_uri())}")
        raise access_error(err) or missing from None
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
