"""KFP component for the `explain` step."""
