"""Gateway bridge: turns Stripe webhooks into ordered, deduplicated gateway events."""
