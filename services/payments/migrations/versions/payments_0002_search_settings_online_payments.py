"""search settings online payments

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'payments_0002'
down_revision: str | None = 'payments_0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Trigram indexes make case-insensitive partial search fast at millions of rows.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table('settings',
    sa.Column('key', sa.String(length=50), nullable=False),
    sa.Column('value', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_by', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings')),
    schema='payments'
    )
    op.add_column('accounts', sa.Column('reported_balance', sa.Numeric(precision=14, scale=2), nullable=True), schema='payments')
    op.add_column('accounts', sa.Column('collected_since_report', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False), schema='payments')
    op.add_column('accounts', sa.Column('search_text', sa.Text(), sa.Computed("lower(name || ' ' || account_number)", persisted=True), nullable=True), schema='payments')
    op.create_index('ix_accounts_search_trgm', 'accounts', ['search_text'], unique=False, schema='payments', postgresql_using='gin', postgresql_ops={'search_text': 'gin_trgm_ops'})
    # Existing rows take their consumer's name and their posting time; new rows always give both.
    op.add_column('payments', sa.Column('consumer_name', sa.Text(), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True), schema='payments')
    op.execute(
        "UPDATE payments.payments p SET consumer_name = a.name, recorded_at = p.posted_at"
        " FROM payments.accounts a WHERE a.account_number = p.account_number"
    )
    op.alter_column('payments', 'consumer_name', nullable=False, schema='payments')
    op.alter_column('payments', 'recorded_at', nullable=False, schema='payments')
    op.add_column('payments', sa.Column('online', sa.Boolean(), server_default=sa.text('false'), nullable=False), schema='payments')
    op.add_column('payments', sa.Column('payment_intent_id', sa.String(length=100), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('gateway_status', sa.String(length=30), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('webhook_status', sa.String(length=30), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('settlement_status', sa.String(length=30), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('verified_by', sa.Text(), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('cancelled_by', sa.Text(), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('cancel_reason', sa.Text(), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('credit_note_number', sa.String(length=40), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('credit_note_amount', sa.Numeric(precision=14, scale=2), nullable=True), schema='payments')
    op.add_column('payments', sa.Column('search_text', sa.Text(), sa.Computed("lower(consumer_name || ' ' || receipt_number || ' ' || account_number)", persisted=True), nullable=True), schema='payments')
    op.alter_column('payments', 'posted_at',
               existing_type=postgresql.TIMESTAMP(timezone=True),
               nullable=True,
               schema='payments')
    op.drop_index(op.f('ix_payments_payments_account_number'), table_name='payments', schema='payments')
    op.create_index(op.f('ix_payments_payments_account_number'), 'payments', ['account_number', 'recorded_at'], unique=False, schema='payments')
    op.create_index('ix_payments_amount_id', 'payments', ['amount', 'payment_id'], unique=False, schema='payments')
    op.create_index('ix_payments_payment_date', 'payments', ['payment_date'], unique=False, schema='payments')
    op.create_index('ix_payments_recorded_at_id', 'payments', ['recorded_at', 'payment_id'], unique=False, schema='payments')
    op.create_index('ix_payments_search_trgm', 'payments', ['search_text'], unique=False, schema='payments', postgresql_using='gin', postgresql_ops={'search_text': 'gin_trgm_ops'})
    op.create_index('ix_payments_status_recorded_at_id', 'payments', ['status', 'recorded_at', 'payment_id'], unique=False, schema='payments')
    op.create_unique_constraint(op.f('uq_payments_payment_intent_id'), 'payments', ['payment_intent_id'], schema='payments')


def downgrade() -> None:
    op.drop_constraint(op.f('uq_payments_payment_intent_id'), 'payments', schema='payments', type_='unique')
    op.drop_index('ix_payments_status_recorded_at_id', table_name='payments', schema='payments')
    op.drop_index('ix_payments_search_trgm', table_name='payments', schema='payments', postgresql_using='gin', postgresql_ops={'search_text': 'gin_trgm_ops'})
    op.drop_index('ix_payments_recorded_at_id', table_name='payments', schema='payments')
    op.drop_index('ix_payments_payment_date', table_name='payments', schema='payments')
    op.drop_index('ix_payments_amount_id', table_name='payments', schema='payments')
    op.drop_index(op.f('ix_payments_payments_account_number'), table_name='payments', schema='payments')
    op.create_index(op.f('ix_payments_payments_account_number'), 'payments', ['account_number', 'posted_at'], unique=False, schema='payments')
    op.alter_column('payments', 'posted_at',
               existing_type=postgresql.TIMESTAMP(timezone=True),
               nullable=False,
               schema='payments')
    op.drop_column('payments', 'search_text', schema='payments')
    op.drop_column('payments', 'credit_note_amount', schema='payments')
    op.drop_column('payments', 'credit_note_number', schema='payments')
    op.drop_column('payments', 'cancel_reason', schema='payments')
    op.drop_column('payments', 'cancelled_at', schema='payments')
    op.drop_column('payments', 'cancelled_by', schema='payments')
    op.drop_column('payments', 'verified_at', schema='payments')
    op.drop_column('payments', 'verified_by', schema='payments')
    op.drop_column('payments', 'settled_at', schema='payments')
    op.drop_column('payments', 'settlement_status', schema='payments')
    op.drop_column('payments', 'webhook_status', schema='payments')
    op.drop_column('payments', 'gateway_status', schema='payments')
    op.drop_column('payments', 'payment_intent_id', schema='payments')
    op.drop_column('payments', 'online', schema='payments')
    op.drop_column('payments', 'recorded_at', schema='payments')
    op.drop_column('payments', 'consumer_name', schema='payments')
    op.drop_index('ix_accounts_search_trgm', table_name='accounts', schema='payments', postgresql_using='gin', postgresql_ops={'search_text': 'gin_trgm_ops'})
    op.drop_column('accounts', 'search_text', schema='payments')
    op.drop_column('accounts', 'collected_since_report', schema='payments')
    op.drop_column('accounts', 'reported_balance', schema='payments')
    op.drop_table('settings', schema='payments')
