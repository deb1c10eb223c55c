"""What the engine's downloads (CIFAR-10, Classify's weights) share."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable

#: MB as torchvision's file sizes and the model list count them: 1024 × 1024 bytes.
MEGABYTE = 1024 * 1024


def megabytes(n_bytes: float) -> str:
    """``n_bytes`` in MB with one decimal: "97.8 MB"."""
    return f"{n_bytes / MEGABYTE:.1f} MB"


@contextlib.contextmanager
def cancel_blocked_reads(response, stopped: Callable[[], bool]):
    """While the body downloads, a helper thread shuts the connection down once ``stopped()``
    turns true, so that Cancel ends a read that waits on a stalled server (until the read's
    timeout otherwise). The caller checks ``stopped()`` once the read has returned."""
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.2):
            if stopped():
                shut_down(response)
                return

    watcher = threading.Thread(target=watch, name="download-cancel", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def shut_down(response) -> None:
    """End a socket response's connection from another thread (its blocked read returns)."""
    try:
        duplicate = os.dup(response.fileno())  # shutdown acts on the connection, not the fd
    except (OSError, ValueError, AttributeError):
        return  # already closed
    try:
        conn = socket.socket(fileno=duplicate)
    except OSError:  # not a socket (a file:// URL)
        os.close(duplicate)
        return
    with conn:  # closes the duplicate
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:  # no longer connected
            pass
