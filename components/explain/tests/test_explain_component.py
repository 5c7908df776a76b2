"""The `explain` component passes each artifact's path to `fracture.kubeflow.steps.explain_step` in its place."""

from fracture.kubeflow.components.explain.component import explain

from tests.components import call_component


def test_explain_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(explain, "explain_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == [
        "{}",
        call.path("model"),
        call.path("eval_dir"),
        call.path("cache"),
        call.path("explain_dir"),
    ]
    assert call.kwargs == {}
