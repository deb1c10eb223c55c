"""Small widget helpers every tab uses."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QScrollArea, QSpinBox, QWidget

SettingControl = QComboBox | QCheckBox | QSpinBox | QDoubleSpinBox


def scroll_area(content: QWidget, horizontal: bool = True) -> QScrollArea:
    """``content`` in a scroll area that resizes it to fit (``horizontal=False``: no sideways
    scrolling, for a column of controls)."""
    scroll = QScrollArea()
    scroll.setWidget(content)
    scroll.setWidgetResizable(True)
    if not horizontal:
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return scroll


def control_value(widget: SettingControl) -> Any:
    """What a settings control holds: a combo box's item data, a check box's state, a number."""
    if isinstance(widget, QComboBox):
        return widget.currentData()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    return widget.value()


def set_control_value(widget: SettingControl, value: Any) -> bool:
    """Show a stored ``value`` (settings files hold strings) in ``widget``. False, and the
    control left as it was, for a value it cannot hold (stale or hand-edited settings)."""
    try:
        if isinstance(widget, QComboBox):
            index = widget.findData(str(value))
            if index < 0:
                return False
            widget.setCurrentIndex(index)
        elif isinstance(widget, QCheckBox):
            if str(value).lower() not in ("true", "false", "1", "0"):
                return False
            widget.setChecked(str(value).lower() in ("true", "1"))
        else:
            number = (int if isinstance(widget, QSpinBox) else float)(value)
            # out of the control's range (or NaN): the control would silently clamp it
            if not widget.minimum() <= number <= widget.maximum():
                return False
            widget.setValue(number)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
