"""The Kubeflow Pipelines shell.

`components/<step>.py` (one import, one call into `steps`), the `pipeline` wiring them into one DAG, and the
`runner` behind `fracture pipeline compile | run-local | submit`.
"""
