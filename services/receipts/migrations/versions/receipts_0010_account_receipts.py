"""account receipts: an index for a customer's own receipts, newest first

Revision ID: receipts_0010
Revises: receipts_0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "receipts_0010"
down_revision: str | None = "receipts_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_receipts_account_posted",
        "receipts",
        ["account_number", "posted_at", "receipt_number"],
        schema="receipts",
    )


def downgrade() -> None:
    op.drop_index("ix_receipts_account_posted", table_name="receipts", schema="receipts")
