"""Pure KPI rules. No I/O."""

from __future__ import annotations

import re
from datetime import date

from shared.errors import Rejected

_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def month_bounds(period: str) -> tuple[date, date]:
    """First day of the month `YYYY-MM` and first day of the next month."""
    match = _PERIOD.fullmatch(period)
    if match is None or not 1 <= int(match.group(1)) <= 9998:
        raise Rejected("invalid_period", "period must be YYYY-MM", field="period")
    year, month = int(match.group(1)), int(match.group(2))
    start = date(year, month, 1)
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return start, end
