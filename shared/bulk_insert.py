"""Multi-row inserts from one array per column: `INSERT ... SELECT ... FROM unnest(...) WITH ORDINALITY`.

Why not executemany (SQLAlchemy's "insertmanyvalues"): it renders a VALUES list with a bind per cell, so a batch
of 500 rows sends thousands of parameters, converted one by one, in a statement whose text changes with the
batch's size (parsed and planned again). Arrays are one parameter per column and one statement text whatever the
size (prepared once per connection), and the rows go in, and take their identity ids, in the order given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, Insert, insert


def insert_from_arrays(table: Table, columns: Sequence[str]) -> Insert:
    """An INSERT of `columns` with one array parameter per column, named after it (`column_arrays`)."""
    arrays = [bindparam(name, type_=ARRAY(table.c[name].type)) for name in columns]
    given = func.unnest(*arrays).table_valued(*columns, with_ordinality="position").render_derived(name="given")
    in_order = select(*(given.c[name] for name in columns)).order_by(given.c.position)
    return insert(table).from_select(list(columns), in_order)


def column_arrays(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The parameters of `insert_from_arrays` for these rows: each column's values, in the rows' order."""
    return {name: [row[name] for row in rows] for name in columns}
