"""The registry's vocabulary: alias names, tag keys and the headline test metrics."""

from __future__ import annotations

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
FINGERPRINT_TAG = "fingerprint"
AUROC, SENSITIVITY = "test.auroc", "test.frozen.sensitivity"
HEADLINE_METRICS = (AUROC, SENSITIVITY, "test.frozen.specificity", "test.auprc", "test.prevalence")
LINEAGE_KEYS = ("manifest_hash", "splits_hash", "params_hash", "split_strategy")  # from the model dir's metadata
TEST_SET_TAG = "test_set_fingerprint"  # sha256 of the sorted test image ids and labels (registry.compare)
TEST_PREDICTIONS_TAG = "test_predictions"  # runs:/ URI of the version's predictions.parquet (the paired evidence)
# The clinical review's sign-off on a version (`fracture review summary`; `register.promote.require_review`).
REVIEW_STATUS_TAG = "review.status"  # passed (signed off) | failed (refused) | undecidable (nobody signed)
REVIEW_TAG_PREFIX = "review."
