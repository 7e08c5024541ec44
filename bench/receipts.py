"""Receipt rendering throughput and memory: documents rendered per second, and memory per render.

Renders distinct receipts and credit notes (every one with its own numbers and amounts, so nothing is
served from Typst's cache) the way the consumer does: build the `Document`, seal its hash, compile the PDF.
Prints figures; asserts nothing. Run: `.venv/bin/python scripts/bench_receipts.py [count]`.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.receipts.domain import (
    Document,
    credit_note_document,
    receipt_document,
    state_when_posted,
)
from services.receipts.rendering import PdfRenderer, print_view
from services.receipts.samples import STYLE, sample_credit_note, sample_payment, usd


def receipt(n: int) -> Document:
    amount = usd(f"{100 + n % 900}.{n % 100:02d}")
    posted = sample_payment(receipt_number=f"R-{10_000 + n}", payment_id=f"PAY-2025-{n:06d}", amount=amount)
    return receipt_document(posted, state_when_posted(posted, None), [], STYLE)


def credit_note(n: int) -> Document:
    issued = sample_credit_note(credit_note_number=f"CN-{50_000 + n}", amount=usd(f"{1 + n % 50}.{n % 100:02d}"))
    return credit_note_document(issued, [], STYLE)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(count: int) -> None:
    renderer = PdfRenderer()
    renderer.pdf(receipt(-1))  # load fonts and template once, as a running service has
    gc.collect()
    rss_before = rss_mib()

    for name, build in (("receipt", receipt), ("credit note", credit_note)):
        sizes = 0
        started = time.perf_counter()
        for n in range(count):
            sizes += len(renderer.pdf(build(n)))
        elapsed = time.perf_counter() - started
        print(
            f"{name:12s} PDF : {count / elapsed:8.1f} documents/s  "
            f"({elapsed / count * 1000:.2f} ms each, {sizes / count / 1024:.1f} KiB each)"
        )

    started = time.perf_counter()
    for n in range(count):
        print_view(receipt(n), "x.pdf")
    elapsed = time.perf_counter() - started
    print(f"receipt      HTML: {count / elapsed:8.1f} documents/s  ({elapsed / count * 1000:.2f} ms each)")

    # Python-side allocations of one render (the Document, its JSON and the PDF bytes)...
    tracemalloc.start()
    renderer.pdf(receipt(count + 1))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # ...and what the process as a whole (Typst's Rust heap included) grew by over all renders.
    grown = rss_mib() - rss_before
    print(f"memory per render: peak {peak / 1024:.0f} KiB of Python allocations")
    print(
        f"process max RSS {rss_mib():.0f} MiB; grew {grown:.1f} MiB over {2 * count} renders "
        f"({grown * 1024 / (2 * count):.1f} KiB per render: Typst's caches; it levels off: compare counts)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
