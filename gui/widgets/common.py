"""Small widget helpers every tab uses."""

from __future__ import annotations

import math
import re
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QScrollArea,
    QSpinBox,
    QWidget,
)

SettingControl = QComboBox | QCheckBox | QSpinBox | QDoubleSpinBox

# What can still grow into a number while the user types: "", "-", "1.", "1e", "1e-"…
# (a decimal comma too, as many keyboards type it)
_NUMBER_SO_FAR = re.compile(r"[+-]?(?:(?:\d+[.,]?\d*|[.,]\d*)(?:[eE][+-]?\d*)?)?")
_STEP_MANTISSAS = (1, 2, 5)


class ScientificSpinBox(QDoubleSpinBox):
    """A number box for values spanning many decades (learning rates, scales).

    Takes ``1e-3``, ``1E-2`` or ``0.001``, shows the shortest text that reads back as the same
    number (``1e-05``, ``0.001``) and keeps full precision. The arrows step along
    1, 2, 5, 10, 20, 50…, the same number of steps per decade at any size.
    """

    def __init__(self, minimum: float, maximum: float, value: float,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # QDoubleSpinBox rounds every value to `decimals` places; the most it allows means
        # no rounding, and textFromValue decides what is shown.
        self.setDecimals(323)
        # the value changes on Enter or leaving the box, not with each key: "1e-10" typed
        # would otherwise pass through 0.1 ("1e-1"), and a text out of range keeps the old value
        self.setKeyboardTracking(False)
        self.setRange(minimum, maximum)
        self.setValue(value)

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        stripped = text.strip()
        if not _NUMBER_SO_FAR.fullmatch(stripped) or \
                (stripped.startswith("-") and self.minimum() >= 0):
            return QValidator.State.Invalid, text, pos
        try:
            number = _number(stripped)
        except ValueError:  # "", "1e-": not a number yet
            return QValidator.State.Intermediate, text, pos
        # out of range may still be on its way ("0.0" towards 0.001)
        acceptable = self.minimum() <= number <= self.maximum()
        return (QValidator.State.Acceptable if acceptable else QValidator.State.Intermediate,
                text, pos)

    def fixup(self, text: str) -> str:
        # QDoubleSpinBox's drops the locale's group separator: in German that is ".",
        # and "0.5" would become "05"
        return text

    def valueFromText(self, text: str) -> float:
        try:
            return _number(text.strip())
        except ValueError:
            return self.value()

    def textFromValue(self, value: float) -> str:
        text = repr(float(value))  # the shortest text that reads back as the same float
        return text[:-2] if text.endswith(".0") else text

    def _typed_not_entered(self) -> bool:
        """Whether the box holds a number typed but not yet entered (keyboard tracking is off)."""
        text = self.lineEdit().text()
        return text != self.textFromValue(self.value()) and \
            self.validate(text, 0)[0] == QValidator.State.Acceptable

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:
        if not self._typed_not_entered():
            return super().stepEnabled()
        typed = self.valueFromText(self.lineEdit().text())  # the arrows step from it
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if typed < self.maximum():
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if typed > self.minimum():
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags

    def stepBy(self, steps: int) -> None:
        if self._typed_not_entered():
            self.interpretText()  # step from what is shown
        value = self.value()
        zero_step = self.singleStep()  # from 0 up, and the last step down to 0
        for _ in range(abs(steps)):
            up = (steps > 0) == (value >= 0)  # negative numbers mirror positive ones
            if value == 0:
                value = zero_step if steps > 0 else -zero_step
            elif not up and abs(value) <= zero_step * (1 + 1e-9) and self.minimum() <= 0:
                value = 0.0
            else:
                value = math.copysign(_next_step(abs(value), up=up), value)
        self.setValue(value)  # clamped to the range


def _number(text: str) -> float:
    """``float`` of what was typed, with a decimal comma read as a point."""
    return float(text.replace(",", "."))


def _next_step(value: float, up: bool) -> float:
    """The 1-2-5 sequence's next value above (or below) a positive ``value``."""
    exponent = math.floor(math.log10(value))
    candidates = [float(f"{m}e{e}") for e in range(exponent - 1, exponent + 2)
                  for m in _STEP_MANTISSAS]
    tolerance = 1e-9 * value  # a value already on the sequence moves to its neighbour
    if up:
        return min(c for c in candidates if c > value + tolerance)
    return max(c for c in candidates if c < value - tolerance)


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
