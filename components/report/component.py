"""report: the self-contained HTML evaluation report and model card."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    params_json: str,
    ingest_dir: Input[Dataset],
    validation: Input[Dataset],
    splits: Input[Dataset],
    model: Input[Model],
    eval_dir: Input[Dataset],
    explain_dir: Input[Dataset],
    report: Output[HTML],
):
    """report.html, shown by the KFP UI."""
    from fracture.kubeflow.steps import report_step

    report_step(
        params_json,
        ingest_dir.path,
        validation.path,
        splits.path,
        model.path,
        eval_dir.path,
        explain_dir.path,
        report.path,
    )
