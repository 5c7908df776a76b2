"""The access vocabulary: roles, the aliases only reviewers may move, and the audit tag keys."""

from __future__ import annotations

PIPELINE_ROLE, REVIEWER_ROLE = "fracture-pipeline", "fracture-reviewer"
# MLflow's permission order (mlflow.server.auth.permissions.PERMISSION_PRIORITY), for comparisons on the client.
PERMISSION_ORDER = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
REVIEW_PERMISSION = "MANAGE"  # move champion, roll back, write the promotion audit
REGISTER_PERMISSION = "EDIT"  # create versions, move challenger

# Aliases a promotion or rollback moves (fracture.registry.names spells the same values; a unit test ties them).
PROTECTED_ALIASES = frozenset({"champion", "previous-champion"})
# Version tags written by promote / rollback: only reviewers may write or delete them.
REVIEW_TAGS = frozenset(
    {
        "promoted_by",
        "promoted_at",
        "promotion_reason",
        "promotion_forced",
        "promoted_from",
        "promotion_comparison",
        "demoted_at",
        "superseded_by",
        "rolled_back_at",
        "rolled_back_by",
        "rolled_back_to",
        "restored_at",
    }
)
# Registered-model tags written by promote / rollback (the history): `history.0001`, ...
REVIEW_TAG_PREFIX = "history."
# Version tags of the clinical review's sign-off (`fracture review summary`): only reviewers may write them, so the
# pipeline cannot sign its own model off.
CLINICAL_REVIEW_TAG_PREFIX = "review."
# Audit tags naming a person: the server accepts them only when they name the authenticated user.
BY_TAGS = frozenset({"registered_by", "promoted_by", "rolled_back_by"})


def at_least(permission: str, needed: str) -> bool:
    """Whether MLflow permission `permission` includes `needed` (DENY and unknown names include nothing)."""
    if permission not in PERMISSION_ORDER or needed not in PERMISSION_ORDER:
        return False
    return PERMISSION_ORDER.index(permission) >= PERMISSION_ORDER.index(needed)


def is_review_tag(key: str) -> bool:
    """A version or registered-model tag only a reviewer may write."""
    return key in REVIEW_TAGS or key.startswith((REVIEW_TAG_PREFIX, CLINICAL_REVIEW_TAG_PREFIX))
