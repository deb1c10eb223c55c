"""The CIFAR-10 tab's confusion matrix: a heatmap of a run's test images by true and predicted
class, each cell's count written in it, a click on a cell emitting that cell."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFont, QFontMetricsF, QPainter
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
        # every cell's count in one item, there from the start: one pg.TextItem per cell took
        # seconds to add and to remove for 100 classes (10,000 cells), freezing the tab
        self.counts = _CountsItem()
        self.addItem(self.counts, ignoreBounds=True)
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
        self.counts.set_counts(matrix, dark=rates > 0.6)  # black on the light cells
        self.getAxis("left").setTicks([[(i + 0.5, name) for i, name in enumerate(class_names)]])
        self.getViewBox().setRange(xRange=(0, k), yRange=(0, k), padding=0.02)
        self.fit_text()

    def clear_matrix(self) -> None:
        """Back to empty: no cells, no classes on the axes."""
        self.class_names = None
        self._matrix = None
        self.heatmap.clear()
        self.counts.set_counts(np.zeros((0, 0)), dark=np.zeros((0, 0), dtype=bool))
        self._reset_axes()

    @property
    def count_labels(self) -> list[CountLabel]:
        """Each cell's count as written in it, row by row; empty when no matrix is shown."""
        k = len(self.counts.texts)
        return [CountLabel(self.counts, i, j) for i in range(k) for j in range(k)]

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
        widest = max((text for row in self.counts.texts for text in row), key=len, default="")
        font = QFont(self.font())
        size = font.pointSizeF()
        while size > MIN_POINT_SIZE and not _fits(font, widest, 0.9 * cell):
            size = max(MIN_POINT_SIZE, size - 0.5)
            font.setPointSizeF(size)
        self.counts.set_font(font)
        self.counts.setVisible(_fits(font, widest, 0.9 * cell))
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

    def _on_scene_clicked(self, event) -> None:
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cell_clicked.emit(*cell)


class _CountsItem(pg.GraphicsObject):
    """The counts of a k×k matrix, each centred in its unit cell of the view, in type of a
    fixed size on screen (as pg.TextItem draws it), black or white for the cell's shade."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[list[str]] = []  # texts[true][predicted]
        self._dark = np.zeros((0, 0), dtype=bool)  # cells written in black
        self.font = QFont()
        self._pens = {True: pg.mkColor("k"), False: pg.mkColor("w")}
        self.setZValue(1)  # over the heatmap

    def set_counts(self, matrix: np.ndarray, dark: np.ndarray) -> None:
        self.prepareGeometryChange()
        self.texts = [[str(int(count)) for count in row] for row in matrix]
        self._dark = np.asarray(dark, dtype=bool)
        self.update()

    def set_font(self, font: QFont) -> None:
        if font != self.font:
            self.font = QFont(font)
            self.update()

    def boundingRect(self) -> QRectF:
        k = len(self.texts)
        return QRectF(0, 0, k, k)

    def paint(self, painter: QPainter, *args) -> None:
        k = len(self.texts)
        if not k:
            return
        to_screen = painter.transform()  # view coordinates to pixels
        origin = to_screen.map(QPointF(0, 0))
        step_x = to_screen.map(QPointF(1, 0)) - origin  # one column across
        step_y = to_screen.map(QPointF(0, 1)) - origin  # one row down
        width, height = abs(step_x.x() + step_y.x()), abs(step_x.y() + step_y.y())
        painter.save()
        painter.resetTransform()  # type in pixels, not stretched with the cells
        painter.setFont(self.font)
        centre = Qt.AlignmentFlag.AlignCenter
        for i, (row, dark_row) in enumerate(zip(self.texts, self._dark, strict=True)):
            for j, (text, dark) in enumerate(zip(row, dark_row, strict=True)):
                mid = origin + step_x * (j + 0.5) + step_y * (i + 0.5)
                painter.setPen(self._pens[bool(dark)])
                painter.drawText(QRectF(mid.x() - width / 2, mid.y() - height / 2, width, height),
                                 centre, text)
        painter.restore()


class CountLabel:
    """One cell's count as the view writes it: its text, whether it shows, its font."""

    def __init__(self, counts: _CountsItem, row: int, col: int) -> None:
        self._counts, self.row, self.col = counts, row, col

    def toPlainText(self) -> str:
        return self._counts.texts[self.row][self.col]

    def isVisible(self) -> bool:
        return self._counts.isVisible()

    def font(self) -> QFont:
        return QFont(self._counts.font)


def _fits(font: QFont, text: str, pixels: float) -> bool:
    """Whether ``text`` in ``font`` fits a square of ``pixels``."""
    metrics = QFontMetricsF(font)
    return metrics.horizontalAdvance(text) <= pixels and metrics.height() <= pixels
