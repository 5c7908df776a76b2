"""The Kubeflow pipeline definitions (package fracture.kubeflow.pipelines, mapped by pyproject.toml)."""
