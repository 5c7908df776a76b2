"""Developer tooling (not part of the product package): the audit and the demo summary."""
