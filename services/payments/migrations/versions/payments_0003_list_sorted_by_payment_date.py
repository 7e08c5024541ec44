"""list sorted by payment date

Revision ID: payments_0003
Revises: payments_0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "payments_0003"
down_revision: str | None = "payments_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The list sorts by payment date, so a date-range filter reads an index range instead of scanning.
    op.drop_index("ix_payments_status_recorded_at_id", table_name="payments", schema="payments")
    op.drop_index("ix_payments_recorded_at_id", table_name="payments", schema="payments")
    op.drop_index("ix_payments_payment_date", table_name="payments", schema="payments")
    op.create_index("ix_payments_payment_date_id", "payments", ["payment_date", "payment_id"], schema="payments")
    op.create_index(
        "ix_payments_status_payment_date_id", "payments", ["status", "payment_date", "payment_id"], schema="payments"
    )


def downgrade() -> None:
    op.drop_index("ix_payments_status_payment_date_id", table_name="payments", schema="payments")
    op.drop_index("ix_payments_payment_date_id", table_name="payments", schema="payments")
    op.create_index("ix_payments_payment_date", "payments", ["payment_date"], schema="payments")
    op.create_index("ix_payments_recorded_at_id", "payments", ["recorded_at", "payment_id"], schema="payments")
    op.create_index(
        "ix_payments_status_recorded_at_id", "payments", ["status", "recorded_at", "payment_id"], schema="payments"
    )
