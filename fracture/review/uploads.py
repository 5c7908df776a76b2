"""Try the model on a new image: the same decode, usable-radiograph rule, scoring and Grad-CAM as `fracture predict`.

An upload is pseudonymised on arrival: it is stored under a random token (the client's file name is never
stored nor logged; only its suffix is kept, because a `.dcm` suffix is part of the usable-radiograph rule), decoded
with the model's input contract, and deleted right after decoding. What stays is the model's input and its
Grad-CAM map under the token, deleted after `review.upload_retention_hours`.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from fracture.base.errors import InputError

MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # refuse larger bodies before decoding
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")


def safe_suffix(filename: str | None) -> str:
    """The upload's suffix, lower-case letters and digits only (`.png`, `.dcm`; "" when it has none)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def shown_name(filename: str | None) -> str:
    """The name an error message uses for the upload: the client's base name, printable characters only."""
    name = Path(filename or "upload").name
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:128] or "upload"


def predict_upload(predictor: object, data: bytes, filename: str | None, upload_dir: Path) -> dict:
    """Score one uploaded image file; keep its model input and Grad-CAM under a random token.

    Returns:
        prob, threshold, decision (as `fracture predict`), the token and the disclaimer.

    Raises:
        InputError: the file breaks the usable-radiograph rule or cannot be decoded; the message is the one
            `fracture predict` prints, naming the client's file name instead of the temporary path.
    """
    from fracture.explain import gradcam
    from fracture.review.images import MODEL_LOCK
    from fracture.serving.predict import DISCLAIMER, decide, score

    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{shown_name(filename)}: larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    token = secrets.token_hex(16)
    folder = Path(upload_dir) / token
    folder.mkdir(parents=True)
    path = folder / f"upload{safe_suffix(filename)}"
    path.write_bytes(data)
    try:
        image = predictor.contract.decode(path)  # [S, S] uint8, the rule and decode of `fracture predict`
    except InputError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(str(err).replace(str(path), shown_name(filename))) from None
    finally:
        path.unlink(missing_ok=True)
    with MODEL_LOCK:
        prob = float(score(predictor, image[None], 1)[0])
        cam = gradcam(predictor.model, image[None], predictor.mean, predictor.std, 1)[0]
    np.save(folder / "input.npy", image)
    np.save(folder / "cam.npy", cam.astype(np.float16))
    return {
        "token": token,
        "prob": prob,
        "threshold": predictor.threshold,
        "decision": decide(prob, predictor.threshold),
        "intended_use": DISCLAIMER,
    }


def upload_arrays(upload_dir: Path, token: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored model input and Grad-CAM of an upload.

    Raises:
        InputError: unknown or expired token.
    """
    folder = Path(upload_dir) / token
    if not TOKEN_RE.match(token) or not (folder / "cam.npy").is_file():
        raise InputError("no such upload (it may have expired)")
    return np.load(folder / "input.npy"), np.load(folder / "cam.npy").astype(np.float32)


def purge_uploads(upload_dir: Path, retention_hours: float, now: float | None = None) -> int:
    """Delete uploads older than the retention; returns how many were deleted."""
    cutoff = (time.time() if now is None else now) - retention_hours * 3600
    removed = 0
    for folder in Path(upload_dir).glob("*"):
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
