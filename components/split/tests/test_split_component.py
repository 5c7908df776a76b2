"""The `split` component passes each artifact's path to `fracture.kubeflow.steps.split_step` in its place."""

from fracture.kubeflow.components.split.component import split

from tests.components import call_component


def test_split_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(split, "split_step", tmp_path, monkeypatch, params_json="{}", strategy="kfold")
    assert list(call.args) == ["{}", "kfold", call.path("ingest_dir"), call.path("splits")]
    assert call.kwargs == {}
