"""The clinical review app: reviewers go through a model version's evaluated cases, record verdicts, sign off.

`fracture review serve` runs it (FastAPI, server-rendered Jinja2 pages, SQLAlchemy + Alembic store); see
docs/review.md. Its users are *clinical reviewers* (`CLINICAL_REVIEWER_ROLE`), who judge cases in this app; they
are not the registry's promotion role `fracture-reviewer` (fracture.access.names.REVIEWER_ROLE), which moves the
`champion` alias in MLflow.
"""

CLINICAL_REVIEWER_ROLE = "clinical-reviewer"
