"""A payee's statement for one run as PDF, laid out by Typst (the pattern of the receipts service).

Only the fonts embedded in the `typst` package are used and the PDF's creation date is the run's date, so the
same statement gives the same bytes on every machine.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import typst

from services.payouts.domain import ROUNDING_RULE
from shared.money import format_money

TEMPLATE = Path(__file__).with_name("templates") / "statement.typ"


def statement_document(data: dict[str, Any], *, utility: str) -> dict[str, Any]:
    """The statement's content as the template shows it: every amount already formatted."""
    payee, payout, run = data["payee"], data["payout"], data["run"]
    currency = payout["currency"]
    rules = sorted({i["calculation"]["rule"] for i in data["items"] if i.get("calculation")})
    return {
        "utility": utility,
        "payee_id": payee["payee_id"],
        "payee_name": payee["name"],
        "payout_id": payout["payout_id"],
        "run_id": run["run_id"],
        "as_of": run["as_of"].isoformat(),
        "status": payout["status"],
        "method": payout["method"],
        "reference": payout["reference"] or "not sent yet",
        "currency": currency,
        "amount_display": format_money(payout["amount"], currency),
        "rounding": f"amounts rounded {ROUNDING_RULE}",
        "lines": [
            {
                "earned_on": i["earned_on"].isoformat(),
                "description": i["description"] or i["kind"],
                "kind": i["kind"],
                "amount": format_money(i["amount"], i["currency"]),
                "rate": format(i["rate"].normalize(), "f"),
                "rate_source": f"{i['rate_source']} ({i['rate_as_of'].isoformat() if i['rate_as_of'] else 'n/a'})",
                "converted": format_money(i["converted"], currency),
            }
            for i in data["items"]
        ],
        "rules": rules,
    }


class StatementRenderer:
    """One Typst compiler, reused; compiles one statement at a time."""

    def __init__(self, template: Path = TEMPLATE) -> None:
        self._compiler = typst.Compiler(template, ignore_system_fonts=True)
        self._lock = threading.Lock()

    def pdf(self, document: dict[str, Any]) -> bytes:
        payload = json.dumps(document, sort_keys=True, ensure_ascii=False)
        created = datetime.combine(datetime.fromisoformat(document["as_of"]).date(), time(12), tzinfo=UTC)
        with self._lock:
            out = self._compiler.compile(format="pdf", sys_inputs={"statement": payload}, timestamp=created)
        assert isinstance(out, bytes), "a PDF is one file"
        return out
