"""Shared widgets driven like a user: ScientificSpinBox typed into and stepped."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from gui.widgets.common import ScientificSpinBox


@pytest.fixture
def spin(qtbot):
    box = ScientificSpinBox(1e-12, 100.0, 0.01)
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    return box


def type_into(qtbot, box: ScientificSpinBox, text: str) -> None:
    """Select what the box shows, type ``text`` over it and press Enter."""
    box.setFocus()
    qtbot.keyClick(box, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(box, text)
    qtbot.keyClick(box, Qt.Key.Key_Return)


@pytest.mark.parametrize("typed, value, shown", [
    ("1e-3", 1e-3, "0.001"),
    ("1E-2", 1e-2, "0.01"),
    ("0.001", 1e-3, "0.001"),
    ("5e-5", 5e-5, "5e-05"),
    ("0.00000000001", 1e-11, "1e-11"),
    ("2.5e+1", 25.0, "25"),
    ("0.0123456789", 0.0123456789, "0.0123456789"),  # full precision, not 6 decimals
])
def test_typing_scientific_and_plain_numbers(qtbot, spin, typed, value, shown) -> None:
    type_into(qtbot, spin, typed)
    assert spin.value() == value
    assert spin.text() == shown


def test_typing_what_is_no_number_or_out_of_range_keeps_the_value(qtbot, spin) -> None:
    type_into(qtbot, spin, "0.5")
    type_into(qtbot, spin, "x")  # refused keystroke: the box is left empty, then restored
    assert spin.value() == 0.5 and spin.text() == "0.5"
    type_into(qtbot, spin, "-1")  # no minus sign for a positive range: "1" is left
    assert spin.value() == 1.0
    type_into(qtbot, spin, "1e-20")  # below the minimum: the value before it stays
    assert spin.value() == 1.0 and spin.text() == "1"  # not 0.01, which "1e-2" on the way was
    type_into(qtbot, spin, "250")  # above the maximum: not 25, which "25" on the way was
    assert spin.value() == 1.0


def test_the_value_changes_once_when_typing_ends(qtbot, spin) -> None:
    changes = []
    spin.valueChanged.connect(changes.append)
    type_into(qtbot, spin, "0.00025")
    assert changes == [0.00025]


def test_a_box_starting_at_zero_steps_up_by_its_single_step_and_back_to_zero(qtbot) -> None:
    box = ScientificSpinBox(0.0, 1.0, 0.0)
    box.setSingleStep(1e-4)
    qtbot.addWidget(box)
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert box.value() == 1e-4
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert box.value() == 2e-4
    qtbot.keyClick(box, Qt.Key.Key_Down)
    qtbot.keyClick(box, Qt.Key.Key_Down)
    assert box.value() == 0.0
    box.stepBy(3)  # Page Up, or a fast wheel: along the same steps, no float noise
    assert box.text() == "0.0005"


def test_a_decimal_comma_is_a_decimal_point(qtbot, spin) -> None:
    type_into(qtbot, spin, "0,001")  # as German or French keyboards type it
    assert spin.value() == 0.001


def test_the_arrows_step_from_what_was_typed(qtbot, spin) -> None:
    spin.setFocus()
    qtbot.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(spin, "0.5")  # no Enter yet
    qtbot.keyClick(spin, Qt.Key.Key_Up)
    assert spin.value() == 1.0


def test_arrows_step_along_1_2_5_and_stop_at_the_range(qtbot, spin) -> None:
    shown = []
    for _ in range(4):
        qtbot.keyClick(spin, Qt.Key.Key_Up)
        shown.append(spin.text())
    assert shown == ["0.02", "0.05", "0.1", "0.2"]
    spin.setValue(0.003)  # between steps: to the next one either way
    qtbot.keyClick(spin, Qt.Key.Key_Down)
    assert spin.text() == "0.002"
    spin.setValue(1e-12)
    qtbot.keyClick(spin, Qt.Key.Key_Down)
    assert spin.value() == 1e-12
    spin.setValue(50.0)
    qtbot.keyClick(spin, Qt.Key.Key_Up)
    assert spin.value() == 100.0


def test_small_values_are_shown_readably(spin) -> None:
    spin.setValue(1e-5)
    assert spin.text() == "1e-05" and spin.value() == 1e-5
    spin.setValue(0.1)
    assert spin.text() == "0.1"


def test_the_arrows_step_from_typed_text_also_at_the_range_edge(qtbot) -> None:
    box = ScientificSpinBox(0.0, 1.0, 0.0)  # at its minimum: Qt would disable Down
    box.setSingleStep(1e-4)
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    box.setFocus()
    qtbot.keyClick(box, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(box, "5e-4")  # no Enter yet
    qtbot.keyClick(box, Qt.Key.Key_Down)
    assert box.value() == 2e-4


@pytest.fixture
def curves(qtbot):
    pytest.importorskip("pyqtgraph")
    from gui.widgets.cifar_curves import TrainingCurves

    made = TrainingCurves()
    for plot in (made.loss_plot, made.acc_plot):
        qtbot.addWidget(plot)
        plot.resize(400, 300)
        plot.show()
        qtbot.waitExposed(plot)
    return made


def drawn_points(curve) -> int:
    """The points a curve draws in its view now (downsampled, clipped), after a paint."""
    curve.getViewBox().scene().prepareForPaint()  # the view's auto-range catches up
    xs, _ = curve.getData()
    return 0 if xs is None else len(xs)


def train(curves, steps: int, steps_per_epoch: int = 100, start: int = 0) -> None:
    for step in range(start + 1, start + steps + 1):
        curves.add_step(step / steps_per_epoch, 2.3 / (1 + step / steps_per_epoch))
        if step % steps_per_epoch == 0:
            curves.add_epoch({"epoch": step // steps_per_epoch, "train_acc": 0.5,
                              "test_acc": 0.6})
    curves.redraw()


def test_a_long_runs_loss_curve_holds_every_step_and_draws_what_its_pixels_show(curves):
    from tests.gui.conftest import plot_points

    train(curves, 200_000)
    assert plot_points(curves.loss_curve) == 200_000
    assert plot_points(curves.train_acc_curve) == plot_points(curves.test_acc_curve) == 2000
    width = curves.loss_plot.getViewBox().width()
    # pyqtgraph's auto downsampling keeps 5 samples a pixel, "peak" a min and a max each
    assert 0 < drawn_points(curves.loss_curve) <= 10 * width
    x_min, x_max = curves.loss_plot.getViewBox().viewRange()[0]
    assert x_min <= 0.01 and x_max >= 2000  # all of it in view


def test_clear_empties_the_curves_and_a_short_run_after_a_long_one_is_framed(curves):
    from tests.gui.conftest import plot_points

    train(curves, 200_000)
    drawn_points(curves.loss_curve)
    curves.clear()
    assert [plot_points(c) for c in (curves.loss_curve, curves.train_acc_curve,
                                     curves.test_acc_curve)] == [0, 0, 0]
    train(curves, 3)  # a new run's first steps, in its first hundredth of an epoch
    assert drawn_points(curves.loss_curve) == 3
    x_min, x_max = curves.loss_plot.getViewBox().viewRange()[0]
    assert x_min < 0.01 and 0.03 < x_max < 1


def test_a_resumed_runs_history_draws_then_its_steps_follow(curves):
    from tests.gui.conftest import plot_points

    history = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.3 + 0.1 * e} for e in (1, 2, 3)]
    history[1]["test_acc"] = 0.5
    curves.show_history(history)
    assert list(curves.loss_curve.xData) == [1.0, 2.0, 3.0]
    assert list(curves.loss_curve.yData) == [2.0, 1.0, 2.0 / 3]
    assert plot_points(curves.train_acc_curve) == 3 and list(curves.test_acc_curve.xData) == [2]
    train(curves, 50, start=300)  # on from epoch 3
    assert plot_points(curves.loss_curve) == 53 and curves.loss_curve.xData[-1] == 3.5
    assert drawn_points(curves.loss_curve) == 53
    # the run's end shows its rows again: the steps stay
    curves.show_history(history + [{"epoch": 4, "train_loss": 0.4, "train_acc": 0.8}],
                        losses=False)
    assert plot_points(curves.loss_curve) == 53 and plot_points(curves.train_acc_curve) == 4


def test_a_diverging_loss_leaves_the_rest_of_the_curve_drawn(curves):
    for step, loss in enumerate([2.3, 2.1, float("nan"), float("inf"), 1.9], start=1):
        curves.add_step(step / 100, loss)
    curves.redraw()
    drawn_points(curves.loss_curve)
    y_min, y_max = curves.loss_plot.getViewBox().viewRange()[1]
    assert y_min < 1.9 and 2.3 < y_max < 10  # framed on the finite losses


def test_numpy_images_become_qimages_that_own_their_pixels(qapp):
    import numpy as np

    from gui.widgets.images import rgb_pixmap, rgb_to_qimage

    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (255, 128, 0)
    image = rgb_to_qimage(rgb[:, :, :])
    rgb[0, 1] = 0  # the image keeps what it was given
    assert (image.width(), image.height()) == (3, 2)
    assert image.pixelColor(1, 0).getRgb() == (255, 128, 0, 255)
    rgba = np.full((4, 4, 4), 200, dtype=np.uint8)[::2, ::2]  # not contiguous
    assert rgb_to_qimage(rgba).pixelColor(1, 1).getRgb() == (200, 200, 200, 200)
    # a 32×32 sample shown at 64 px: scaled up, each pixel a sharp 2×2 block
    sample = np.zeros((32, 32, 3), dtype=np.uint8)
    sample[0, 0] = 255
    shown = rgb_pixmap(sample, 64).toImage()
    assert (shown.width(), shown.height()) == (64, 64)
    assert shown.pixelColor(1, 1).getRgb()[:3] == (255, 255, 255)
    assert shown.pixelColor(2, 2).getRgb()[:3] == (0, 0, 0)
    with pytest.raises(ValueError, match="uint8 H×W×3 or H×W×4 image, got float64 2×2"):
        rgb_to_qimage(np.zeros((2, 2)))


def loss_axis_width(curves, losses, first_step=1) -> float:
    """The loss plot's y-axis width once ``losses`` (one step each) are drawn and painted."""
    for step, loss in enumerate(losses, start=first_step):
        curves.add_step(step / 100, loss)
    curves.redraw()
    for _ in range(3):  # a paint sizes the axis to its labels, then the layout follows
        curves.loss_plot.scene().prepareForPaint()
        QApplication.processEvents()
        curves.loss_plot.grab()
    return curves.loss_plot.getAxis("left").width()


# a run's first losses ("2.26", "2.28": wider labels), then all of it ("0.5", "1")
FIRST_LOSSES = [2.3 - 0.05 * i / 300 for i in range(300)]
ALL_LOSSES = FIRST_LOSSES + [2.25 - 1.85 * i / 300 for i in range(300)]


def test_the_loss_axis_fits_each_runs_labels_not_the_last_runs(qtbot, curves):
    from gui.widgets.cifar_curves import TrainingCurves

    fresh = TrainingCurves()
    qtbot.addWidget(fresh.loss_plot)
    fresh.loss_plot.resize(400, 300)
    fresh.loss_plot.show()
    qtbot.waitExposed(fresh.loss_plot)
    fitted = loss_axis_width(fresh, ALL_LOSSES[300:])
    wider = loss_axis_width(curves, FIRST_LOSSES)
    assert wider > fitted  # labels a few pixels wider
    curves.clear()  # a new run
    assert loss_axis_width(curves, ALL_LOSSES[300:]) == fitted
    # within a run the axis keeps the width of its first labels; at its end it fits its own
    curves.clear()
    assert loss_axis_width(curves, FIRST_LOSSES) == wider
    assert loss_axis_width(curves, ALL_LOSSES[300:], first_step=301) == wider
    curves.show_history([{"epoch": 6, "train_loss": 0.4, "train_acc": 0.9}], losses=False)
    assert loss_axis_width(curves, []) == fitted


@pytest.fixture
def confusion_view(qtbot):
    pytest.importorskip("pyqtgraph")
    from gui.widgets.cifar_confusion import ConfusionMatrixView

    view = ConfusionMatrixView()
    qtbot.addWidget(view)
    view.resize(600, 600)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_a_100_class_matrix_adds_no_item_per_cell_and_clearing_leaves_none(confusion_view):
    import numpy as np
    import pyqtgraph as pg

    scene = confusion_view.scene()
    empty = len(scene.items())
    k = 100
    confusion = np.random.default_rng(0).integers(0, 100, size=(k, k))
    confusion_view.show_matrix(confusion, [f"class {i}" for i in range(k)])
    QApplication.processEvents()
    # one TextItem per cell, added and removed one by one, froze the tab for seconds
    assert len(scene.items()) <= empty + 5
    assert not [item for item in scene.items() if isinstance(item, pg.TextItem)]
    assert confusion_view.cell_pixels() < 10  # too small for counts: none shown
    assert not any(label.isVisible() for label in confusion_view.count_labels)
    assert confusion_view.count_labels[k + 2].toPlainText() == str(confusion[1, 2])

    confusion_view.clear_matrix()
    QApplication.processEvents()
    assert len(scene.items()) == empty
    assert confusion_view.count_labels == []


def test_each_count_of_a_10_class_matrix_is_written_in_its_cell(confusion_view):
    import numpy as np
    from PySide6.QtCore import QPointF

    k = 10
    confusion = np.array([[(7 * i + 3 * j) % 12 for j in range(k)] for i in range(k)])
    np.fill_diagonal(confusion, 900)  # light cells, written in black; the others in white
    confusion_view.show_matrix(confusion, [f"class {i}" for i in range(k)])
    QApplication.processEvents()
    labels = confusion_view.count_labels
    assert [label.toPlainText() for label in labels] == [str(n) for n in confusion.flat]
    assert all(label.isVisible() for label in labels)

    image = confusion_view.viewport().grab().toImage()
    view_box = confusion_view.getViewBox()
    half = confusion_view.cell_pixels() * 0.3
    unwritten = []
    for i in range(k):
        for j in range(k):
            centre = confusion_view.mapFromScene(
                view_box.mapViewToScene(QPointF(j + 0.5, i + 0.5)))
            pixels = [image.pixelColor(x, y)
                      for x in range(int(centre.x() - half), int(centre.x() + half))
                      for y in range(int(centre.y() - half), int(centre.y() + half))]
            if i == j:
                written = any(max(p.red(), p.green(), p.blue()) < 40 for p in pixels)
            else:
                written = any(min(p.red(), p.green(), p.blue()) > 200 for p in pixels)
            if not written:
                unwritten.append((i, j))
    assert unwritten == []
