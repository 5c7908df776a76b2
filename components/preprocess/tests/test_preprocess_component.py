"""The `preprocess` component passes each artifact's path to `fracture.kubeflow.steps.preprocess_step` in its place."""

from fracture.kubeflow.components.preprocess.component import preprocess

from tests.components import call_component


def test_preprocess_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(preprocess, "preprocess_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == ["{}", call.path("raw_data"), call.path("ingest_dir"), call.path("cache")]
    assert call.kwargs == {}
