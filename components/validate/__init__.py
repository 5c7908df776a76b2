"""KFP component for the `validate` step."""
