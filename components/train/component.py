"""train: the Swin fracture classifier (GPU task on a cluster)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    params_json: str,
    epochs: int,
    learning_rate: float,
    data_revision: str,
    ingest_dir: Input[Dataset],
    splits: Input[Dataset],
    cache: Input[Dataset],
    model: Output[Model],
):
    """Model dir (weights, config with the frozen threshold, metadata). `data_revision` keys the cache."""
    from fracture.kubeflow.steps import train_step

    train_step(params_json, epochs, learning_rate, ingest_dir.path, splits.path, cache.path, model.path)
