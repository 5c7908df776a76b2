"""KFP component for the `report` step."""
