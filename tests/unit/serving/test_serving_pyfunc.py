"""The pyfunc as MLflow loads it (schema enforcement included): misnamed input columns are refused, not answered."""

from __future__ import annotations

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from fracture.base.errors import InputError
from fracture.registry.register import save_pyfunc
from fracture.serving.pyfunc import encode_image_file
from tests.integration.conftest import write_model_dir


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory, params):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("pyfunc")
    return mlflow.pyfunc.load_model(str(save_pyfunc(write_model_dir(root / "model", params, 5), root / "pyfunc")))


def test_a_row_without_path_or_image_is_refused_not_answered_empty(pyfunc):
    # MLflow drops the unknown column and every row with it; an empty 200 answer used to follow (regression)
    with pytest.raises(InputError, match="no rows to score"):
        pyfunc.predict(pd.DataFrame({"filename": ["wrist.png"]}))


def test_saved_pyfunc_scores_an_image(pyfunc, tmp_path):
    png = tmp_path / "wrist.png"
    yy = np.mgrid[0:120, 0:90][0]
    assert cv2.imwrite(str(png), (20000 + 200 * yy).astype(np.uint16))
    out = pyfunc.predict(pd.DataFrame({"image": [encode_image_file(png)]}))
    assert list(out.columns) == ["probability", "decision", "threshold"] and len(out) == 1
    assert 0 <= out["probability"].iloc[0] <= 1
