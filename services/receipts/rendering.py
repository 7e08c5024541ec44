"""Lays a `Document` out as PDF (Typst) or as an HTML print view.

Typst is given only the fonts embedded in the `typst` package (system fonts ignored) and a creation
timestamp taken from the document's data (`as_of`), so the same document gives the same bytes on every
machine; the wall-clock render time is kept beside the file, never inside it.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC
from html import escape
from pathlib import Path

import typst

from services.receipts.domain import Document

TEMPLATE = Path(__file__).with_name("templates") / "document.typ"


class PdfRenderer:
    """One Typst compiler, reused so fonts and the template are loaded once; compiles one document at a time."""

    def __init__(self, template: Path = TEMPLATE) -> None:
        self._compiler = typst.Compiler(template, ignore_system_fonts=True)
        self._lock = threading.Lock()

    def pdf(self, document: Document) -> bytes:
        payload = json.dumps(document.to_json(), sort_keys=True, ensure_ascii=False)
        created = document.as_of.astimezone(UTC).replace(microsecond=0)  # PDF dates have whole seconds
        with self._lock:
            out = self._compiler.compile(format="pdf", sys_inputs={"document": payload}, timestamp=created)
        assert isinstance(out, bytes), "a PDF is one file"
        return out


_PRINT_CSS = """
@page { size: A4; margin: 18mm 20mm; }
* { box-sizing: border-box; }
body { font-family: "Libertinus Serif", Georgia, "Times New Roman", serif; color: #1f2933; margin: 0 auto;
       max-width: 190mm; padding: 16px; font-size: 11pt; }
header { display: flex; justify-content: space-between; border-bottom: 2px solid #1f2933; padding-bottom: 8px; }
header .utility h1 { font-size: 18pt; margin: 0 0 2px; }
header .utility p, footer { color: #52606d; font-size: 9pt; margin: 0; }
header .doc { text-align: right; }
header .doc h2 { font-size: 15pt; margin: 0; }
header .doc .number { font-size: 13pt; }
.badge { display: inline-block; border: 1px solid #52606d; border-radius: 3px; padding: 1px 6px; font-size: 9pt; }
.void { background: #c00; color: #fff; border-color: #c00; font-weight: bold; font-size: 12pt; }
.watermark { position: fixed; top: 40%; left: 0; right: 0; text-align: center; font-size: 120pt; font-weight: bold;
             color: rgba(204, 0, 0, 0.15); transform: rotate(-35deg); pointer-events: none; }
h3 { font-size: 11.5pt; margin: 14px 0 2px; }
table { width: 100%; border-collapse: collapse; page-break-inside: avoid; }
th, td { text-align: left; padding: 4px; border-bottom: 1px solid #cbd2d9; vertical-align: top; }
th { width: 38%; color: #52606d; font-weight: normal; }
footer { margin-top: 18px; border-top: 1px solid #cbd2d9; padding-top: 6px; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; word-break: break-all; }
.actions { margin: 12px 0; }
@media print {
  .actions { display: none; }
  body { padding: 0; max-width: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def print_view(document: Document, pdf_url: str) -> str:
    """The document as a self-contained HTML page that prints on one A4 sheet (no scripts but `print()`)."""
    e = escape
    badge = (
        '<span class="badge void">VOID</span>' if document.void else f'<span class="badge">{e(document.status)}</span>'
    )
    sections = "\n".join(
        f"<section><h3>{e(s.title)}</h3><table>"
        + "".join(f"<tr><th>{e(ln.label)}</th><td>{e(ln.value)}</td></tr>" for ln in s.lines)
        + "</table></section>"
        for s in document.sections
    )
    head = document.letterhead
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(document.title)} {e(document.number)}</title>
<style>{_PRINT_CSS}</style>
</head>
<body>
{'<div class="watermark" aria-hidden="true">VOID</div>' if document.void else ""}
<div class="actions">
  <button type="button" onclick="window.print()">Print</button>
  <a href="{e(pdf_url)}" download>Download PDF</a>
</div>
<header>
  <div class="utility"><h1>{e(head.name)}</h1><p>{e(head.address)}</p><p>{e(head.contact)}</p></div>
  <div class="doc"><h2>{e(document.title)}</h2><div class="number">{e(document.number)}</div>{badge}</div>
</header>
{sections}
<footer>
  <p>{e(document.stamp)}</p>
  <p>Document hash (SHA-256): <code>{e(document.document_hash)}</code></p>
</footer>
</body>
</html>
"""
