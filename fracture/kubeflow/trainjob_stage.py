"""The TrainJob's staging area: one folder per job on the shared volume or under an S3 prefix.

Layout under `<root>` (`<volume_mount>/<job>` or `<staging_url>/<job>`): `inputs/` (manifest.parquet,
splits.parquet, cache/, params.yaml) written by the launcher, `model/` written by node 0 (rank 0). Both sides use
fsspec, so one code path serves a local mount and S3 / MinIO (endpoint from `MLFLOW_S3_ENDPOINT_URL`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import fsspec
from fsspec import AbstractFileSystem

from fracture.config import Params, dump_params
from fracture.contracts.artifacts import MANIFEST, SPLITS
from fracture.contracts.cluster import TrainJobParams

log = logging.getLogger(__name__)

INPUTS, MODEL = "inputs", "model"
INPUT_FILES = {"manifest": MANIFEST, "splits": SPLITS, "cache": "cache", "params": "params.yaml"}


def stage_root(tj: TrainJobParams, job: str) -> str:
    """Where this job's inputs and model dir live: on the shared volume, or under the S3 prefix."""
    base = tj.volume_mount if tj.data_transfer == "volume" else tj.staging_url
    return f"{base.rstrip('/')}/{job}"


def stage_fs(root: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem holding `root` and the path in it (S3: endpoint from MLFLOW_S3_ENDPOINT_URL)."""
    kwargs = {}
    if root.startswith("s3://") and os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        kwargs["client_kwargs"] = {"endpoint_url": os.environ["MLFLOW_S3_ENDPOINT_URL"]}
    return fsspec.core.url_to_fs(root, **kwargs)


def is_local(root: str) -> bool:
    """Whether `root` is a path on a mounted filesystem (then nodes train in place)."""
    return "local" in fsspec.core.url_to_fs(root)[0].protocol


def put_inputs(root: str, manifest: Path, splits: Path, cache: Path, params: Params) -> None:
    """Copy the train step's inputs and its resolved params into `<root>/inputs`."""
    fs, base = stage_fs(root)
    dest = f"{base}/{INPUTS}"
    fs.makedirs(dest, exist_ok=True)
    fs.put_file(str(manifest), f"{dest}/{INPUT_FILES['manifest']}")
    fs.put_file(str(splits), f"{dest}/{INPUT_FILES['splits']}")
    fs.put(str(cache), f"{dest}/{INPUT_FILES['cache']}", recursive=True)
    with tempfile.TemporaryDirectory() as tmp:
        dump_params(params, Path(tmp) / "params.yaml")
        fs.put_file(str(Path(tmp) / "params.yaml"), f"{dest}/{INPUT_FILES['params']}")
    log.info("staged the train inputs under %s", root)


def input_paths(inputs_dir: Path) -> dict[str, Path]:
    """The local paths of the staged inputs in a copy (or mount) of `<root>/inputs`."""
    return {key: Path(inputs_dir) / name for key, name in INPUT_FILES.items()}


def get_dir(root: str, sub: str, dest: Path) -> None:
    """Copy `<root>/<sub>` to the local folder `dest` (which must not exist yet)."""
    fs, base = stage_fs(root)
    if not fs.isdir(f"{base}/{sub}"):
        raise FileNotFoundError(f"{root}/{sub}: not in the staging area")
    fs.get(f"{base}/{sub}", str(dest), recursive=True)


def put_dir(src: Path, root: str, sub: str) -> None:
    """Copy the local folder `src` to `<root>/<sub>`."""
    fs, base = stage_fs(root)
    fs.put(str(src), f"{base}/{sub}", recursive=True)


def remove(root: str) -> None:
    """Delete the job's staging folder (no error when it is already gone)."""
    fs, base = stage_fs(root)
    if fs.exists(base):
        fs.rm(base, recursive=True)
        log.info("removed the staging area %s", root)
