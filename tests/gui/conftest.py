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


def text_cut_off(view) -> list[str]:
    """What of a plot's title, axis labels and data area its view does not show whole."""
    plot = view.getPlotItem()
    shown = view.mapToScene(view.viewport().rect()).boundingRect().adjusted(-1, -1, 1, 1)
    cut = []
    data_area = plot.vb.sceneBoundingRect()
    if not shown.contains(data_area):
        cut.append("the data area")
    elif data_area.width() < 80 or data_area.height() < 60:
        cut.append(f"the data area ({data_area.width():.0f}×{data_area.height():.0f} px)")
    title = plot.titleLabel
    text = title.item.mapRectToScene(title.item.boundingRect())
    if not shown.contains(text) or title.geometry().width() + 1 < text.width():
        cut.append(f"the title {title.text!r}")
    for side in ("left", "bottom"):
        axis = plot.getAxis(side)
        margin = axis.label.document().documentMargin()  # blank around the text
        label = axis.label.mapRectToScene(
            axis.label.boundingRect().adjusted(margin, margin, -margin, -margin))
        room = axis.mapRectToScene(axis.rect())
        # along the axis: the label must lie within the axis' own length
        inside = (room.top() - 1 <= label.top() and label.bottom() <= room.bottom() + 1
                  if side == "left" else
                  room.left() - 1 <= label.left() and label.right() <= room.right() + 1)
        if axis.isVisible() and axis.label.isVisible() and (
                not inside or not shown.contains(label)):
            cut.append(f"the {side} axis label {axis.labelText!r}")
    return cut
