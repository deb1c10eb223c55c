"""Where TorchDesk keeps what it can rebuild: ``$TORCHDESK_CACHE_DIR`` or the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TORCHDESK_CACHE_DIR`` if set, else the platform's user cache folder for TorchDesk."""
    env = os.environ.get("TORCHDESK_CACHE_DIR")
    if env:
        return Path(env).expanduser().absolute()
    try:
        import platformdirs
    except ImportError:  # the engine run from a checkout on a server without it
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "torchdesk"
    return Path(platformdirs.user_cache_dir("torchdesk", appauthor=False))
