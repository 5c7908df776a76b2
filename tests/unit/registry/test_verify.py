"""The model-path checks, pure: MLmodel flavors, pickle files, the model code, the weights' fingerprint."""

from __future__ import annotations

import pytest

from fracture.base.errors import InputError
from fracture.registry.lineage import fingerprint_model_dir
from fracture.registry.verify import CODE_LOADER, check_mlmodel, check_model_files, check_weights, model_code_path
from fracture.serving.pyfunc import verify_weights

URI = "models:/m/1"
CODE = {
    "flavors": {
        "python_function": {
            "loader_module": CODE_LOADER,
            "model_code_path": "/build/fracture/serving/model_code.py",
            "artifacts": {"model_dir": {"path": "artifacts/model_dir"}},
        }
    }
}


def _with(**pyfunc) -> dict:  # noqa: ANN003
    return {"flavors": {"python_function": {**CODE["flavors"]["python_function"], **pyfunc}}}


def test_models_from_code_pass_and_pickled_pyfuncs_do_not():
    assert check_mlmodel(URI, CODE) == "artifacts/model_dir"
    pickled = _with(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl", model_code_path=None)
    with pytest.raises(InputError, match="a pickled pyfunc"):
        check_mlmodel(URI, pickled)
    with pytest.raises(InputError, match="code paths"):
        check_mlmodel(URI, _with(code="code"))
    with pytest.raises(InputError, match=r"flavors \['python_function', 'pytorch'\]"):
        check_mlmodel(URI, {"flavors": {**CODE["flavors"], "pytorch": {"pickle_module_name": "cloudpickle"}}})


def _model_root(tmp_path, code: bytes):  # noqa: ANN001, ANN202
    root = tmp_path / "model"
    (root / "artifacts").mkdir(parents=True)
    (root / "model_code.py").write_bytes(code)
    return root


def test_the_model_code_must_be_this_packages_and_no_pickle_may_ride_along(tmp_path):
    root = _model_root(tmp_path, model_code_path().read_bytes())
    check_model_files(URI, root, "/anywhere/model_code.py")
    (root / "model_code.py").write_bytes(model_code_path().read_bytes() + b"\nimport os  # injected\n")
    with pytest.raises(InputError, match="not this package's model_code.py"):
        check_model_files(URI, root, "/anywhere/model_code.py")
    (root / "model_code.py").write_bytes(model_code_path().read_bytes())
    (root / "artifacts" / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(InputError, match=r"pickle files \['artifacts/extra.pkl'\]"):
        check_model_files(URI, root, "/anywhere/model_code.py")


def _model_dir(tmp_path):  # noqa: ANN001, ANN202
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    for name, data in (("model.pt", b"weights"), ("config.json", b"{}"), ("metadata.json", b"{}")):
        (model_dir / name).write_bytes(data)
    return model_dir


def test_weights_must_hash_to_the_registered_fingerprint(tmp_path, monkeypatch):
    model_dir = _model_dir(tmp_path)
    fingerprint = fingerprint_model_dir(model_dir)
    check_weights(URI, model_dir, fingerprint)
    verify_weights(model_dir, fingerprint)
    with pytest.raises(InputError, match="no fingerprint tag"):
        check_weights(URI, model_dir, None)
    with pytest.raises(InputError, match="no fingerprint to verify"):
        verify_weights(model_dir, None)
    monkeypatch.setenv("FRACTURE_MODEL_FINGERPRINT", "0" * 64)  # a deployment pinned another version
    with pytest.raises(InputError, match="does not match the registered fingerprint"):
        verify_weights(model_dir, fingerprint)
    monkeypatch.delenv("FRACTURE_MODEL_FINGERPRINT")
    (model_dir / "model.pt").write_bytes(b"weightz")
    with pytest.raises(InputError, match="do not match the version's registered fingerprint"):
        check_weights(URI, model_dir, fingerprint)
    with pytest.raises(InputError, match="does not match the registered fingerprint"):
        verify_weights(model_dir, fingerprint)
