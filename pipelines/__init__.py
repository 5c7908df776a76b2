"""Kubeflow pipeline definitions."""
