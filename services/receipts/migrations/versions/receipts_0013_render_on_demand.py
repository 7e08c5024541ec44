"""documents are stored before their PDF: pdf, sha256 and rendered_at may wait for the render worker

Revision ID: receipts_0013
Revises: receipts_0003
Create Date: 2026-11-30 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "receipts_0013"
down_revision: str | None = "receipts_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("sha256", "pdf", "rendered_at"):
        op.alter_column("documents", column, nullable=True, schema="receipts")
    op.create_index(
        "ix_documents_unrendered",
        "documents",
        ["kind", "number"],
        schema="receipts",
        postgresql_where=sa.text("pdf IS NULL"),
    )


def downgrade() -> None:
    # Only once the render worker has drained its queue: a document without its PDF cannot go back.
    op.drop_index("ix_documents_unrendered", table_name="documents", schema="receipts")
    for column in ("sha256", "pdf", "rendered_at"):
        op.alter_column("documents", column, nullable=False, schema="receipts")
