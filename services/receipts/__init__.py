"""Receipts: keeps what a receipt or credit-note document needs, from events, and renders the documents."""
