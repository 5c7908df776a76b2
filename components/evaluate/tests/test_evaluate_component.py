"""The `evaluate` component passes each artifact's path to `fracture.kubeflow.steps.evaluate_step` in its place."""

from fracture.kubeflow.components.evaluate.component import evaluate

from tests.components import call_component


def test_evaluate_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(evaluate, "evaluate_step", tmp_path, monkeypatch, params_json="{}", data_revision="r1")
    assert list(call.args) == [
        "{}",
        call.path("model"),
        call.path("ingest_dir"),
        call.path("splits"),
        call.path("cache"),
        call.path("eval_dir"),
        call.artifacts["metrics"],
        call.artifacts["classification"],
    ]
    assert call.kwargs == {}
