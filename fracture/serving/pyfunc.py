"""The MLflow pyfunc wrapper: the registered model's serving contract.

The wrapper carries no pickled network and is itself logged as code (`fracture/serving/model_code.py`, MLflow "models
from code"). `load_context` checks the weights' sha256 against the fingerprint in the model's config, then
rebuilds the classifier from the model dir artifact (state dict + `config.json`) with
`fracture.model.core.load_model_dir`, and `predict` decodes every input through
`fracture.images.decode.prepare_image` with
the model's input contract (config.json `input`: size, window, decode limits, normalisation, batch size), the one
decode path shared with preprocess and `fracture predict`.

Input: a DataFrame with one row per image and, per row, exactly one of

- `path`: an image file path readable by the serving process (PNG 8/16-bit, JPEG, TIFF, DICOM) under one of the
  roots in `FRACTURE_SERVE_PATH_ROOTS` (set from params `serve.allowed_path_roots`; empty, the default, switches
  the column off, so a client cannot make the server read or describe its own files), or
- `image`: the image FILE's bytes, base64-encoded (standard alphabet; a `data:...;base64,` prefix is
  accepted). Sending the encoded file keeps 16-bit PNG and DICOM intact and is plain JSON.

Output: a DataFrame with `probability` (float, P(fracture)), `decision` (int, 1 = fracture at the frozen
threshold) and `threshold` (the frozen operating point, tuned on validation data only). A refused request is a
400 whose JSON `message` is the reason alone (no stack trace, no echo of the request).

Served request body (`mlflow models serve`):
`{"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}}` or
`{"dataframe_records": [{"path": "/data/wrist.png"}]}`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from fracture.base.errors import InputError

if TYPE_CHECKING:
    from fracture.model.core import InputContract

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("path", "image")
PATH_ROOTS_ENV = "FRACTURE_SERVE_PATH_ROOTS"  # os.pathsep-separated folders the `path` column may read under
OUTPUT_COLUMNS = ("probability", "decision", "threshold")
MODEL_DIR_ARTIFACT = "model_dir"
FINGERPRINT_CONFIG_KEY = "fingerprint"  # model_config key: the sha256 of model.pt + config.json at registration


def signature() -> Any:
    """The pyfunc signature: optional string columns `path` / `image` in, the three output columns out."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, col, required=False) for col in INPUT_COLUMNS])
    outputs = Schema(
        [
            ColSpec(DataType.double, "probability"),
            ColSpec(DataType.long, "decision"),
            ColSpec(DataType.double, "threshold"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def encode_bytes(data: bytes) -> str:
    """Base64 text of an encoded image file (PNG, JPEG, DICOM bytes): the value of the `image` input column."""
    return base64.b64encode(data).decode("ascii")


def encode_image_file(path: Path) -> str:
    """Base64 text of an image file's bytes: the value of the `image` input column."""
    return encode_bytes(Path(path).read_bytes())


def decode_base64(text: str, row: int) -> bytes:
    """Bytes of one `image` cell; a data-URI prefix is allowed.

    Raises:
        InputError: the cell is not valid base64 or is empty.
    """
    if "," in text[:100] and text.startswith("data:"):
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(f"row {row}: column 'image' is not valid base64 ({err})") from None
    if not data:
        raise InputError(f"row {row}: column 'image' is empty")
    return data


class RequestRefused(InputError, MlflowException):
    """An answer whose `message` is the reason alone: 400 for a bad request, 500 (`internal=True`) for our fault.

    MLflow's scoring server rewrites an MlflowException's message to `Failed to predict data '<frame>'. Error: ...`,
    echoing the request's rows (paths, base64 images) into the answer and the server log; this message setter keeps
    only the reason. Any other exception would be answered with a generic message and a stack trace.
    """

    def __init__(self, reason: str, internal: bool = False) -> None:
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

        MlflowException.__init__(self, reason, error_code=INTERNAL_ERROR if internal else INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        """The reason, without MLflow's prefix."""
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        self._reason = str(value).rsplit("\nError: ", 1)[-1]


def path_roots_from_env() -> tuple[str, ...]:
    """The real paths of the folders the `path` column may read under (none: the column is off)."""
    value = os.environ.get(PATH_ROOTS_ENV, "")
    return tuple(os.path.realpath(r) for r in value.split(os.pathsep) if r.strip())


def check_path_allowed(path: str, roots: tuple[str, ...], row: int) -> Path:
    """The `path` cell as a Path when it resolves (symlinks followed) under one of `roots`.

    Nothing is opened or stat-ed before the check, so a refused path tells the client nothing about the file.

    Raises:
        InputError: the column is off, or the path lies outside every root.
    """
    if not roots:
        raise InputError(
            f"row {row}: column 'path' is switched off on this server (params serve.allowed_path_roots is empty); "
            "send the image file's bytes, base64-encoded, in column 'image'"
        )
    real = os.path.realpath(path)
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise InputError(f"row {row}: {path}: not under the server's allowed path roots (serve.allowed_path_roots)")
    return Path(path)


def _cell(df: pd.DataFrame, col: str, row: int) -> str | None:
    if col not in df.columns:
        return None
    value = df[col].iloc[row]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def load_images(df: pd.DataFrame, contract: InputContract, path_roots: tuple[str, ...] = ()) -> np.ndarray:
    """Decode every row of the input frame to the model's input, as its input contract says.

    `path_roots`: real paths of the folders a `path` cell may name (`check_path_allowed`); none: `path` is off.

    Returns:
        uint8 [N, S, S], S = the contract's image size.

    Raises:
        InputError: a row has neither or both of `path` / `image`, or its image cannot be decoded.
    """
    if not any(col in df.columns for col in INPUT_COLUMNS):
        raise InputError(f"input needs a column 'path' or 'image'; got columns {list(df.columns)}")
    out = np.zeros((len(df), contract.image_size, contract.image_size), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="fracture-serve-") as tmp:
        for row in range(len(df)):
            path, image = _cell(df, "path", row), _cell(df, "image", row)
            if (path is None) == (image is None):
                raise InputError(f"row {row}: give exactly one of 'path' or 'image'")
            if path is not None:
                try:
                    out[row] = contract.decode(check_path_allowed(path, path_roots, row))
                except InputError as err:
                    raise InputError(err if str(err).startswith(f"row {row}: ") else f"row {row}: {err}") from None
                continue
            tmp_path = Path(tmp) / f"image-{row}"
            tmp_path.write_bytes(decode_base64(image, row))
            try:
                out[row] = contract.decode(tmp_path)
            except InputError as err:
                raise InputError(str(err).replace(str(tmp_path), f"row {row} (column 'image')")) from None
    return out


def predictions_frame(probs: np.ndarray, threshold: float) -> pd.DataFrame:
    """The output contract: probability, decision at the frozen threshold, and the threshold itself."""
    probs = np.asarray(probs, dtype=np.float64)
    return pd.DataFrame(
        {
            "probability": probs,
            "decision": (probs >= threshold).astype(np.int64),
            "threshold": np.full(len(probs), float(threshold), dtype=np.float64),
        }
    )


def verify_weights(model_dir: Path, fingerprint: str | None) -> None:
    """Refuse weights whose sha256 is not the registered fingerprint, before anything loads them.

    `FRACTURE_MODEL_FINGERPRINT`, when a deployment sets it (from the registry's version tag), must match too.

    Raises:
        InputError: no fingerprint to check against, or a mismatch.
    """
    import os

    from fracture.registry.lineage import fingerprint_model_dir

    pinned = os.environ.get("FRACTURE_MODEL_FINGERPRINT")
    expected = {f for f in (fingerprint, pinned) if f}
    if not expected:
        raise InputError(f"{model_dir}: the model carries no fingerprint to verify its weights against; refused")
    actual = fingerprint_model_dir(model_dir)
    if expected != {actual}:
        raise InputError(
            f"{model_dir}: model.pt/config.json sha256 {actual[:12]}... does not match the registered fingerprint "
            f"{sorted(expected)[0][:12]}...; refused to load tampered or substituted weights"
        )


class FracturePyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around a fracture model dir (see the module docstring for the I/O contract)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuild the network from the model dir artifact."""
        import torch

        from fracture.model.core import CONFIG_FILE, load_model_dir, read_contract

        model_dir = Path(context.artifacts[MODEL_DIR_ARTIFACT])
        verify_weights(model_dir, (getattr(context, "model_config", None) or {}).get(FINGERPRINT_CONFIG_KEY))
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model, self._config = load_model_dir(model_dir, map_location=self._device)
        self._contract = read_contract(self._config, model_dir / CONFIG_FILE)
        self._threshold = float(self._config["threshold"])
        self._path_roots = path_roots_from_env()
        # The dir is often a temporary download (registration's input-example check): its path only at DEBUG.
        log.debug("model dir %s", model_dir)
        log.info("loaded fracture model on %s (threshold %.4f)", self._device, self._threshold)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Probabilities and decisions for every row of `model_input`.

        Raises:
            RequestRefused: the request cannot be scored (400 with the reason; 500 when the fault is ours).
        """
        from fracture.model.core import predict_proba

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if len(model_input) == 0:
            # MLflow's schema enforcement drops unknown columns and, with them, every row: a request of misnamed
            # columns arrives here empty and must not be answered with an empty 200.
            cols = " or ".join(INPUT_COLUMNS)
            raise RequestRefused(f"no rows to score: send one row per image with a column {cols}")
        c = self._contract
        try:
            images = load_images(model_input, c, self._path_roots)
            probs = predict_proba(self._model, images, c.mean, c.std, batch_size=c.batch_size, device=self._device)
        except InputError as err:
            raise RequestRefused(str(err)) from None
        except Exception as err:
            log.exception("scoring failed")  # the traceback stays in the server log, out of the answer
            raise RequestRefused(
                f"internal error while scoring ({type(err).__name__}); see the server log", True
            ) from None
        return predictions_frame(probs, self._threshold)
