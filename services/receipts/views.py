"""Receipts' response shapes: a stored document as PDF bytes with its hashes, or as the print view."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse, Response

from services.receipts.domain import Document
from services.receipts.rendering import print_view
from shared.money import money_json


def pdf(row: dict[str, Any], download: bool) -> Response:
    """The stored PDF, inline or as an attachment, with its hashes and revision in the headers."""
    number = str(row["number"])
    disposition = "attachment" if download else "inline"
    return Response(
        bytes(row["pdf"]),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'{disposition}; filename="{number}.pdf"',
            "ETag": f'"{row["sha256"]}"',
            "X-Document-Hash": str(row["document_hash"]),
            "X-Document-Revision": str(row["revision"]),
        },
    )


def receipt_print_view(row: dict[str, Any], receipt_number: str) -> HTMLResponse:
    """The receipt as an HTML page to print, linking to its PDF download."""
    document = Document.from_json(row["content"])
    return HTMLResponse(
        print_view(document, f"{receipt_number}.pdf?download=true"),
        headers={"X-Document-Hash": document.document_hash},
    )


def account_receipt_row(row: dict[str, Any]) -> dict[str, Any]:
    """One of the account's receipts, with where its PDF is (the caller's own account path)."""
    return {
        "receipt_number": row["receipt_number"],
        "amount": money_json(row["amount"], row["currency"]),
        "posted_at": row["posted_at"].isoformat(),
        "version": row["version"],
    }
