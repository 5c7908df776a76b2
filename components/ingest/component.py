"""ingest: fetch raw data (DVC remote or mounted volume) and harmonise it into the manifest."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from fracture.contracts.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    params_json: str,
    data_source: str,
    data_location: str,
    data_revision: str,
    raw_data: Output[Dataset],
    ingest_dir: Output[Dataset],
):
    """Manifest, quarantine list and summary from the raw datasets."""
    from fracture.kubeflow.steps import ingest_step

    ingest_step(params_json, data_source, data_location, data_revision, raw_data.path, ingest_dir.path)
