"""train, across nodes: a launcher for a Kubeflow Trainer TrainJob (`pipeline.train_mode: trainjob`).

Named `train` like the pod-mode component, so the task, its executor and its `model` output keep the step's name
whichever mode compiled the pipeline.
"""

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
    """Model dir written by the TrainJob's rank 0 and copied back here. `data_revision` keys the cache."""
    from fracture.kubeflow.steps import train_trainjob_step

    train_trainjob_step(params_json, epochs, learning_rate, ingest_dir.path, splits.path, cache.path, model.path)
