"""What a promotion comparison reads from the registry and writes back.

Reads: both versions' test predictions (the `test_predictions` evidence uploaded at registration) and how many
registered versions carry the candidate's test-set fingerprint. Writes: the `comparison.*` tags on the candidate.
The statistics themselves are pure, in `fracture.registry.compare`.
"""

from __future__ import annotations

import logging
import re
import tempfile
from typing import Any

import pandas as pd

from fracture.base.errors import InputError
from fracture.config import Params
from fracture.registry.client import first_line
from fracture.registry.compare import differing_test_set, extract_test_rows, pair_predictions, paired_comparison
from fracture.registry.compare import fingerprint_test_set as fingerprint_of
from fracture.registry.names import TEST_PREDICTIONS_TAG, TEST_SET_TAG
from fracture.tracking import tracking_uri

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{64}$")


def load_test_predictions(version: Any) -> pd.DataFrame:
    """A version's test predictions, downloaded from its `test_predictions` URI and checked against its tags.

    Raises:
        InputError: no evidence tag, the download failed, or the file is not the test set the tags name.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from fracture.base.io import read_parquet

    uri = version.tags.get(TEST_PREDICTIONS_TAG)
    if not uri:
        raise InputError(f"version {version.version} has no {TEST_PREDICTIONS_TAG} evidence (registered before paired "
                         "comparisons existed: register its model and eval dirs again)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fracture-compare-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri())
        except (MlflowException, OSError) as err:
            raise InputError(f"version {version.version}: could not download {uri}: {first_line(err)}") from None
        test = extract_test_rows(read_parquet(path), f"version {version.version} {uri}")
    if fingerprint_of(test) != version.tags.get(TEST_SET_TAG):
        raise InputError(f"version {version.version}: {uri} is not the test set its {TEST_SET_TAG} tag names")
    return test


def count_test_set_reuse(client: Any, fingerprint: str | None) -> int | None:
    """How many registered versions (all registered models) were evaluated on this test set; None without one."""
    if not fingerprint or not _HEX.match(fingerprint):
        return None
    query, total, token = f"tags.{TEST_SET_TAG} = '{fingerprint}'", 0, None
    while True:
        page = client.search_model_versions(query, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            return total


def count_promotion_decisions(client: Any, fingerprint: str | None) -> int | None:
    """Promotion decisions recorded on this test set; None without a fingerprint.

    A decision is a version evaluated on it that carries a `comparison.at` tag (a promote that was not a dry run,
    passed or refused).
    """
    if not fingerprint or not _HEX.match(fingerprint):
        return None
    query, total, token = f"tags.{TEST_SET_TAG} = '{fingerprint}'", 0, None
    while True:
        page = client.search_model_versions(query, page_token=token)
        total += sum(1 for v in page if "comparison.at" in (v.tags or {}))
        token = page.token
        if not token:
            return total


def gather_evidence(
    client: Any, candidate: Any, champion: Any | None, params: Params, allow_different: bool, reason: str | None
) -> dict:
    """Everything the comparison rows need: test-set reuse, test-set differences and the paired statistics.

    Returns:
        {"test_set_reuse", "allowed_different", "reason"} and, with a champion, "test_set_differences" plus either
        "paired" (compare.paired_comparison) or "paired_error" (why it could not be computed: the gate refuses).
    """
    evidence: dict = {
        "test_set_reuse": count_test_set_reuse(client, candidate.tags.get(TEST_SET_TAG)),
        "promotion_decisions": count_promotion_decisions(client, candidate.tags.get(TEST_SET_TAG)),
        "allowed_different": allow_different,
        "reason": reason,
    }
    if champion is None:
        return evidence
    evidence["test_set_differences"] = differing_test_set(candidate.tags, champion.tags)
    if evidence["test_set_differences"]:
        return evidence
    try:
        pairs = pair_predictions(load_test_predictions(candidate), load_test_predictions(champion))
    except InputError as err:
        evidence["paired_error"] = str(err)
        return evidence
    ep = params.evaluate
    evidence["paired"] = paired_comparison(pairs, ep.n_bootstrap, params.base.seed, ep.ci_level)
    return evidence


def record_comparison(client: Any, name: str, version: Any, tags: dict[str, str]) -> None:
    """Replace the version's `comparison.*` tags by `tags` (the last comparison wins, no stale keys remain)."""
    for key in version.tags:
        if key.startswith("comparison.") and key not in tags:
            client.delete_model_version_tag(name, version.version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    log.info("%s version %s: comparison recorded (%d tags)", name, version.version, len(tags))
