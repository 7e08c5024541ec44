"""index names as storage.py declares them (schema-prefixed by the naming convention)

Some indexes were created under names without the schema prefix, so Alembic's comparison of the migrated schema with
storage.py (tests/integration/test_migrations_match_tables.py) saw them as dropped and added. Renaming is all it
takes: the indexes themselves are the same.

Revision ID: payments_0019
Revises: payments_0007
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = 'payments_0019'
down_revision: str | None = 'payments_0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RENAMED = {
    'ix_adjustments_payment_id': 'ix_payments_adjustments_payment_id',
    'ix_approvals_status': 'ix_payments_approvals_status',
    'ix_approvals_subject': 'ix_payments_approvals_subject',
    'ix_credit_balances_account_number': 'ix_payments_credit_balances_account_number',
    'ix_credit_balances_receipt_number': 'ix_payments_credit_balances_receipt_number',
    'ix_dispute_attachments_dispute_id': 'ix_payments_dispute_attachments_dispute_id',
    'ix_disputes_payment_id': 'ix_payments_disputes_payment_id',
    'ix_item_holds_account_number': 'ix_payments_item_holds_account_number',
    'ix_item_holds_arrangement_id': 'ix_payments_item_holds_arrangement_id',
}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX payments."{old}" RENAME TO "{new}"')


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX payments."{new}" RENAME TO "{old}"')
