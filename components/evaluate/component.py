"""evaluate: metrics with CIs at the operating point frozen on val, and the registration gate."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    params_json: str,
    data_revision: str,
    model: Input[Model],
    ingest_dir: Input[Dataset],
    splits: Input[Dataset],
    cache: Input[Dataset],
    eval_dir: Output[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
) -> None:
    """Eval dir, with the gate's verdict (gate.json) that infravalidate and register act on; KFP UI metrics."""
    from fracture.kubeflow.steps import evaluate_step

    evaluate_step(
        params_json, model.path, ingest_dir.path, splits.path, cache.path, eval_dir.path, metrics, classification
    )
