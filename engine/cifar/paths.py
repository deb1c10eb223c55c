"""Path helpers shared by the CIFAR engine and its front ends (no heavy imports)."""

from __future__ import annotations

import os
from pathlib import Path


def same_path(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether two paths name the same place (``~`` expanded, links and ``..`` resolved)."""
    return Path(path).expanduser().resolve() == Path(other).expanduser().resolve()
