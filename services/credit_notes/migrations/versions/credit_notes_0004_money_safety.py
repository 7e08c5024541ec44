"""money safety: voided and refunded credit, reversed and automatic applications, refunds seen, approvals

Credit notes gain what was given back (`voided`) and paid out (`refunded`); the balance rule becomes
applied + remaining + voided + refunded = amount, and the remaining-balance rule applies to Active and Applied
notes only (Voided, Refunded, Pending approval and Rejected follow their own rule). Applications gain what was
reversed since and whether the auto-apply policy made them. Existing rows read as before (all zero / false).

Revision ID: credit_notes_0004
Revises: credit_notes_0003
Create Date: 2026-12-10 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'credit_notes_0004'
down_revision: str | None = 'credit_notes_0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = 'credit_notes'
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.add_column('payments', sa.Column('refunded', MONEY, server_default='0', nullable=False), schema=SCHEMA)
    op.add_column('credit_notes', sa.Column('voided', MONEY, server_default='0', nullable=False), schema=SCHEMA)
    op.add_column('credit_notes', sa.Column('refunded', MONEY, server_default='0', nullable=False), schema=SCHEMA)
    op.drop_constraint(op.f('ck_credit_notes_balances'), 'credit_notes', schema=SCHEMA)
    op.drop_constraint(op.f('ck_credit_notes_status_follows_remaining'), 'credit_notes', schema=SCHEMA)
    op.create_check_constraint(
        op.f('ck_credit_notes_balances'),
        'credit_notes',
        'applied >= 0 AND remaining >= 0 AND voided >= 0 AND refunded >= 0 '
        'AND applied + remaining + voided + refunded = amount',
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f('ck_credit_notes_status_follows_remaining'),
        'credit_notes',
        "status NOT IN ('Active', 'Applied') OR (status = 'Applied') = (remaining = 0)",
        schema=SCHEMA,
    )
    op.add_column('applications', sa.Column('reversed', MONEY, server_default='0', nullable=False), schema=SCHEMA)
    op.add_column(
        'applications', sa.Column('automatic', sa.Boolean(), server_default='false', nullable=False), schema=SCHEMA
    )
    op.create_check_constraint(
        op.f('ck_applications_reversed_within_amount'), 'applications', 'reversed >= 0 AND reversed <= amount', schema=SCHEMA
    )
    op.create_index(op.f('ix_applications_item'), 'applications', ['payment_type', 'item_reference'], schema=SCHEMA)
    op.create_table(
        'approvals',
        sa.Column('approval_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('subject', sa.String(length=100), nullable=False),
        sa.Column('account_number', sa.String(length=50), nullable=True),
        sa.Column('amount', sa.Numeric(14, 2), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('requested_by', sa.String(length=200), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('decided_by', sa.String(length=200), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decision_reason', sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint('approval_id', name=op.f('pk_approvals')),
        schema=SCHEMA,
    )
    op.create_index(op.f('ix_approvals_status'), 'approvals', ['status', 'requested_at'], schema=SCHEMA)
    op.create_index(op.f('ix_approvals_subject'), 'approvals', ['subject'], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table('approvals', schema=SCHEMA)
    op.drop_index(op.f('ix_applications_item'), table_name='applications', schema=SCHEMA)
    op.drop_constraint(op.f('ck_applications_reversed_within_amount'), 'applications', schema=SCHEMA)
    op.drop_column('applications', 'automatic', schema=SCHEMA)
    op.drop_column('applications', 'reversed', schema=SCHEMA)
    op.drop_constraint(op.f('ck_credit_notes_status_follows_remaining'), 'credit_notes', schema=SCHEMA)
    op.drop_constraint(op.f('ck_credit_notes_balances'), 'credit_notes', schema=SCHEMA)
    op.create_check_constraint(
        op.f('ck_credit_notes_balances'), 'credit_notes', 'applied >= 0 AND remaining >= 0 AND applied + remaining = amount',
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f('ck_credit_notes_status_follows_remaining'),
        'credit_notes',
        "status = 'Expired' OR (status = 'Applied') = (remaining = 0)",
        schema=SCHEMA,
    )
    op.drop_column('credit_notes', 'refunded', schema=SCHEMA)
    op.drop_column('credit_notes', 'voided', schema=SCHEMA)
    op.drop_column('payments', 'refunded', schema=SCHEMA)
