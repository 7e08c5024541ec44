"""money safety: the payment's ledger, the account's credit, disputes with evidence, adjustments, approvals

Revision ID: payments_0005
Revises: payments_0004
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "payments_0005"
down_revision: str | None = "payments_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payments"
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.add_column("payments", sa.Column("credited", MONEY, server_default=sa.text("0"), nullable=False), schema=SCHEMA)
    op.add_column("payments", sa.Column("refunded", MONEY, server_default=sa.text("0"), nullable=False), schema=SCHEMA)
    op.add_column(
        "payments", sa.Column("receipt_version", sa.Integer(), server_default=sa.text("1"), nullable=False), schema=SCHEMA
    )
    # What became credit so far: the automatic credit notes payments announced (the part that settled nothing).
    op.execute(
        f"UPDATE {SCHEMA}.payments SET credited = amount - applied "
        "WHERE status IN ('Posted', 'Disputed') AND amount > applied"
    )
    op.create_table(
        "credit_balances",
        sa.Column("credit_note_number", sa.String(40), nullable=False),
        sa.Column("account_number", sa.String(50), nullable=False),
        sa.Column("receipt_number", sa.String(40), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("remaining", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(50), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("credit_note_number", name=op.f("pk_credit_balances")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_credit_balances_account_number"), "credit_balances", ["account_number"], schema=SCHEMA)
    op.create_index(op.f("ix_credit_balances_receipt_number"), "credit_balances", ["receipt_number"], schema=SCHEMA)
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("account_number", sa.String(50), nullable=False),
        sa.Column("gateway_dispute_id", sa.String(100), nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_notes", sa.Text(), nullable=True),
        sa.Column("opened_by", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=True),
        sa.PrimaryKeyConstraint("dispute_id", name=op.f("pk_disputes")),
        sa.UniqueConstraint("gateway_dispute_id", name=op.f("uq_disputes_gateway_dispute_id")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_disputes_payment_id"), "disputes", ["payment_id"], schema=SCHEMA)
    op.create_table(
        "dispute_attachments",
        sa.Column("attachment_id", sa.String(40), nullable=False),
        sa.Column("dispute_id", sa.String(40), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.Text(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("attachment_id", name=op.f("pk_dispute_attachments")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_dispute_attachments_dispute_id"), "dispute_attachments", ["dispute_id"], schema=SCHEMA)
    op.create_table(
        "adjustments",
        sa.Column("adjustment_id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approval_id", sa.String(40), nullable=True),
        sa.Column("approved_by", sa.Text(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("adjustment_id", name=op.f("pk_adjustments")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_adjustments_payment_id"), "adjustments", ["payment_id"], schema=SCHEMA)
    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("account_number", sa.String(length=50), nullable=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approvals")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_approvals_status"), "approvals", ["status", "requested_at"], schema=SCHEMA)
    op.create_index(op.f("ix_approvals_subject"), "approvals", ["subject"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("approvals", "adjustments", "dispute_attachments", "disputes", "credit_balances"):
        op.drop_table(table, schema=SCHEMA)
    for column in ("receipt_version", "refunded", "credited"):
        op.drop_column("payments", column, schema=SCHEMA)
