"""infravalidate: serve the trained model with `mlflow models serve` and replay its evaluation before registration."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def infravalidate(
    params_json: str,
    raw_data: Input[Dataset],
    ingest_dir: Input[Dataset],
    model: Input[Model],
    eval_dir: Input[Dataset],
    infra_validation: Output[Artifact],
) -> None:
    """The result (JSON) as an artifact, which register acts on; "not run" when the evaluation gate refused."""
    from fracture.kubeflow.steps import infravalidate_step

    infravalidate_step(params_json, raw_data.path, ingest_dir.path, model.path, eval_dir.path, infra_validation.path)
