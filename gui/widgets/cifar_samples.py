"""The CIFAR-10 tab's data browser: each class's name and image counts, then sample images."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from gui.widgets.images import rgb_pixmap

THUMBNAIL_SIZE = 64  # pixels a 32×32 sample is shown at


class ClassSampleGrid(QWidget):
    """One row per class: a label with its name and train/test counts, then its samples."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid_layout = QGridLayout(self)
        self.grid_layout.setSpacing(2)
        self.grid_layout.addWidget(QLabel("Load a dataset to browse it."), 0, 0)

    def set_samples(self, class_names: list[str], samples: list[list[np.ndarray]],
                    counts: dict[str, dict[str, int]]) -> None:
        """Show these classes (``samples``: uint8 H×W×3 images, a list per class; ``counts``:
        ``{"train": {name: n}, "test": {name: n}}``) in place of what was shown."""
        while self.grid_layout.count():
            item = self.grid_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        for row, (name, images) in enumerate(zip(class_names, samples, strict=True)):
            self.grid_layout.addWidget(
                QLabel(f"{name}\ntrain {counts['train'][name]}\ntest {counts['test'][name]}"),
                row, 0)
            for col, image in enumerate(images):
                label = QLabel()
                label.setPixmap(rgb_pixmap(image, THUMBNAIL_SIZE))
                self.grid_layout.addWidget(label, row, col + 1)
        # the rows packed at the top and the images at the left, whatever loaded before
        for row in range(self.grid_layout.rowCount()):
            self.grid_layout.setRowStretch(row, 0)
        for column in range(self.grid_layout.columnCount()):
            self.grid_layout.setColumnStretch(column, 0)
        self.grid_layout.setRowStretch(len(class_names), 1)
        self.grid_layout.setColumnStretch(max(map(len, samples), default=0) + 1, 1)
