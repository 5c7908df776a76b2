"""Check a registered model before anything loads it: code, not pickles, and the registered weights.

A registered version is accepted only when

- its MLmodel has just the `python_function` flavor, loaded by MLflow's models-from-code loader, with no
  pickled `python_model`, no extra code paths, and no pickle file anywhere in the model;
- its model code is byte for byte the installed `fracture/serving/model_code.py` (so loading it runs only our code);
- its `model.pt` + `config.json` hash to the version's `fingerprint` tag (set at registration, kept in the
  registry database, not beside the artifacts it vouches for).

The MLmodel is read with `yaml.safe_load` and the weights are hashed, never loaded, until they pass.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from fracture.base.errors import InputError
from fracture.contracts.artifacts import MODEL_CONFIG, MODEL_METADATA, WEIGHTS
from fracture.registry.lineage import fingerprint_model_dir

CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")
MODEL_DIR_FILES = (WEIGHTS, MODEL_CONFIG, MODEL_METADATA)


def model_code_path() -> Path:
    """The installed `fracture/serving/model_code.py` (found without importing it: importing it builds a pyfunc)."""
    spec = importlib.util.find_spec("fracture.serving.model_code")
    if spec is None or spec.origin is None:  # pragma: no cover - the module ships with the package
        raise InputError("fracture.serving.model_code is missing from the installed package")
    return Path(spec.origin)


def check_mlmodel(uri: str, mlmodel: dict) -> str:
    """The model dir artifact's path inside the logged model, when the MLmodel is models-from-code only.

    Raises:
        InputError: a pickled python_model, another loader or flavor, or code paths; the model is not loaded.
    """
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    refused = f"{uri}: refused without loading it:"
    if set(flavors) != {"python_function"}:
        raise InputError(f"{refused} flavors {sorted(flavors)}, expected python_function only")
    if "python_model" in pyfunc or pyfunc.get("loader_module") != CODE_LOADER or not pyfunc.get("model_code_path"):
        raise InputError(f"{refused} a pickled pyfunc (python_model.pkl), not MLflow models-from-code")
    if pyfunc.get("code"):
        raise InputError(f"{refused} it adds code paths ({pyfunc['code']}) to the Python path")
    try:
        return str(pyfunc["artifacts"]["model_dir"]["path"])
    except (KeyError, TypeError):
        raise InputError(f"{refused} no model_dir artifact in its MLmodel") from None


def check_model_files(uri: str, model_root: Path, code_subpath: str) -> None:
    """No pickle anywhere in the downloaded model, and its code file is the installed `fracture/serving/model_code.py`.

    Raises:
        InputError: naming the pickle file or the code mismatch.
    """
    pickles = sorted(str(p.relative_to(model_root)) for p in model_root.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise InputError(f"{uri}: refused without loading it: pickle files {pickles}")
    code = model_root / Path(code_subpath).name
    if not code.is_file() or _sha256(code) != _sha256(model_code_path()):
        raise InputError(f"{uri}: refused without loading it: its model code is not this package's model_code.py")


def check_weights(uri: str, model_dir: Path, fingerprint: str | None) -> None:
    """The model dir's files are there and hash to the registered fingerprint.

    Raises:
        InputError: missing files, no fingerprint tag, or a mismatch (tampered or substituted weights).
    """
    missing = [f for f in MODEL_DIR_FILES if not (model_dir / f).is_file()]
    if missing:
        raise InputError(f"{uri}: the registered model dir lacks {', '.join(missing)}")
    if not fingerprint:
        raise InputError(f"{uri}: the version has no fingerprint tag to verify its weights against; refused")
    if fingerprint_model_dir(model_dir) != fingerprint:
        raise InputError(
            f"{uri}: model.pt/config.json do not match the version's registered fingerprint "
            f"({fingerprint[:12]}...); refused to use tampered or substituted weights"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
