"""numpy images → Qt: the one place uint8 H×W×3 (or ×4) arrays become QImages and QPixmaps."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def rgb_to_qimage(array: np.ndarray) -> QImage:
    """uint8 H×W×3 (RGB) or H×W×4 (RGBA) → a QImage that owns its pixels."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 H×W×3 or H×W×4 image, got {array.dtype} "
                         f"{'×'.join(map(str, array.shape))}")
    height, width, channels = array.shape
    fmt = QImage.Format.Format_RGB888 if channels == 3 else QImage.Format.Format_RGBA8888
    return QImage(array.data, width, height, channels * width, fmt).copy()


def rgb_pixmap(image: np.ndarray, size: int) -> QPixmap:
    """A QPixmap of a uint8 H×W×3 array scaled (nearest, keeping its shape) to fit ``size``
    pixels: small images such as CIFAR's 32×32 stay sharp."""
    return QPixmap.fromImage(rgb_to_qimage(image)).scaled(
        size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
