"""KFP components: one module per step, each one import and one call into `fracture.kubeflow.steps`."""
