"""The review tables: case_verdicts (append-only) and sign_offs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "case_verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("label_wrong", sa.Boolean, nullable=False),
        sa.Column("suggested_label", sa.Integer, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("verdict IN ('agree', 'disagree', 'unsure')", name="ck_verdict"),
        sa.CheckConstraint("suggested_label IS NULL OR suggested_label IN (0, 1)", name="ck_suggested_label"),
    )
    op.create_index("ix_case_verdicts_model_version", "case_verdicts", ["model_version"])
    op.create_index("ix_case_verdicts_image_id", "case_verdicts", ["image_id"])
    op.create_table(
        "sign_offs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("verdict_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('signed_off', 'refused')", name="ck_decision"),
    )
    op.create_index("ix_sign_offs_model_version", "sign_offs", ["model_version"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("sign_offs")
    op.drop_table("case_verdicts")
