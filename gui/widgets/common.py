"""Small widget helpers every tab uses."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QScrollArea, QWidget


def scroll_area(content: QWidget, horizontal: bool = True) -> QScrollArea:
    """``content`` in a scroll area that resizes it to fit (``horizontal=False``: no sideways
    scrolling, for a column of controls)."""
    scroll = QScrollArea()
    scroll.setWidget(content)
    scroll.setWidgetResizable(True)
    if not horizontal:
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return scroll
