"""The `validate` component passes each artifact's path to `fracture.kubeflow.steps.validate_step` in its place."""

from fracture.kubeflow.components.validate.component import validate

from tests.components import call_component


def test_validate_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(validate, "validate_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == [
        "{}",
        call.path("raw_data"),
        call.path("ingest_dir"),
        call.path("validation"),
        call.path("data_docs"),
    ]
    assert call.kwargs == {}
