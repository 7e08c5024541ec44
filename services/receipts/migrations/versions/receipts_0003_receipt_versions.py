"""receipt versions: an adjusted payment's receipt is re-issued; earlier versions are kept, marked superseded

Revision ID: receipts_0003
Revises: receipts_0002
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "receipts_0003"
down_revision: str | None = "receipts_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("receipts", sa.Column("version", sa.Integer(), server_default="1", nullable=False), schema="receipts")
    op.create_table(
        "receipt_versions",
        sa.Column("receipt_number", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document_hash", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("receipt_number", "version", name=op.f("pk_receipt_versions")),
        schema="receipts",
    )


def downgrade() -> None:
    op.drop_table("receipt_versions", schema="receipts")
    op.drop_column("receipts", "version", schema="receipts")
