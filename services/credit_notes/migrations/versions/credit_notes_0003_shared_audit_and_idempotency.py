"""the audit trail and idempotency keys of the shared kit

The audit trail gains `reason` (old entries have none); an idempotency key's result may hold up to 100
characters, as in every service. Both changes keep every existing row readable as it is.

Revision ID: credit_notes_0003
Revises: credit_notes_0002
Create Date: 2026-11-28 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'credit_notes_0003'
down_revision: str | None = 'credit_notes_0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('audit_log', sa.Column('reason', sa.Text(), nullable=True), schema='credit_notes')
    op.alter_column(
        'idempotency_keys',
        'result',
        existing_type=sa.String(length=40),
        type_=sa.String(length=100),
        existing_nullable=True,
        schema='credit_notes',
    )


def downgrade() -> None:
    # Results are credit-note numbers and application ids, all well within 40 characters.
    op.alter_column(
        'idempotency_keys',
        'result',
        existing_type=sa.String(length=100),
        type_=sa.String(length=40),
        existing_nullable=True,
        schema='credit_notes',
    )
    op.drop_column('audit_log', 'reason', schema='credit_notes')
