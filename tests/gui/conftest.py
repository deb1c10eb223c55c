"""Helpers shared by the tab tests."""

import pytest


@pytest.fixture
def open_tab(qtbot, app_state):
    """Build a tab as the main window does, show it, and shut it down after the test."""
    opened = []

    def open_(tab_class, size=(1300, 850)):
        widget = tab_class(app_state)
        qtbot.addWidget(widget)
        widget.resize(*size)
        widget.show()
        qtbot.waitExposed(widget)
        opened.append(widget)
        return widget

    yield open_
    for widget in opened:
        widget.shutdown()


def plot_points(item) -> int:
    """How many points a pyqtgraph data item holds.

    Not ``getData()``: that is what the current view shows (clipped to the view's x range and
    downsampled), and the view range catches up with the data only at the next paint.
    """
    original = getattr(item, "getOriginalDataset", item.getData)  # scatter items: no view clip
    xs, _ = original()
    return 0 if xs is None else len(xs)
