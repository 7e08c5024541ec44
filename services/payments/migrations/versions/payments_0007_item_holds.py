"""item holds: bills an arrangement took over and installment references it withdrew are not separately payable

Revision ID: payments_0007
Revises: payments_0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payments_0007"
down_revision: str | None = "payments_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payments"
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "item_holds",
        sa.Column("payment_type", sa.String(20), nullable=False),
        sa.Column("item_reference", sa.String(100), nullable=False),
        sa.Column("account_number", sa.String(50), nullable=False),
        sa.Column("arrangement_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("owed", MONEY, nullable=True),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_type", "item_reference", name=op.f("pk_item_holds")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_item_holds_account_number"), "item_holds", ["account_number"], schema=SCHEMA)
    op.create_index(op.f("ix_item_holds_arrangement_id"), "item_holds", ["arrangement_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("item_holds", schema=SCHEMA)
