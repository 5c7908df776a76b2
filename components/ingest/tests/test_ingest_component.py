"""The `ingest` component passes each artifact's path to `fracture.kubeflow.steps.ingest_step` in its place."""

from fracture.kubeflow.components.ingest.component import ingest

from tests.components import call_component


def test_ingest_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(
        ingest,
        "ingest_step",
        tmp_path,
        monkeypatch,
        params_json="{}",
        data_source="local",
        data_location="/data",
        data_revision="r1",
    )
    assert list(call.args) == ["{}", "local", "/data", "r1", call.path("raw_data"), call.path("ingest_dir")]
    assert call.kwargs == {}
