"""Inference and serving: predict, the MLflow pyfunc, its model code, the local server, KServe deploy."""
