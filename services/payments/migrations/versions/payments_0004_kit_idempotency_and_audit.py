"""kit idempotency keys and audit trail

Revision ID: payments_0004
Revises: payments_0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "payments_0004"
down_revision: str | None = "payments_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every key stored so far was for recording a payment (at the counter, or `command:<id>` from a command).
OPERATION = "payment.record"


def upgrade() -> None:
    # Idempotency keys in the kit's shape (shared/idempotency.py): keyed per operation, the first result kept.
    op.add_column(
        "idempotency_keys",
        sa.Column("operation", sa.String(length=30), server_default=OPERATION, nullable=False),
        schema="payments",
    )
    op.alter_column("idempotency_keys", "operation", server_default=None, schema="payments")
    op.alter_column(
        "idempotency_keys",
        "payment_id",
        new_column_name="result",
        type_=sa.String(length=100),
        existing_type=sa.String(length=40),
        existing_nullable=True,
        schema="payments",
    )
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary", schema="payments")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["operation", "key"], schema="payments")

    # The audit trail in the kit's shape (shared/audit.py): before, after and reason instead of a details blob.
    # Old entries stay readable: a settings change keeps its before and after, a cancellation its reason, and
    # every other entry's details become its `after`.
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    op.add_column("audit_log", sa.Column("before", jsonb, nullable=True), schema="payments")
    op.add_column("audit_log", sa.Column("after", jsonb, nullable=True), schema="payments")
    op.add_column("audit_log", sa.Column("reason", sa.Text(), nullable=True), schema="payments")
    op.execute(
        "UPDATE payments.audit_log SET before = details -> 'before', after = details -> 'after'"
        " WHERE action = 'settings.changed'"
    )
    op.execute(
        "UPDATE payments.audit_log SET reason = details ->> 'reason', after = details - 'reason'"
        " WHERE action = 'payment.cancelled'"
    )
    op.execute(
        "UPDATE payments.audit_log SET after = details WHERE action NOT IN ('settings.changed', 'payment.cancelled')"
    )
    op.drop_column("audit_log", "details", schema="payments")
    op.create_index(op.f("ix_payments_audit_log_subject"), "audit_log", ["subject"], unique=False, schema="payments")


def downgrade() -> None:
    op.drop_index(op.f("ix_payments_audit_log_subject"), table_name="audit_log", schema="payments")
    op.add_column(
        "audit_log",
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        schema="payments",
    )
    op.alter_column("audit_log", "details", server_default=None, schema="payments")
    op.execute(
        "UPDATE payments.audit_log SET details = CASE"
        " WHEN action = 'settings.changed' THEN jsonb_build_object('before', before, 'after', after)"
        " ELSE coalesce(before, '{}'::jsonb) || coalesce(after, '{}'::jsonb)"
        " || CASE WHEN reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', reason) END END"
    )
    op.drop_column("audit_log", "reason", schema="payments")
    op.drop_column("audit_log", "after", schema="payments")
    op.drop_column("audit_log", "before", schema="payments")

    # Keys of other operations did not exist before this revision.
    op.execute(f"DELETE FROM payments.idempotency_keys WHERE operation <> '{OPERATION}'")
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary", schema="payments")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["key"], schema="payments")
    op.alter_column(
        "idempotency_keys",
        "result",
        new_column_name="payment_id",
        type_=sa.String(length=40),
        existing_type=sa.String(length=100),
        existing_nullable=True,
        schema="payments",
    )
    op.drop_column("idempotency_keys", "operation", schema="payments")
