"""KFP component for the `train` step."""
