"""The contracts steps exchange: table columns, artifact names, gate verdicts (one owner each)."""
