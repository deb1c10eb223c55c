"""The contract between engine jobs and whoever runs them (CLI, GUI bridge, tests).

A job is a plain function ``job(config, ctx) -> dict``. It reads ``ctx.device``, calls
``ctx.report({...})`` with plain numbers as it goes, checks ``ctx.stopped()`` between steps and
returns a plain ``dict`` of results (never live tensors). Problems the user can fix (bad input,
missing weights, divergence) are raised as :class:`JobError` with a message meant for people.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

ProgressCallback = Callable[[dict[str, Any]], None]


class JobError(Exception):
    """A failure the user can understand and fix; its message is shown as-is."""


class JobStopped(Exception):
    """Raised inside a job (via :meth:`JobContext.check`) when a stop was requested."""


class JobContext:
    """What a running job may know about its runner: device, stop flag, progress sink.

    ``report`` is cheap (a function call); runners that feed a GUI buffer the updates and draw at
    their own pace, so jobs may report every step. ``throttled_report`` is for updates that are
    expensive to build (images, matrices): it drops calls closer together than ``min_interval``.
    """

    def __init__(
        self,
        device: str = "cpu",
        progress: ProgressCallback | None = None,
        stop_event: threading.Event | None = None,
        min_interval: float = 1 / 30,
    ) -> None:
        self.device = device
        self.stop_event = stop_event or threading.Event()
        self._progress = progress
        self._min_interval = min_interval
        self._last_throttled = 0.0

    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        self.stop_event.set()

    def check(self) -> None:
        """Raise :class:`JobStopped` if a stop was requested."""
        if self.stop_event.is_set():
            raise JobStopped()

    def report(self, update: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress(update)

    def throttled_report(self, update: dict[str, Any], force: bool = False) -> bool:
        """Report unless the last throttled report was under ``min_interval`` ago."""
        now = time.monotonic()
        if not force and now - self._last_throttled < self._min_interval:
            return False
        self._last_throttled = now
        self.report(update)
        return True
