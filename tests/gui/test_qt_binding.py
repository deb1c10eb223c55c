"""Guards against Qt-binding bugs that would crash the app during long runs."""

import gc
import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    ping = Signal()
    batch = Signal(list)


def test_signal_emit_keeps_bool_and_none_references_balanced(qapp):
    # PySide6 6.12.0 dropped a reference to True on every emit(), aborting the interpreter
    # after a few hundred signals; pyproject.toml excludes it.
    emitter = _Emitter()
    received = []
    emitter.ping.connect(lambda: None)
    emitter.batch.connect(received.append)
    # a garbage collection in between could free other tests' leftovers and move the counts
    gc.collect()
    gc.disable()
    try:
        before = sys.getrefcount(True), sys.getrefcount(None)
        for _ in range(1000):
            emitter.ping.emit()
            emitter.batch.emit([{"ok": True, "val_loss": None}])
        received.clear()
        after = sys.getrefcount(True), sys.getrefcount(None)
    finally:
        gc.enable()
    assert abs(after[0] - before[0]) <= 100
    assert abs(after[1] - before[1]) <= 100
