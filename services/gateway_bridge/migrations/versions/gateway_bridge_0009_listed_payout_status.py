"""listed payouts keep the status they were listed with, so a later status lists them again

Revision ID: gateway_bridge_0009
Revises: gateway_bridge_0003
Create Date: 2026-11-30 23:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'gateway_bridge_0009'
down_revision: str | None = 'gateway_bridge_0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('listed_payouts', sa.Column('status', sa.String(length=20), nullable=True), schema='gateway_bridge')


def downgrade() -> None:
    op.drop_column('listed_payouts', 'status', schema='gateway_bridge')
