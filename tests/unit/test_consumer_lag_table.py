"""`paydesk lag`'s table, without a broker."""

from __future__ import annotations

from shared.consumer_lag import PartitionLag, format_table


def test_the_table_lines_up_its_columns() -> None:
    table = format_table([PartitionLag("g", "t", 0, 5, 12), PartitionLag("group-two", "topic", 11, None, 3)])
    assert table.splitlines() == [
        "group      topic  partition  committed  end  lag",
        "g          t              0          5   12    7",
        "group-two  topic         11          -    3    3",
    ]
