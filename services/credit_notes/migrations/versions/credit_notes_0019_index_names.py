"""index names as storage.py declares them (schema-prefixed by the naming convention)

Some indexes were created under names without the schema prefix, so Alembic's comparison of the migrated schema with
storage.py (tests/integration/test_migrations_match_tables.py) saw them as dropped and added. Renaming is all it
takes: the indexes themselves are the same.

Revision ID: credit_notes_0019
Revises: credit_notes_0004
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = 'credit_notes_0019'
down_revision: str | None = 'credit_notes_0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RENAMED = {
    'ix_approvals_status': 'ix_credit_notes_approvals_status',
    'ix_approvals_subject': 'ix_credit_notes_approvals_subject',
}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX credit_notes."{old}" RENAME TO "{new}"')


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX credit_notes."{new}" RENAME TO "{old}"')
