"""PDF files stored without compression: a PDF's streams are compressed already, and Postgres's pglz of each
file was most of its CPU per render, for no space saved

Revision ID: receipts_0031
Revises: receipts_0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "receipts_0031"
down_revision: str | None = "receipts_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# EXTERNAL: out of line in the TOAST table as it is; EXTENDED (bytea's default): compressed first. Files already
# stored keep their form until rewritten; both read the same.
PDF_COLUMNS = (("documents", "pdf"), ("receipt_versions", "pdf"))


def upgrade() -> None:
    for table, column in PDF_COLUMNS:
        op.execute(f"ALTER TABLE receipts.{table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    for table, column in PDF_COLUMNS:
        op.execute(f"ALTER TABLE receipts.{table} ALTER COLUMN {column} SET STORAGE EXTENDED")
