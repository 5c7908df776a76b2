"""The preprocess step and the cache contract every reader checks."""
