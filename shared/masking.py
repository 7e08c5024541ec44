"""Masking of card-shaped numbers, wherever text that came from outside is stored, logged or shown."""

from __future__ import annotations

import re

_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mask_card_numbers(text: str) -> tuple[str, int]:
    """Mask anything that looks like a full card number (13-19 digits passing Luhn); returns (text, count).

    Stripe never sends a full card number in a webhook, and no other system should put one in a message;
    this is a guard so that one never reaches our database, logs or an on-call engineer's screen.
    """
    count = 0

    def mask(match: re.Match[str]) -> str:
        nonlocal count
        digits = re.sub(r"[ -]", "", match.group(0))
        if not _luhn_valid(digits):
            return match.group(0)
        count += 1
        return "*" * (len(digits) - 4) + digits[-4:]

    return _DIGIT_RUN.sub(mask, text), count
