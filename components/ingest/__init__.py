"""KFP component for the `ingest` step."""
