"""fracture-mlops: a Swin-Transformer wrist fracture classifier, from raw datasets to a registered model."""

__version__ = "0.1.0"
