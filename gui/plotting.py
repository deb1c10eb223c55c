"""Helpers that keep live plots cheap however long a run gets.

Histories live in growable numpy arrays (no list → array conversion of the whole history on
every redraw), curves downsample to the pixels they have, and long optimizer paths are thinned.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class GrowingArray:
    """A 1-D float64 array with amortised O(1) appends; ``values`` is a view of the filled part."""

    def __init__(self, capacity: int = 1024) -> None:
        self._data = np.empty(capacity, dtype=np.float64)
        self._size = 0

    def _reserve(self, size: int) -> None:
        if size > len(self._data):
            grown = np.empty(max(size, 2 * len(self._data)), dtype=np.float64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown

    def append(self, value: float) -> None:
        self._reserve(self._size + 1)
        self._data[self._size] = value
        self._size += 1

    def extend(self, values: Iterable[float]) -> None:
        chunk = np.asarray(values if isinstance(values, np.ndarray) else list(values),
                           dtype=np.float64)
        self._reserve(self._size + len(chunk))
        self._data[self._size : self._size + len(chunk)] = chunk
        self._size += len(chunk)

    def clear(self) -> None:
        self._size = 0

    @property
    def values(self) -> np.ndarray:
        return self._data[: self._size]

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        return self.values[index]


def thin_path(
    x: np.ndarray, y: np.ndarray, max_points: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a path, dense at the start (where optimizers take big steps)
    and sparse later, always keeping the first and the last point."""
    n = len(x)
    if n <= max_points:
        return x, y
    index = np.unique(np.geomspace(1, n, max_points).astype(np.int64) - 1)
    index[-1] = n - 1
    return x[index], y[index]


def make_fast(curve, all_finite: bool = True) -> None:
    """Let a pyqtgraph PlotDataItem draw only what fits its pixels; ``all_finite``: its data
    holds no NaN or inf, so pyqtgraph may skip looking for them (a curve whose data may hold
    them must say False: pyqtgraph then leaves them out; unchecked, its docs warn, the curve
    may not be drawn at all)."""
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    curve.setSkipFiniteCheck(all_finite)
