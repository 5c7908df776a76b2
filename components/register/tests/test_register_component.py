"""The `register` component passes each artifact's path to `fracture.kubeflow.steps.register_step` in its place."""

from fracture.kubeflow.components.register.component import register

from tests.components import call_component


def test_register_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(register, "register_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == [
        "{}",
        call.path("model"),
        call.path("eval_dir"),
        call.path("report"),
        call.path("registration"),
        call.path("infra_validation"),
        call.path("validation"),
    ]
    assert call.kwargs == {}
