"""The KubeRay RayJob of the search (infra/ray/rayjob.yaml) against the published RayJob CRD schema, and its
entrypoint against `fracture tune`'s own options.
"""

from __future__ import annotations

import gzip
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml

from fracture.cli import app
from tests.unit.kubeflow.test_trainjob import strict

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "tests" / "data" / "kuberay" / "rayjob-v1.schema.json.gz"
MANIFEST_PATH = REPO / "infra" / "ray" / "rayjob.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(gzip.decompress(SCHEMA_PATH.read_bytes()))


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(MANIFEST_PATH.read_text())


def test_the_rayjob_validates_against_the_kuberay_crd(schema, rayjob):
    assert schema["x-vendored-from"]["commit"] == "59d663aeec13760646da3db9c1cf8cfe883e30b7"
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    jsonschema.Draft7Validator(strict(schema)).validate(rayjob)


def test_the_schema_refuses_what_kubectl_would_drop(schema, rayjob):
    bad = json.loads(json.dumps(rayjob))
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["gpusPerWorker"] = 1  # not a KubeRay field
    with pytest.raises(jsonschema.ValidationError, match="gpusPerWorker"):
        jsonschema.Draft7Validator(strict(schema)).validate(bad)


def test_the_entrypoint_is_a_fracture_tune_command_line(rayjob):
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["fracture", "tune"]
    root = typer.main.get_command(app)
    ctx = root.get_command(root.make_context("fracture", ["tune"]), "tune").make_context("tune", argv[2:])
    assert ctx.params["out"].is_absolute() and str(ctx.params["out"]).startswith("/mnt/tune/")
    assert str(ctx.params["space"]) == "/opt/fracture/configs/search_space.yaml"  # in the image (docker/Dockerfile)


def test_ray_versions_agree_with_the_lock_file(rayjob):
    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == lock["ray"]
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    for group in workers:
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # one trial per GPU worker (gpu: auto)


def test_the_search_claim_validates_and_is_what_every_node_mounts(rayjob):
    import kubernetes_validate

    claim = yaml.safe_load((REPO / "infra" / "ray" / "search-pvc.yaml").read_text())
    kubernetes_validate.validate(claim, "1.31.0", strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = rayjob["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tune"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert {"name": "tune", "mountPath": "/mnt/tune"} in pod["containers"][0]["volumeMounts"]
