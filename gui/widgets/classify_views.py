"""Widgets for the Classify tab: Grad-CAM colouring, image panes, top-k bars."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)


def heatmap_rgba(cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Float HxW in [0, 1] → uint8 HxWx4, a blue→green→yellow→red ramp; weak areas see-through."""
    v = np.clip(cam, 0.0, 1.0).astype(np.float32)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    a = alpha * np.clip(v * 1.5, 0.15, 1.0)
    return (np.stack([r, g, b, a], axis=-1) * 255).astype(np.uint8)


class ClassifyImagePane(QLabel):
    """Shows an image scaled to fit, with an optional heatmap drawn over a box inside it;
    ``placeholder`` while it has none (blank by default: the tab captions each pane)."""

    def __init__(self, placeholder: str = "") -> None:
        super().__init__()
        self.placeholder = placeholder
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(150, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._image: QImage | None = None
        self._overlay: QImage | None = None
        self._box: QRectF | None = None  # in the image's pixels
        self.setText(placeholder)

    def set_image(self, image: QImage | None, box: QRectF | None = None) -> None:
        self._image, self._box, self._overlay = image, box, None
        self._render()

    def set_overlay(self, overlay: QImage | None) -> None:
        self._overlay = overlay
        self._render()

    def has_overlay(self) -> bool:
        return self._overlay is not None

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._render()

    def _render(self) -> None:
        if self._image is None or self._image.isNull():
            self.setPixmap(QPixmap())
            self.setText(self.placeholder)
            return
        composed = QPixmap.fromImage(self._image)
        if self._overlay is not None or self._box is not None:
            painter = QPainter(composed)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            target = self._box or QRectF(0, 0, self._image.width(), self._image.height())
            if self._overlay is not None:
                painter.drawImage(target, self._overlay)
            if self._box is not None:
                pen = QPen(QColor(255, 255, 255, 220))
                pen.setWidthF(max(1.0, self._image.width() / 300))
                pen.setStyle(Qt.PenStyle.DashLine)
                painter.setPen(pen)
                painter.drawRect(self._box)
            painter.end()
        size = self.contentsRect().size()
        self.setPixmap(composed.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation))


class ClassifyTopBars(QWidget):
    """Top-k labels with probability bars; clicking a row asks for that class's Grad-CAM."""

    class_clicked = Signal(int)

    def __init__(self, rows: int = 5) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.buttons: list[QPushButton] = []
        self.bars: list[QProgressBar] = []
        self._indices: list[int] = []
        for _ in range(rows):
            row = QHBoxLayout()
            button = QPushButton()
            button.setFlat(True)
            button.setCheckable(True)
            button.setMinimumWidth(220)
            button.setStyleSheet("text-align: left; padding: 2px 6px;")
            button.setToolTip("Show the Grad-CAM heatmap for this class")
            button.clicked.connect(lambda _=False, b=button: self._clicked(b))
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            row.addWidget(button, 2)
            row.addWidget(bar, 3)
            layout.addLayout(row)
            self.buttons.append(button)
            self.bars.append(bar)
        self.set_predictions([])

    def set_predictions(self, top: list[dict], selected: int | None = None) -> None:
        self._indices = [int(t["index"]) for t in top]
        for i, (button, bar) in enumerate(zip(self.buttons, self.bars, strict=True)):
            visible = i < len(top)
            button.setVisible(visible)
            bar.setVisible(visible)
            if visible:
                button.setText(f"{top[i]['label']}")
                bar.setValue(round(top[i]["prob"] * 1000))
                bar.setFormat(f"{top[i]['prob']:.1%}")
                button.setChecked(top[i]["index"] == selected)

    def select(self, class_index: int | None) -> None:
        for button, index in zip(self.buttons, self._indices, strict=False):
            button.setChecked(index == class_index)

    def labels(self) -> list[str]:
        return [b.text() for b in self.buttons if b.isVisible()]

    def _clicked(self, button: QPushButton) -> None:
        index = self.buttons.index(button)
        if index < len(self._indices):
            self.select(self._indices[index])
            self.class_clicked.emit(self._indices[index])
