"""Run one engine job at a time on a worker QThread and deliver its news to the GUI thread.

The worker never touches widgets. Progress updates are appended to a locked list (cheap enough for
jobs that report every step) and a GUI-thread timer hands them over in batches at most ~30 times a
second, so a fast job cannot flood the event loop and plots redraw at a steady pace.

While the ``progress`` handlers run, the worker pauses at its next report (at most
``FRAME_YIELD_S``): a Python-heavy job would otherwise take the GIL back after every Qt call the
GUI thread makes, and a frame of a few hundred such calls would stall for a tenth of a second.
Handlers that draw with Python (pyqtgraph) should therefore ``repaint()`` their plots right there,
inside that quiet window, rather than leave the painting for later. The delivery interval adapts
so that handling batches takes at most ``GUI_SHARE`` of the time: a costly redraw means fewer
frames, never a starved worker or a frozen window.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from engine.jobs import JobContext, JobError, JobStopped

log = logging.getLogger(__name__)

Job = Callable[[Any, JobContext], Any]

DELIVERY_INTERVAL_MS = 33
MAX_DELIVERY_INTERVAL_MS = 250
GUI_SHARE = 0.25
FRAME_YIELD_S = 0.05


class _JobThread(QThread):
    """Calls the job in ``run``; the outcome travels back through a queued signal."""

    outcome = Signal(object, object, object)  # (this thread, result or None, error or None)

    def __init__(self, job: Job, config: Any, ctx: JobContext) -> None:
        super().__init__()
        self._job = job
        self._config = config
        self._ctx = ctx

    def run(self) -> None:
        try:
            result = self._job(self._config, self._ctx)
        except JobStopped:
            self.outcome.emit(self, {"status": "stopped"}, None)
        except JobError as exc:
            self.outcome.emit(self, None, str(exc))
        except MemoryError:
            self.outcome.emit(self, None, "Out of memory. Try a smaller batch, model or data set.")
        except BaseException as exc:  # any bug (a SystemExit too) must reach the user, and
            # the runner must hear that the job ended
            log.error("job failed:\n%s", traceback.format_exc())
            self.outcome.emit(self, None, f"{type(exc).__name__}: {exc}")
        else:
            self.outcome.emit(self, result, None)


class JobRunner(QObject):
    """Runs engine jobs off the GUI thread, one at a time.

    Signals: ``started()``, ``progress(list)`` (batched updates), ``returned(object)``,
    ``errored(str)``, ``finished()``. Every batch of progress is delivered before ``returned`` or
    ``errored``; ``finished`` always comes last.
    """

    started = Signal()
    progress = Signal(object)  # a list, as is: Qt's conversion would drop non-UTF-8 names
    returned = Signal(object)
    errored = Signal(str)
    finished = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: _JobThread | None = None
        self._ctx: JobContext | None = None
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._gui_idle = threading.Event()
        self._gui_idle.set()
        self._timer = QTimer(self)
        self._timer.setInterval(DELIVERY_INTERVAL_MS)
        self._timer.timeout.connect(self._deliver)

    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, job: Job, config: Any = None, device: str = "cpu") -> None:
        if self._thread is not None:
            raise RuntimeError("a job is already running; stop it first")
        with self._lock:
            self._pending = []
        self._ctx = JobContext(device=device, progress=self._collect)
        self._thread = _JobThread(job, config, self._ctx)
        self._thread.outcome.connect(self._on_outcome)
        self._timer.setInterval(DELIVERY_INTERVAL_MS)
        self._timer.start()
        self.started.emit()
        self._thread.start()

    def stop(self) -> None:
        """Ask the job to stop; it ends at its next check (within about a second)."""
        if self._ctx is not None:
            self._ctx.request_stop()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop and join the worker (window closing). True when the thread has ended."""
        thread = self._thread
        if thread is None:
            return True
        self.stop()
        ended = thread.wait(timeout_ms)
        if ended:
            self._finish(None, None, emit=False)
        return ended

    def _collect(self, update: dict) -> None:
        with self._lock:
            self._pending.append(update)
        if not self._gui_idle.is_set():
            self._gui_idle.wait(FRAME_YIELD_S)

    def _take_pending(self) -> list[dict]:
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def _deliver(self) -> None:
        batch = self._take_pending()
        if batch:
            self._gui_idle.clear()
            started = time.perf_counter()
            try:
                self.progress.emit(batch)
            finally:
                self._gui_idle.set()
            cost_ms = (time.perf_counter() - started) * 1000
            self._timer.setInterval(int(min(MAX_DELIVERY_INTERVAL_MS,
                                            max(DELIVERY_INTERVAL_MS, cost_ms / GUI_SHARE))))

    def _on_outcome(self, thread: _JobThread, result: Any, error: str | None) -> None:
        # The outcome names its thread: one queued before a shutdown() must not end a later job
        if thread is not self._thread:
            return
        thread.wait()
        self._finish(result, error, emit=True)

    def _finish(self, result: Any, error: str | None, emit: bool) -> None:
        self._timer.stop()
        thread, self._thread, self._ctx = self._thread, None, None
        if thread is not None:
            thread.deleteLater()
        if not emit:
            self._take_pending()
            return
        self._deliver()
        if error is not None:
            self.errored.emit(error)
        else:
            self.returned.emit(result)
        self.finished.emit()
