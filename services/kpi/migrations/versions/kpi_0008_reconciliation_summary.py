"""the daily reconciliation summary: lines per day, exceptions with their raise and resolve times

Revision ID: kpi_0008
Revises: kpi_0007
Create Date: 2026-11-30 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'kpi_0008'
down_revision: str | None = 'kpi_0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reconciliation_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('lines_imported', sa.Integer(), server_default='0', nullable=False),
    sa.Column('amount_imported', sa.Numeric(precision=16, scale=2), server_default='0', nullable=False),
    sa.Column('lines_reconciled', sa.Integer(), server_default='0', nullable=False),
    sa.Column('amount_reconciled', sa.Numeric(precision=16, scale=2), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('day', 'currency'),
    schema='kpi'
    )
    op.create_table('reconciliation_exceptions',
    sa.Column('exception_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('subject', sa.String(length=160), nullable=False),
    sa.Column('amount', sa.Numeric(precision=16, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution', sa.String(length=30), nullable=True),
    sa.PrimaryKeyConstraint('exception_id'),
    schema='kpi'
    )
    op.create_index('ix_kpi_reconciliation_exceptions_open', 'reconciliation_exceptions', ['currency', 'raised_at', 'resolved_at'], unique=False, schema='kpi')


def downgrade() -> None:
    op.drop_index('ix_kpi_reconciliation_exceptions_open', table_name='reconciliation_exceptions', schema='kpi')
    op.drop_table('reconciliation_exceptions', schema='kpi')
    op.drop_table('reconciliation_days', schema='kpi')
