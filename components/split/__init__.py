"""KFP component for the `split` step."""
