"""The one container image every component runs in (built from docker/Dockerfile).

The pipeline overrides it per task from params.yaml `pipeline.image` at compile time; this default only
names the image for components used on their own.
"""

IMAGE = "ghcr.io/fracture-mlops/fracture:0.1.0"
