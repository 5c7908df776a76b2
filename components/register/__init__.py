"""KFP component for the `register` step."""
