"""The `report` component passes each artifact's path to `fracture.kubeflow.steps.report_step` in its place."""

from fracture.kubeflow.components.report.component import report

from tests.components import call_component


def test_report_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(report, "report_step", tmp_path, monkeypatch, params_json="{}")
    assert list(call.args) == [
        "{}",
        call.path("ingest_dir"),
        call.path("validation"),
        call.path("splits"),
        call.path("model"),
        call.path("eval_dir"),
        call.path("explain_dir"),
        call.path("report"),
    ]
    assert call.kwargs == {}
