"""split: patient-grouped splits with the cohort policy."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split(params_json: str, strategy: str, ingest_dir: Input[Dataset], splits: Output[Dataset]):
    """splits.parquet and the split summary."""
    from fracture.kubeflow.steps import split_step

    split_step(params_json, strategy, ingest_dir.path, splits.path)
