"""The `infravalidate` component passes each artifact's path to `steps.infravalidate_step` in its place."""

from fracture.kubeflow.components.infravalidate.component import infravalidate

from tests.components import call_component


def test_infravalidate_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(infravalidate, "infravalidate_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == [
        "{}",
        call.path("raw_data"),
        call.path("ingest_dir"),
        call.path("model"),
        call.path("eval_dir"),
        call.path("infra_validation"),
    ]
    assert call.kwargs == {}
