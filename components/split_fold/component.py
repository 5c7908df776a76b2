"""split_fold: one fold of a cross-validation study (the fold's splits and its resolved params)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split_fold(params_json: str, strategy: str, fold: int, ingest_dir: Input[Dataset], splits: Output[Dataset]) -> str:
    """splits.parquet of fold `fold`; returns the fold's params as JSON (the fold's train and evaluate run on it)."""
    from fracture.kubeflow.steps import split_fold_step

    return split_fold_step(params_json, strategy, fold, ingest_dir.path, splits.path)
