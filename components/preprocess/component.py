"""preprocess: decode, window and resize every image into the memory-mappable cache."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(params_json: str, raw_data: Input[Dataset], ingest_dir: Input[Dataset], cache: Output[Dataset]):
    """The uint8 image cache and its index."""
    from fracture.kubeflow.steps import preprocess_step

    preprocess_step(params_json, raw_data.path, ingest_dir.path, cache.path)
