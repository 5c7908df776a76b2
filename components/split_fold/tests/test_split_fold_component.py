"""The `split_fold` component passes each artifact's path to `steps.split_fold_step` and returns its answer."""

from fracture.kubeflow.components.split_fold.component import split_fold

from tests.components import call_component


def test_split_fold_component_wires_its_artifacts_to_the_step(tmp_path, monkeypatch):
    call = call_component(
        split_fold,
        "split_fold_step",
        tmp_path,
        monkeypatch,
        returns='{"fold": 2}',
        params_json="{}",
        strategy="kfold",
        fold=2,
    )
    assert list(call.args) == ["{}", "kfold", 2, call.path("ingest_dir"), call.path("splits")]
    assert call.returned == '{"fold": 2}'  # the fold's params, for its train and evaluate tasks
