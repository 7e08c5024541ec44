"""scheduled runs (one per schedule and pay period) and Stripe send attempts

Revision ID: payouts_0009
Revises: payouts_0001
Create Date: 2026-11-30 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'payouts_0009'
down_revision: str | None = 'payouts_0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('scheduled_runs',
    sa.Column('schedule', sa.String(length=20), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=True),
    sa.Column('outcome', sa.String(length=30), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('schedule', 'period_start', name=op.f('pk_scheduled_runs')),
    schema='payouts'
    )
    op.create_table('send_attempts',
    sa.Column('payout_id', sa.String(length=40), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('payout_id', name=op.f('pk_send_attempts')),
    schema='payouts'
    )


def downgrade() -> None:
    op.drop_table('send_attempts', schema='payouts')
    op.drop_table('scheduled_runs', schema='payouts')
