"""Single-image and batch inference with the frozen threshold and a Grad-CAM overlay.

Every image goes through `fracture.images.decode.prepare_image` with the model's input contract (config.json `input`:
size, window percentiles, decode limits), the same decode -> window -> letterbox path that built the training
cache; the current params never change how a trained model sees an image.

Single image (`--img file`): `<stem>.json` (probability, frozen threshold, decision, model lineage) and
`<stem>_gradcam.png` in the output dir; an unreadable image is an InputError (exit 2).

Batch (`--img DIR` searched recursively, every file but hidden and AppleDouble `._*` files getting a row, or
`--img list.csv` with a `path` column, relative paths resolved against the CSV's folder): images are decoded and
scored in chunks of `predict.batch_size`, and each chunk is appended to `predictions.csv` and
`predictions.jsonl` before the next is read, so memory stays flat however many images there are and an
interrupted run keeps every finished chunk. An unreadable image becomes a row with its `error`, not a crash.
Overlays are off in batch mode unless `predict.batch_overlays` is true (they cost a backward pass and a
matplotlib figure per image); they go to `overlays/`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch
from torch import nn

from fracture.base.errors import InputError, printable
from fracture.base.outputs import out_dir_lock, prepare_out_dir, write_error_message
from fracture.config import Params
from fracture.contracts.tasks import CLASSES, NEGATIVE
from fracture.model.core import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, InputContract, read_contract

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("path", "part", "prob", "threshold", "decision", "overlay", "error")
DISCLAIMER = "Decision support only, not a diagnosis: a clinician reads the image."
_LOAD_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
)


@dataclass(frozen=True)
class Predictor:
    """A loaded model with everything inference needs."""

    model: nn.Module
    config: dict
    lineage: dict
    img_size: int
    threshold: float
    mean: float
    std: float
    grid: tuple[int, int]  # Grad-CAM grid at img_size
    contract: InputContract


# ------------------------------------------------------------------------------------------------ pure helpers
def validate_part(part: str | None) -> str | None:
    """Normalise `--part` and check it against `fracture.vocab.BODY_PARTS`.

    Raises:
        InputError: listing the known parts.
    """
    from fracture.vocab import BODY_PARTS

    if part is None:
        return None
    norm = part.strip().lower().removesuffix("_set")
    if norm not in BODY_PARTS:
        raise InputError(f"--part {part!r} is not a known body part; known: {', '.join(BODY_PARTS)}")
    return norm


def decide(prob: float, threshold: float, task: str = "fracture") -> str:
    """The decision at the frozen operating point: the task's class when prob >= threshold (as in evaluate)."""
    return CLASSES[task][0] if prob >= threshold else NEGATIVE[task]


def task_of(predictor: Predictor) -> str:
    """The model's task (config.json; a model dir from before tasks is `fracture`)."""
    return str(predictor.config.get("task", "fracture"))


def is_batch_input(img: Path) -> bool:
    """A directory or a CSV list means batch mode."""
    return img.is_dir() or img.suffix.lower() == ".csv"


@dataclass(frozen=True)
class UnusableEntry:
    """A row of a batch list that names no file (an empty path, `.`): it gets a result row with its error."""

    text: str
    error: str

    def __str__(self) -> str:
        return self.text


BatchItem = Path | UnusableEntry


def list_inputs(img: Path) -> list[BatchItem]:
    """The images of a batch: a directory searched recursively (sorted), or a CSV's `path` column.

    Every CSV row gets a result row: spaces around a path are stripped, and a row whose path is empty or `.`
    (no file) becomes an `UnusableEntry` that is reported as an error row, never dropped.

    Raises:
        InputError: the directory holds no images, or the CSV cannot be read or has no `path` column.
    """
    if img.is_dir():
        from fracture.sources import walk_files

        # Every file gets a row, as every file of a hospital folder is an ingest candidate: DICOMs from a PACS
        # often have no suffix, and a file that is not an image gets its reason instead of vanishing.
        paths: list[BatchItem] = [img / rel for rel in walk_files(img).files]
        if not paths:
            raise InputError(f"{img}: no files found (hidden files and AppleDouble `._*` files are skipped)")
        return paths
    try:
        table = pd.read_csv(img, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{img}: cannot read CSV ({err})") from None
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    if "path" not in table.columns:
        raise InputError(f"{img}: CSV needs a 'path' column; it has {', '.join(map(str, table.columns))}")
    entries: list[BatchItem] = []
    for row, raw in enumerate(table["path"], start=1):
        text = str(raw).strip()
        if text in ("", "."):
            entries.append(
                UnusableEntry(text, f"{img}: row {row}: {'empty path' if not text else 'path `.` names no file'}")
            )
        else:
            path = Path(text)
            entries.append(path if path.is_absolute() else img.parent / path)
    return entries


def output_stem(stem: str, suffix: str = "_gradcam.png", name_max: int = 255) -> str:
    """A file stem that leaves room for `suffix` within the file system's name limit (NAME_MAX bytes).

    A stem too long is cut and given the first 8 hex of its sha256 (`<cut>~<hash>`), so two long names that share
    their start still get different outputs, and the same input always gets the same name.
    """
    encoded = os.fsencode(stem)
    room = name_max - len(os.fsencode(suffix))
    if len(encoded) <= room:
        return stem
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    budget, used, kept = room - len(digest) - 1, 0, []
    for char in stem:  # whole characters only: a cut UTF-8 sequence would make the name undecodable
        used += len(os.fsencode(char))
        if used > budget:
            break
        kept.append(char)
    return f"{''.join(kept)}~{digest}"


def outside_problem(path: Path, root: Path) -> str | None:
    """Ingest's reason when `path` is a symlink leading outside `root` (or not a regular file), else None.

    A batch folder is read like a dataset root: a link inside it that leads elsewhere is refused, not followed.
    """
    import os

    from fracture.images.header import ImageRejected
    from fracture.ingest import locate_file

    try:
        locate_file(str(path), os.path.realpath(root))
    except ImageRejected as err:
        return err.reason
    return None


def chunks(items: list[BatchItem], size: int) -> Iterator[list[BatchItem]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------------------ model loading
def _stage_weights_file(weights: Path, tmp_dir: Path) -> Path:
    """A model dir for a bare weights file: config.json (and metadata.json) from beside it, the file as model.pt."""
    config = weights.parent / CONFIG_FILE
    if not config.is_file():
        raise InputError(f"{weights}: no {CONFIG_FILE} beside the weights file; pass the model dir instead")
    if weights.name == WEIGHTS_FILE:
        return weights.parent
    staged = tmp_dir / "model"
    staged.mkdir(parents=True, exist_ok=True)
    (staged / WEIGHTS_FILE).symlink_to(weights.resolve())
    for name in (CONFIG_FILE, METADATA_FILE):
        if (weights.parent / name).is_file():
            (staged / name).symlink_to((weights.parent / name).resolve())
    return staged


def check_registry_reachable(weight: str) -> None:
    """Refuse a `models:/` URI when the tracking URI is a sqlite file that does not exist.

    Without `MLFLOW_TRACKING_URI` the URI is `sqlite:///<cwd>/mlflow.db`; MLflow would create that database (and
    run its migrations) in the user's working directory only to report that the model is unknown.

    Raises:
        InputError: naming the URI and how to point at a registry.
    """
    from fracture.tracking import redact, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise InputError(
            f"{weight}: no model registry at {redact(uri)} (no such file); set MLFLOW_TRACKING_URI to the "
            "tracking server, or pass a local model dir"
        )


def resolve_model_dir(weight: str, tmp_dir: Path) -> Path:
    """A local model dir for `--weight`.

    `weight` is a model dir, a weights file with config.json beside it, or a `models:/NAME@ALIAS` /
    `models:/NAME/VERSION` registry URI (downloaded into `tmp_dir`).

    Raises:
        InputError: the path does not exist or is not a model.
    """
    if weight.startswith("models:/"):
        from fracture.registry.download import download_model_dir

        check_registry_reachable(weight)
        return download_model_dir(weight, tmp_dir / "registry")
    path = Path(weight)
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise InputError(f"{path}: not a model dir (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
        return path
    if path.is_file():
        return _stage_weights_file(path, tmp_dir)
    raise InputError(f"{weight}: no such model dir or weights file (or use models:/NAME@ALIAS)")


def load_predictor(weight: str, tmp_dir: Path) -> Predictor:
    """Load the model behind `--weight` safely (`weights_only=True` via `load_model_dir`).

    Raises:
        InputError: corrupt weights, weights that do not match config.json, or an unusable config.
    """
    from fracture.base.io import read_json
    from fracture.explain import cam_grid
    from fracture.model.core import load_model_dir
    from fracture.tracking import model_digest

    model_dir = resolve_model_dir(weight, tmp_dir)
    try:
        model, config = load_model_dir(model_dir)
        contract = read_contract(config, model_dir / CONFIG_FILE)
        threshold, size = float(config["threshold"]), contract.image_size
        mean, std = contract.mean, contract.std
    except InputError:
        raise
    except _LOAD_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{weight}: cannot load the model (corrupt or mismatched weights/config: {reason})") from None
    metadata = read_json(model_dir / METADATA_FILE) if (model_dir / METADATA_FILE).is_file() else {}
    lineage = {"model_digest": model_digest(model_dir)}  # the training run's `fracture.model_digest` tag finds it
    lineage |= {k: metadata.get(k) for k in ("manifest_hash", "params_hash")}
    lineage |= {
        "weight": weight,
        "backbone": config.get("backbone"),
        "threshold_method": config.get("threshold_method"),
    }
    model = model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return Predictor(model, config, lineage, size, threshold, mean, std, cam_grid(model, size), contract)


# ------------------------------------------------------------------------------------------------ scoring
def score(predictor: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities `[N]` for uint8 images `[N, S, S]`."""
    from fracture.model.core import predict_proba

    device = str(next(predictor.model.parameters()).device)
    return np.asarray(predict_proba(predictor.model, images, predictor.mean, predictor.std, batch_size, device))


def overlay_png(predictor: Predictor, image: np.ndarray, cam: np.ndarray, prob: float, alpha: float) -> bytes:
    """The Grad-CAM overlay figure for one prediction, with the decision, threshold and caveats."""
    from fracture.explain import coarseness_note, render_overlay

    decision = decide(prob, predictor.threshold, task_of(predictor))
    title = f"{decision}: p = {prob:.3f} (frozen threshold {predictor.threshold:.3f})"
    note = f"{coarseness_note(predictor.grid, predictor.img_size)} {DISCLAIMER}"
    return render_overlay(image, cam, title, note, alpha)


def _result(
    path: Path | UnusableEntry,
    part: str | None,
    prob: float | None,
    threshold: float,
    overlay: str | None,
    task: str = "fracture",
) -> dict:
    """One result row (RESULT_COLUMNS): `prob` and `decision` are for the task's class.

    The path is escaped where it is not UTF-8 (the outputs are UTF-8 text).
    """
    return {
        "path": printable(str(path)),
        "part": part,
        "prob": None if prob is None else float(prob),
        "threshold": threshold,
        "decision": None if prob is None else decide(prob, threshold, task),
        "overlay": overlay,
        "error": None,
    }


# ------------------------------------------------------------------------------------------------ single image
def predict_one(params: Params, predictor: Predictor, img: Path, part: str | None, out_dir: Path) -> dict:
    """Score one image and write `<stem>.json` and `<stem>_gradcam.png`.

    Raises:
        InputError: the image cannot be read (missing, not an image, truncated ...).
    """
    from fracture.base.io import atomic_write_bytes, write_json
    from fracture.explain import gradcam

    if problem := outside_problem(img, img.parent):  # missing, not a regular file, or a link leading elsewhere
        raise InputError(f"{img}: {problem}")
    if not img.is_file():
        raise InputError(f"{img}: no such image file")
    image = predictor.contract.decode(img)  # [S, S] uint8
    prob = float(score(predictor, image[None], 1)[0])
    cam = gradcam(predictor.model, image[None], predictor.mean, predictor.std, 1)[0]
    stem = output_stem(img.stem)
    overlay = f"{stem}_gradcam.png"
    atomic_write_bytes(out_dir / overlay, overlay_png(predictor, image, cam, prob, params.explain.alpha))
    result = _result(img, part, prob, predictor.threshold, overlay, task_of(predictor))
    result.pop("error")
    result |= {
        "task": task_of(predictor),
        "classes": {name: prob for name in CLASSES[task_of(predictor)]},
        "threshold_method": predictor.config.get("threshold_method"),
        "preprocess": predictor.contract.to_dict(),
        "model": predictor.lineage,
        "intended_use": DISCLAIMER,
    }
    write_json(out_dir / f"{stem}.json", result)
    log.info("%s: %s (p = %.3f, threshold %.3f)", img, result["decision"], prob, predictor.threshold)
    return result


# ------------------------------------------------------------------------------------------------ batch
def _decode_chunk(
    params: Params, predictor: Predictor, paths: list[BatchItem], root: Path | None = None
) -> tuple[list[np.ndarray], list[dict]]:
    """Decode a chunk; unreadable files (and links leading outside a batch folder `root`) become error rows."""
    images, rows = [], []
    for path in paths:
        row = _result(path, None, None, predictor.threshold, None, task_of(predictor))
        if isinstance(path, UnusableEntry):
            row["error"] = path.error
        else:
            try:
                if root is not None and (problem := outside_problem(path, root)):
                    raise InputError(f"{path}: {problem}")
                images.append(predictor.contract.decode(path))
            except InputError as err:
                row["error"] = printable(str(err))
        rows.append(row)
    return images, rows


def _score_chunk(
    params: Params, predictor: Predictor, paths: list[BatchItem], start: int, out_dir: Path, root: Path | None = None
) -> list[dict]:
    """Decode, score and (optionally) explain one chunk; returns its result rows in input order."""
    from fracture.base.io import atomic_write_bytes
    from fracture.explain import gradcam

    images, rows = _decode_chunk(params, predictor, paths, root)
    ok = [j for j, r in enumerate(rows) if r["error"] is None]
    if not ok:
        return rows
    stack = np.stack(images)  # [K, S, S] uint8, K <= batch_size
    probs = score(predictor, stack, params.predict.batch_size)
    cams = (
        gradcam(predictor.model, stack, predictor.mean, predictor.std, params.explain.batch_size)
        if params.predict.batch_overlays
        else None
    )
    for k, j in enumerate(ok):
        prob = float(probs[k])
        rows[j] |= {"prob": prob, "decision": decide(prob, predictor.threshold, task_of(predictor))}
        if cams is not None:
            name = f"overlays/{start + j:06d}_{output_stem(paths[j].stem, '.png', 255 - 7)}.png"
            atomic_write_bytes(out_dir / name, overlay_png(predictor, stack[k], cams[k], prob, params.explain.alpha))
            rows[j]["overlay"] = name
    return rows


def _append_rows(fcsv: BinaryIO, fjs: BinaryIO, rows: list[dict], header: bool = False) -> None:
    """Append one chunk's rows to both (unbuffered) files, all or nothing.

    On an OS error (a full disk) both files are cut back to their last complete chunk, so predictions.csv and
    predictions.jsonl always hold the same complete rows.

    Raises:
        InputError: "no space left on <file>" or another write error naming the file.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    marks = [(f, f.tell()) for f in (fcsv, fjs)]
    current = fcsv.name
    try:
        for f, text in ((fcsv, buf.getvalue()), (fjs, lines)):
            current = f.name
            data = memoryview(text.encode("utf-8"))
            while data:  # an unbuffered write may be partial
                data = data[f.write(data) :]
    except OSError as err:
        for f, mark in marks:
            with contextlib.suppress(OSError):
                f.truncate(mark)
                f.seek(mark)
        raise InputError(write_error_message(err, current)) from None


def predict_batch(
    params: Params,
    predictor: Predictor,
    paths: list[BatchItem],
    part: str | None,
    out_dir: Path,
    root: Path | None = None,
) -> dict:
    """Stream a batch through the model chunk by chunk into predictions.csv and predictions.jsonl.

    `root` is the batch folder: a symlink in it leading outside gets an error row and is never read.

    Returns:
        {"count", "scored", "errors", "positives", "predictions_csv", "predictions_jsonl"}.
    """
    from fracture.base.parallel import counter

    csv_path, jsonl_path = out_dir / "predictions.csv", out_dir / "predictions.jsonl"
    counts = {"count": 0, "scored": 0, "errors": 0, "positives": 0}
    log.info("predict: scoring %d images in chunks of %d", len(paths), params.predict.batch_size)
    with (
        open(csv_path, "wb", buffering=0) as fcsv,
        open(jsonl_path, "wb", buffering=0) as fjs,
        counter(len(paths), "predict", "image") as bar,
    ):
        _append_rows(fcsv, fjs, [], header=True)
        for i, chunk in enumerate(chunks(paths, params.predict.batch_size)):
            rows = _score_chunk(params, predictor, chunk, i * params.predict.batch_size, out_dir, root)
            for row in rows:
                row["part"] = part
            _append_rows(fcsv, fjs, rows)
            bar.update(len(rows))
            for row in rows:
                counts["count"] += 1
                counts["errors"] += row["error"] is not None
                counts["scored"] += row["error"] is None
                counts["positives"] += row["decision"] == "fracture"
    log.info(
        "predict: %d images, %d scored, %d unreadable -> %s",
        counts["count"],
        counts["scored"],
        counts["errors"],
        csv_path,
    )
    return counts | {"predictions_csv": str(csv_path), "predictions_jsonl": str(jsonl_path)}


def run_predict(
    params: Params, img: Path, weight: str, part: str | None = None, out_dir: Path = Path("results")
) -> dict | list:
    """Predict one image (a dict, the JSON written) or a batch (a summary dict; rows are in predictions.csv).

    Args:
        params: resolved params (uses `preprocess.window_percentiles`, `predict.*`, `explain.*`).
        img: an image file (PNG 8/16-bit, JPEG, TIFF, DICOM), a directory of them, or a CSV with a `path` column.
        weight: a model dir, a weights file with config.json beside it, or `models:/NAME@ALIAS|VERSION`.
        part: the body part, recorded with the result and checked against the known parts.
        out_dir: where results (and overlays) go.

    Raises:
        InputError: unknown part, unusable weights, or (single image) an unreadable image.
    """
    from fracture.config import dump_params

    img, out_dir = Path(img), Path(out_dir)
    part = validate_part(part)
    if not img.exists():
        raise InputError(f"{img}: no such file or directory")
    paths = list_inputs(img) if is_batch_input(img) else None
    # An output folder inside a batch folder would be scored, overlays and all, by the next run.
    prepare_out_dir(out_dir, inputs=[img] if img.is_dir() else [])
    with ExitStack() as stack:
        stack.enter_context(out_dir_lock(out_dir))  # two batches into one dir would interleave their rows
        tmp_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fracture-predict-")))
        log.info("loading model %s ...", weight)
        predictor = load_predictor(weight, tmp_dir)
        if paths is None:
            result = predict_one(params, predictor, img, part, out_dir)
        else:
            result = predict_batch(params, predictor, paths, part, out_dir, root=img if img.is_dir() else None)
        dump_params(params, out_dir / "params.yaml")
    return result
