"""pool: the folds of a cross-validation study pooled out of fold."""

from typing import List  # noqa: UP035 - KFP reads typing.List[Artifact] as an artifact list

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pool(
    params_json: str,
    eval_dirs: Input[List[Dataset]],  # noqa: UP006
    pool_dir: Output[Dataset],
    metrics: Output[Metrics],
):
    """folds.csv, oof_predictions.parquet, pooled.json; the pooled numbers for the KFP UI."""
    from fracture.kubeflow.steps import pool_step

    pool_step(params_json, [d.path for d in eval_dirs], pool_dir.path, metrics)
