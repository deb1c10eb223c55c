"""engine/devices.py helpers that the CLI tests do not cover."""

from __future__ import annotations

import sys

from engine import devices


def test_allocator_tuning_is_applied_once_on_linux_and_skipped_elsewhere(monkeypatch):
    if sys.platform.startswith("linux"):
        assert devices.keep_freed_memory_for_reuse() is True
        assert devices.keep_freed_memory_for_reuse() is True  # idempotent
    monkeypatch.setattr(devices, "_ALLOCATOR_TUNED", False)
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert devices.keep_freed_memory_for_reuse() is False
