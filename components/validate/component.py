"""validate: Great Expectations over the manifest; fails the run on a blocking expectation."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(
    params_json: str,
    raw_data: Input[Dataset],
    ingest_dir: Input[Dataset],
    validation: Output[Dataset],
    data_docs: Output[HTML],
):
    """validation.json and the Data Docs site (its index as an HTML artifact)."""
    from fracture.kubeflow.steps import validate_step

    validate_step(params_json, raw_data.path, ingest_dir.path, validation.path, data_docs.path)
