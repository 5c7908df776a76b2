"""Atomic artifact writes, hashing, and the manifest file format.

Every artifact is written to a temporary file in the same directory and renamed into place, so a killed
process never leaves a half-written file that a later step would read as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fracture.base.errors import InputError
from fracture.base.outputs import os_error_message, write_error_message

ROOTS_KEY = b"fracture.roots"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _short_name(name: str, limit: int = 200) -> str:
    """`name` cut to at most `limit` bytes (whole characters), for the prefix of a temporary file."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Raises:
        InputError: an OS error while writing (a full disk: "no space left on <path>"), naming `path`, not the
            temporary name; the temporary file is removed.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name adds 14 characters: cut a long name so it still fits NAME_MAX (255 bytes).
        fd, tmp = tempfile.mkstemp(prefix=f".{_short_name(path.name)}.", suffix=".tmp", dir=path.parent)
        tmp_path = Path(tmp)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
        os.close(fd)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is not None and tmp_path is not None and Path(err.filename) not in (tmp_path, path):
            raise InputError(os_error_message(err)) from None  # an input read inside the block
        raise InputError(write_error_message(err, path)) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


class _WriteErrorKeeper:
    """A writable file that remembers the first OSError of its `write` (torch's zip writer swallows it)."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        """Write through; keep and re-raise an OSError (a full disk)."""
        try:
            return self._fp.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        """Flush through."""
        self._fp.flush()


def save_torch(obj: object, path: Path) -> None:
    """`torch.save` to `path` atomically, through a file object (the bytes do not depend on the temporary name).

    On a full disk torch's writer reports a RuntimeError ("unexpected pos ..."); the OSError behind it is raised
    instead, so the caller sees "no space left on <path>" (an InputError, exit 2), like every other write.

    Raises:
        InputError: an OS error while writing, naming `path`.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fp:
        keeper = _WriteErrorKeeper(fp)
        try:
            torch.save(obj, keeper)
        except RuntimeError:
            if keeper.error is not None:
                raise keeper.error from None
            raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (sorted keys off, indented, NaN refused so DVC metrics stay valid JSON)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> dict:
    """Read a JSON file, with an error that names it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read JSON ({err})") from None


def write_parquet(df: pd.DataFrame, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """Write a DataFrame to parquet atomically, with optional extra schema metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read parquet, with an error that names the file."""
    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: cannot read parquet ({err})") from None


def write_manifest(df: pd.DataFrame, path: Path, roots: dict[str, str]) -> None:
    """Write manifest.parquet; `roots` (source -> dataset root as given to ingest) travels in its metadata."""
    write_parquet(df, path, {ROOTS_KEY: json.dumps(roots, sort_keys=True).encode()})


def read_manifest(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read manifest.parquet and the source roots recorded by ingest."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: cannot read manifest ({err})") from None
    meta = table.schema.metadata or {}
    roots = json.loads(meta[ROOTS_KEY]) if ROOTS_KEY in meta else {}
    return table.to_pandas(), roots


def resolve_image_path(roots: dict[str, str], source: str, rel_path: str, data_root: Path) -> Path:
    """Absolute path of a manifest row's image; refuses paths that escape the source root.

    Args:
        roots: source -> root as recorded by ingest (relative to the data root, or absolute).
        source: the row's source.
        rel_path: the row's path, relative to its source root.
        data_root: where relative roots resolve (each Kubeflow task may mount the raw data elsewhere).
    """
    if source not in roots:
        raise InputError(f"manifest has no root recorded for source {source!r}")
    root = Path(data_root) / roots[source]
    root = root.resolve()
    full = (root / rel_path).resolve()
    if not full.is_relative_to(root):
        raise InputError(f"{rel_path}: path escapes the {source} root {root}")
    return full


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_dataframe(df: pd.DataFrame) -> str:
    """Content hash of a table (row order and column names included), independent of file encoding."""
    h = hashlib.sha256("\x1f".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def hash_file(path: Path) -> str:
    """sha256 of a file, or of a manifest's rows for parquet (stable across parquet writer versions)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return hash_dataframe(read_parquet(path))
    return sha256_file(path)
