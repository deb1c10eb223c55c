"""Small helpers for the words the window shows."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '0 classes'."""
    suffix = "es" if noun.endswith("s") else "s"
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{suffix}"
