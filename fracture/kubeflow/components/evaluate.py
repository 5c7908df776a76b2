"""evaluate: metrics with CIs at the operating point frozen on val, and the registration gate."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from fracture.kubeflow.image import IMAGE


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
) -> bool:
    """Eval dir; headline metrics, ROC and confusion matrix for the KFP UI; returns whether the gate passed.

    The single `bool` return (KFP output `Output`) is what `dsl.If` reads; kfp.local resolves conditions only on
    a task's single `Output`, not on named outputs.
    """
    from fracture.kubeflow.steps import evaluate_step

    return evaluate_step(
        params_json, model.path, ingest_dir.path, splits.path, cache.path, eval_dir.path, metrics, classification
    )
