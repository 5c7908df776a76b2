"""KFP component for the `preprocess` step."""
