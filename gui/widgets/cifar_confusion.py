"""The CIFAR-10 tab's confusion matrix: a heatmap of a run's test images by true and predicted
class, each cell's count written in it, a click on a cell emitting that cell."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import QWidget

MIN_POINT_SIZE = 6.0  # smaller counts are hard to read: hidden instead


class ConfusionMatrixView(pg.PlotWidget):
    """Rows are the true classes, columns the predicted ones, coloured by the share of the row's
    images; empty (no classes on the axes) until :meth:`show_matrix`."""

    cell_clicked = Signal(int, int)  # (true, predicted) class of the cell clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        # a short title: the plot is never narrower than its title plus the class names, and
        # a longer one pushed the last column out of a small window
        super().__init__(parent, title="Confusion matrix")
        self.class_names: list[str] | None = None  # None: no matrix shown
        self._matrix: np.ndarray | None = None
        self.count_labels: list[pg.TextItem] = []
        self.setToolTip("Click a cell to see those test images")
        self.setLabel("left", "true class")
        self.setLabel("bottom", "predicted class")
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getViewBox().invertY(True)
        self.getViewBox().setAspectLocked(True)
        self.heatmap = pg.ImageItem(axisOrder="row-major")
        self.heatmap.setColorMap(pg.colormap.get("viridis"))
        self.addItem(self.heatmap)
        self.scene().sigMouseClicked.connect(self._on_scene_clicked)
        self.getViewBox().sigResized.connect(lambda *_: self.fit_text())
        self._reset_axes()

    def show_matrix(self, confusion, class_names: list[str]) -> None:
        """Show a k×k matrix of counts (``confusion[true][predicted]``) for these classes."""
        matrix = np.asarray(confusion, dtype=np.float64)
        self.class_names = list(class_names)
        self._matrix = matrix
        k = len(class_names)
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        self.heatmap.setImage(rates, levels=(0.0, 1.0))
        self.heatmap.setRect(0, 0, k, k)
        self._remove_count_labels()
        for i in range(k):
            for j in range(k):
                color = "k" if rates[i, j] > 0.6 else "w"
                text = pg.TextItem(str(int(matrix[i, j])), color=color, anchor=(0.5, 0.5))
                text.setPos(j + 0.5, i + 0.5)
                self.addItem(text)
                self.count_labels.append(text)
        self.getAxis("left").setTicks([[(i + 0.5, name) for i, name in enumerate(class_names)]])
        self.getViewBox().setRange(xRange=(0, k), yRange=(0, k), padding=0.02)
        self.fit_text()

    def clear_matrix(self) -> None:
        """Back to empty: no cells, no classes on the axes."""
        self.class_names = None
        self._matrix = None
        self.heatmap.clear()
        self._remove_count_labels()
        self._reset_axes()

    def most_confused(self) -> tuple[int, int] | None:
        """The (true, predicted) cell off the diagonal with the most images; None when no image
        is misclassified (or no matrix is shown)."""
        if self._matrix is None:
            return None
        matrix = self._matrix
        k = len(matrix)
        worst = max(((i, j) for i in range(k) for j in range(k) if i != j),
                    key=lambda c: matrix[c], default=None)
        return worst if worst is not None and matrix[worst] > 0 else None

    def cell_pixels(self) -> float:
        """The side of one heatmap cell on screen, in pixels."""
        view_box = self.getViewBox()
        (x0, x1), (y0, y1) = view_box.viewRange()
        return min(view_box.width() / (x1 - x0), view_box.height() / (y1 - y0))

    def cell_at(self, scene_pos) -> tuple[int, int] | None:
        """(true, predicted) class of the heatmap cell under a scene position, if any."""
        if self.class_names is None:
            return None
        point = self.getViewBox().mapSceneToView(scene_pos)
        k = len(self.class_names)
        col, row = int(np.floor(point.x())), int(np.floor(point.y()))
        if 0 <= row < k and 0 <= col < k:
            return row, col
        return None

    def fit_text(self) -> None:
        """Size the counts and the column names to the cells (the view keeps its text at a
        fixed size): smaller type as cells shrink, shorter names, and no counts where even
        small type would overlap (clicking a cell still says its count)."""
        if self.class_names is None:
            return
        cell = self.cell_pixels()
        widest = max((label.toPlainText() for label in self.count_labels), key=len, default="")
        font = QFont(self.font())
        size = font.pointSizeF()
        while size > MIN_POINT_SIZE and not _fits(font, widest, 0.9 * cell):
            size = max(MIN_POINT_SIZE, size - 0.5)
            font.setPointSizeF(size)
        counts_fit = _fits(font, widest, 0.9 * cell)
        for label in self.count_labels:
            label.setFont(font)
            label.setVisible(counts_fit)
        names = self.class_names
        length = max(map(len, names))
        axis_font = self.font()
        while length > 1 and not all(_fits(axis_font, name[:length] + " ", cell)  # a gap
                                     for name in names):
            length -= 1
        self.getAxis("bottom").setTicks(
            [[(i + 0.5, name[:length]) for i, name in enumerate(names)]])

    def _reset_axes(self) -> None:
        """No classes on the axes until a matrix is shown."""
        for axis in ("left", "bottom"):
            self.getAxis(axis).setTicks([[]])
        self.getViewBox().setRange(xRange=(0, 1), yRange=(0, 1), padding=0)

    def _remove_count_labels(self) -> None:
        for label in self.count_labels:
            self.removeItem(label)
        self.count_labels = []

    def _on_scene_clicked(self, event) -> None:
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cell_clicked.emit(*cell)


def _fits(font: QFont, text: str, pixels: float) -> bool:
    """Whether ``text`` in ``font`` fits a square of ``pixels``."""
    metrics = QFontMetricsF(font)
    return metrics.horizontalAdvance(text) <= pixels and metrics.height() <= pixels
