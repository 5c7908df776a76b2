"""No pickles on the model path: registered versions are models-from-code, and tampered ones are refused unloaded.

Against the loopback `mlflow server` with artifacts on moto S3. Tampering writes straight to the S3 bucket, as
someone with write access to the artifact store (but not to the registry database) could.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import boto3
import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from fracture.base.errors import InputError
from fracture.registry.aliases import run_promote
from fracture.registry.download import fetch_model
from fracture.registry.lineage import fingerprint_model_dir
from fracture.registry.register import run_register
from fracture.serving.predict import run_predict
from tests.integration.conftest import MLFLOW_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _touch(path: str) -> mlflow.pyfunc.PythonModel:
    """What the planted pickle runs when unpickled: it leaves a marker file."""
    Path(path).write_text("executed")
    return mlflow.pyfunc.PythonModel()


class Planted(mlflow.pyfunc.PythonModel):
    """A pickled pyfunc whose unpickling runs `_touch(marker)` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (_touch, (self.marker,))

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201, D102
        return model_input


def _s3(mlflow_server):  # noqa: ANN001, ANN202
    return boto3.client("s3", endpoint_url=mlflow_server.s3_url, region_name="us-east-1")


def _replace_weights(mlflow_server, model_id: str, data: bytes) -> None:  # noqa: ANN001
    s3 = _s3(mlflow_server)
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=MLFLOW_BUCKET)
        for obj in page.get("Contents", [])
        if model_id in obj["Key"] and obj["Key"].endswith("model_dir/model.pt")
    ]
    assert len(keys) == 1, keys
    s3.put_object(Bucket=MLFLOW_BUCKET, Key=keys[0], Body=data)


def _pickle_payload(marker: Path) -> bytes:
    """A file that runs code when unpickled by torch.load(weights_only=False)."""
    buf = io.BytesIO()
    torch.save({"state": Planted(marker)}, buf)
    return buf.getvalue()


def test_registered_versions_are_code_not_pickles(
    registry_env, params, make_candidate, radiograph_png, tmp_path, monkeypatch
):
    from fracture.serving.pyfunc import PATH_ROOTS_ENV

    monkeypatch.setenv(PATH_ROOTS_ENV, str(radiograph_png.parent))  # serve.allowed_path_roots: the `path` column on
    cand = make_candidate(seed=401)
    rec = run_register(params, cand.model_dir, cand.eval_dir, name=f"code-{uuid.uuid4().hex[:8]}")
    files = {a.path for a in MlflowClient().list_logged_model_artifacts(rec["model_id"])}
    assert "model_code.py" in files and not any(f.endswith(".pkl") for f in files), files
    served = fetch_model(rec["model_uri"], tmp_path / "served")  # the serving path: verified, then loaded
    pyfunc = mlflow.pyfunc.load_model(str(served))
    out = pyfunc.predict(pd.DataFrame({"path": [str(radiograph_png)]}))
    assert list(out.columns) == ["probability", "decision", "threshold"] and 0 <= out["probability"][0] <= 1


def test_tampered_weights_are_refused_by_predict_serving_and_promotion(
    registry_env, mlflow_server, params, make_candidate, radiograph_png, tmp_path
):
    name = f"tamper-{uuid.uuid4().hex[:8]}"
    run_register(params, *_dirs(make_candidate(seed=402)), name=name)
    run_promote(params, name, reason="first")
    rec = run_register(params, *_dirs(make_candidate(seed=403, auroc=0.9)), name=name)
    marker = tmp_path / "executed"
    _replace_weights(mlflow_server, rec["model_id"], _pickle_payload(marker))

    with pytest.raises(InputError, match="do not match the version's registered fingerprint"):
        run_predict(params, radiograph_png, rec["model_uri"], out_dir=tmp_path / "pred")
    with pytest.raises(InputError, match="do not match the version's registered fingerprint"):
        fetch_model(rec["model_uri"], tmp_path / "served")
    with pytest.raises(Exception, match="does not match the registered fingerprint"):
        mlflow.pyfunc.load_model(rec["model_uri"])  # raw MLflow loading: the pyfunc's own check refuses
    with pytest.raises(InputError, match="registered fingerprint"):
        run_promote(params, name, reason="tampered")
    assert MlflowClient().get_registered_model(name).aliases["champion"] == "1"
    assert not marker.exists()  # the payload never ran


def test_a_planted_pickled_pyfunc_is_refused_without_loading_it(
    registry_env, params, make_candidate, radiograph_png, tmp_path
):
    name = f"planted-{uuid.uuid4().hex[:8]}"
    cand = make_candidate(seed=404)
    run_register(params, cand.model_dir, cand.eval_dir, name=name)
    marker = tmp_path / "executed"
    info = mlflow.pyfunc.log_model(
        name="model", python_model=Planted(marker), artifacts={"model_dir": str(cand.model_dir)}
    )
    marker.unlink(missing_ok=True)  # MLflow's log_model round-trips the pickle: the payload is live
    client = MlflowClient()
    fingerprint = fingerprint_model_dir(cand.model_dir)  # a valid fingerprint: only the pickle gives it away
    mv = client.create_model_version(
        name, source=f"models:/{info.model_id}", model_id=info.model_id, tags={"fingerprint": fingerprint}
    )
    client.set_registered_model_alias(name, "challenger", mv.version)
    assert "python_model.pkl" in {a.path for a in client.list_logged_model_artifacts(info.model_id)}

    uri = f"models:/{name}/{mv.version}"
    with pytest.raises(InputError, match="a pickled pyfunc"):
        run_predict(params, radiograph_png, uri, out_dir=tmp_path / "pred")
    with pytest.raises(InputError, match="a pickled pyfunc"):
        fetch_model(uri, tmp_path / "served")
    with pytest.raises(InputError, match="a pickled pyfunc"):
        run_promote(params, name, reason="planted")
    assert "champion" not in client.get_registered_model(name).aliases
    assert not marker.exists()  # refused, never unpickled
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Exception, match="pickle"):
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # what infra/ sets for raw MLflow serving
        mlflow.pyfunc.load_model(uri)
    assert not marker.exists()


def _dirs(cand):  # noqa: ANN001, ANN202
    return cand.model_dir, cand.eval_dir
