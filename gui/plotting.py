"""Helpers that keep live plots cheap however long a run gets.

Histories live in growable numpy arrays (no list → array conversion of the whole history on
every redraw), curves downsample to the pixels they have, and long optimizer paths are thinned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSizeF, Qt
from PySide6.QtWidgets import QGraphicsWidget

MIN_DATA_AREA = (80, 60)  # px: the least a plot's view box gets, however small the window


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


def keep_text_whole(view: pg.PlotWidget) -> None:
    """Keep ``view`` at least as large as its title and axis labels need (see
    :func:`text_min_size`), also when a range change adds a scale to a label."""
    plot = view.getPlotItem()

    def fit(*_: Any) -> None:
        width, height = text_min_size(plot)
        if (width, height) != (view.minimumWidth(), view.minimumHeight()):
            view.setMinimumSize(width, height)

    fit()
    plot.vb.sigResized.connect(fit)  # a tick label's width moves the axis and the view box
    plot.vb.sigRangeChanged.connect(fit)  # an axis label gains or loses "(x1e+06)"


def text_min_size(plot: pg.PlotItem) -> tuple[int, int]:
    """The least (width, height) at which a plot draws its title, its axes and their labels
    whole, around a data area of at least MIN_DATA_AREA.

    A plot item never shrinks below its layout's minimum (the title's and the axes' text): in a
    smaller view its right and bottom parts are cut off. Axis labels are not in that minimum:
    each is drawn along its axis, which must be at least as long as the label.
    """
    least = plot.effectiveSizeHint(Qt.SizeHint.MinimumSize)
    left, bottom = plot.getAxis("left"), plot.getAxis("bottom")

    def label_length(axis: pg.AxisItem) -> float:
        return axis.label.boundingRect().width() if axis.isVisible() and \
            axis.label.isVisible() else 0.0

    def least_size(item: QGraphicsWidget) -> QSizeF:
        return item.effectiveSizeHint(Qt.SizeHint.MinimumSize)

    # the least the layout gives the data area's column (title, view box, bottom axis) and
    # row (left axis, view box)
    column = max(least_size(item).width() for item in (plot.titleLabel, plot.vb, bottom))
    row = max(least_size(item).height() for item in (plot.vb, left))
    width = least.width() + max(0.0, label_length(bottom) - column, MIN_DATA_AREA[0] - column)
    height = least.height() + max(0.0, label_length(left) - row, MIN_DATA_AREA[1] - row)
    return math.ceil(width) + 1, math.ceil(height) + 1
