"""register: a new MLflow model version with lineage and evidence, alias `challenger`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    params_json: str,
    model: Input[Model],
    eval_dir: Input[Dataset],
    report: Input[HTML],
    validation: Input[Dataset],
    infra_validation: Input[Artifact],
    registration: Output[Artifact],
):
    """The registration record (name, version, run id); the infra validation result becomes version tags."""
    from fracture.kubeflow.steps import register_step

    register_step(
        params_json, model.path, eval_dir.path, report.path, registration.path, infra_validation.path, validation.path
    )
