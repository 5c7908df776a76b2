"""KFP component for the `evaluate` step."""
