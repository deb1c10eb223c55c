"""Start-up help for processes that import torch."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    """Pause the cyclic garbage collector while big packages import, then freeze what they made.

    Importing torch creates about a million objects, and the collections they trigger cost ~10%
    of the import (0.2-0.3 s on a 2-core VM); frozen, those objects are never walked again (all
    collections of a 300-photo classify run or a CIFAR training take a fraction of a second
    then). Frozen objects that later become cyclic garbage are never freed, so use it once,
    early in a process, around imports.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
