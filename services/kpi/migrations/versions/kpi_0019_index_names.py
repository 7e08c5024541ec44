"""index names as storage.py declares them (schema-prefixed by the naming convention)

Some indexes were created under names without the schema prefix, so Alembic's comparison of the migrated schema with
storage.py (tests/integration/test_migrations_match_tables.py) saw them as dropped and added. Renaming is all it
takes: the indexes themselves are the same.

Revision ID: kpi_0019
Revises: kpi_0008
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = 'kpi_0019'
down_revision: str | None = 'kpi_0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RENAMED = {
    'ix_plan_installments_arrangement_id': 'ix_kpi_plan_installments_arrangement_id',
}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX kpi."{old}" RENAME TO "{new}"')


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f'ALTER INDEX kpi."{new}" RENAME TO "{old}"')
