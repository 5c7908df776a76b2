"""The `train` component passes each artifact's path to `fracture.kubeflow.steps.train_step` in its place."""

from fracture.kubeflow.components.train.component import train

from tests.components import call_component


def test_train_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(
        train, "train_step", tmp_path, monkeypatch, params_json="{}", epochs=3, learning_rate=0.001, data_revision="r1"
    )
    assert list(call.args) == [
        "{}",
        3,
        0.001,
        call.path("ingest_dir"),
        call.path("splits"),
        call.path("cache"),
        call.path("model"),
    ]
    assert call.kwargs == {}
