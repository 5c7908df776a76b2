"""Kubeflow Pipelines components: one folder per step, each one import and one call into `fracture`."""
