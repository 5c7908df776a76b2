"""explain: Grad-CAM overlays for examples chosen by a fixed rule."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain(
    params_json: str,
    model: Input[Model],
    eval_dir: Input[Dataset],
    cache: Input[Dataset],
    explain_dir: Output[Dataset],
):
    """Grad-CAM overlays and their index."""
    from fracture.kubeflow.steps import explain_step

    explain_step(params_json, model.path, eval_dir.path, cache.path, explain_dir.path)
