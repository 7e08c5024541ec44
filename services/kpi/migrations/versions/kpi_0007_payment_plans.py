"""payment plans: collections' installments and their outcomes by due date (payment plan compliance)

Revision ID: kpi_0007
Revises: kpi_0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "kpi_0007"
down_revision: str | None = "kpi_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "kpi"
MONEY = sa.Numeric(16, 2)


def upgrade() -> None:
    op.create_table(
        "plan_installments",
        sa.Column("item_reference", sa.String(100), nullable=False),
        sa.Column("arrangement_id", sa.String(40), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("paid", MONEY, nullable=False),
        sa.Column("settled_on", sa.Date(), nullable=True),
        sa.Column("missed", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=True),
        sa.PrimaryKeyConstraint("item_reference", name=op.f("pk_plan_installments")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_plan_installments_arrangement_id"), "plan_installments", ["arrangement_id"], schema=SCHEMA)
    op.create_table(
        "daily_plan_outcomes",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kept", sa.Integer(), server_default="0", nullable=False),
        sa.Column("late", sa.Integer(), server_default="0", nullable=False),
        sa.Column("missed", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("day", "currency", name=op.f("pk_daily_plan_outcomes")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("daily_plan_outcomes", schema=SCHEMA)
    op.drop_table("plan_installments", schema=SCHEMA)
