"""The Linear-fit tab driven like a user: play, watch the curves grow, pause/step/stop, diverge,
edit points, load a bad CSV, race, overfit an MLP, close mid-run."""

from __future__ import annotations

import os
import re

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QPointF, Qt  # noqa: E402

from engine.fit.data import FitData  # noqa: E402
from tests.gui.conftest import plot_points, text_cut_off  # noqa: E402
from tests.gui.test_widgets import type_into  # noqa: E402

pytest.importorskip("pyqtgraph")

RUN_TIMEOUT_MS = 60_000


@pytest.fixture
def tab(open_tab):
    from gui.tabs.linear_fit import LinearFitTab

    return open_tab(LinearFitTab)


points = plot_points


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def wait_idle(qtbot, tab) -> None:
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)


def test_book_run_draws_live_and_matches_the_book(qtbot, tab) -> None:
    assert points(tab.train_points) == 11 and points(tab.train_curve) == 0
    assert tab.surface_view.isVisible()  # linear model: the loss surface is shown
    assert tab.surface_image.image is not None
    click(qtbot, tab.play_button)
    assert tab.is_running() and not tab.play_button.isEnabled()
    assert not tab.lr_spin.isEnabled()  # settings are locked during a run
    qtbot.waitUntil(lambda: points(tab.train_curve) > 0, timeout=RUN_TIMEOUT_MS)
    wait_idle(qtbot, tab)
    assert points(tab.train_curve) == 5000
    assert len(tab.path_w) == 5000  # one recorded point per epoch
    path_w, path_b = tab.path_curve.getData()  # drawn: thinned, from the start to the end
    assert 100 < len(path_w) <= 2000
    assert (path_w[0], path_b[0]) == (1.0, 0.0)
    assert (path_w[-1], path_b[-1]) == (tab.path_w[-1], tab.path_b[-1])
    assert tab.last_result["status"] == "done"
    assert "w = 5.3671, b = -17.3012" in tab.message_label.text()
    assert tab.epoch_label.text() == "5,000"
    assert "w = 5.367" in tab.params_label.text() and "∂L/∂w" in tab.grads_label.text()
    xs, ys = tab.prediction_curve.getData()
    assert len(xs) == 2 and ys[1] > ys[0]  # the fitted line rises with x
    assert tab.play_button.isEnabled() and not tab.stop_button.isEnabled()


def test_pause_resume_step_and_stop(qtbot, tab) -> None:
    tab.epochs_spin.setValue(1_000_000)
    click(qtbot, tab.play_button)
    qtbot.waitUntil(lambda: points(tab.train_curve) > 50, timeout=RUN_TIMEOUT_MS)
    click(qtbot, tab.pause_button)
    wait_idle(qtbot, tab)
    paused_at = tab.session.epoch
    assert tab.last_result["status"] == "stopped" and points(tab.train_curve) == paused_at

    click(qtbot, tab.step_button)
    wait_idle(qtbot, tab)
    assert tab.session.epoch == paused_at + 1 and points(tab.train_curve) == paused_at + 1

    click(qtbot, tab.play_button)  # resumes: the curve continues rather than restarting
    qtbot.waitUntil(lambda: points(tab.train_curve) > paused_at + 20, timeout=RUN_TIMEOUT_MS)
    click(qtbot, tab.stop_button)
    wait_idle(qtbot, tab)
    stopped_at = tab.session.epoch
    assert stopped_at > paused_at + 1
    assert points(tab.train_curve) == stopped_at

    click(qtbot, tab.step_button)  # after Stop, a new run starts from the beginning
    wait_idle(qtbot, tab)
    assert tab.session.epoch == 1 and points(tab.train_curve) == 1

    click(qtbot, tab.reset_button)
    assert points(tab.train_curve) == 0 and tab.session.epoch == 0
    assert tab.epoch_label.text() == "0"


def test_divergence_is_explained_and_nothing_breaks(qtbot, tab, app_state) -> None:
    tab.scale_spin.setValue(1.0)  # the book's unscaled inputs with lr 1e-2
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "diverged"
    text = tab.message_label.text()
    assert "diverged at epoch" in text and "input scale" in text and "learning rate" in text
    assert app_state.last_error is None  # shown in the tab and status bar, no dialog
    # the readout shows the epoch the message names (not the last good one), and its loss
    epoch = tab.last_result["epochs"]
    assert f"diverged at epoch {epoch}: the loss before its update " in text
    assert tab.epoch_label.text() == f"{epoch} (diverged)"
    assert f"to {float(tab.loss_label.text()):.4g}." in text
    assert f"before epoch {epoch}'s update" in tab.readout_note.text()
    # the fix it suggests works
    tab.scale_spin.setValue(0.1)
    tab.epochs_spin.setValue(300)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "done" and "Done" in tab.message_label.text()


def readout_lines_cut_off(tab) -> list[str]:
    """The readout's lines wider than their label (the panel has a fixed width)."""
    labels = (tab.epoch_label, tab.loss_label, tab.val_label, tab.params_label, tab.grads_label)
    return [line for label in labels for line in label.text().splitlines()
            if label.fontMetrics().horizontalAdvance(line) > label.width()]


def test_a_short_run_after_a_long_one_shows_its_losses(qtbot, tab) -> None:
    tab.resize(1024, 650)  # in a 1024×700 window: a loss plot ~280 px wide
    click(qtbot, tab.play_button)  # the book's 5000 epochs
    wait_idle(qtbot, tab)
    tab.scale_spin.setValue(1.0)  # the book's unscaled inputs: diverges within a few epochs
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "diverged"
    epochs, losses = tab.train_curve.getOriginalDataset()
    assert 1 < len(losses) < 10 and losses.max() > 1e6

    def every_loss_in_view() -> bool:
        (x0, x1), (y0, y1) = tab.loss_plot.vb.viewRange()
        return x0 <= epochs.min() and epochs.max() <= x1 and y0 <= losses.min() and \
            losses.max() <= y1

    # the plot frames this run, not the 5000 epochs before it
    qtbot.waitUntil(every_loss_in_view, timeout=5000)


def test_a_diverged_run_shows_whole_readouts(qtbot, tab) -> None:
    tab.scale_spin.setValue(1.0)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.grads_label.text().startswith("∂L/∂w = 1.511e+07")  # large numbers…
    assert readout_lines_cut_off(tab) == []  # …shown whole


def test_a_race_far_from_its_start_shows_whole_readouts(qtbot, tab) -> None:
    xs = (1.0, 2.0, 3.0, 4.0)
    tab.set_data(FitData(xs, tuple(1e5 * x + 3e5 for x in xs), "large y"))
    tab.race_check.setChecked(True)
    tab.lr_spin.setValue(100.0)  # Adam walks ~lr per epoch, the others diverge
    tab.epochs_spin.setValue(2000)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    racers = tab.last_result["racers"]
    assert racers["adam"]["status"] != "diverged" and abs(racers["adam"]["params"]["b"]) > 1e5
    assert "adam: w" in tab.params_label.text()
    assert readout_lines_cut_off(tab) == []

def test_learning_rate_and_input_scale_take_scientific_notation(qtbot, tab, app_state) -> None:
    from gui.tabs.linear_fit import LinearFitTab

    type_into(qtbot, tab.lr_spin, "1e-7")
    type_into(qtbot, tab.scale_spin, "5E-5")
    assert (tab.config().lr, tab.config().input_scale) == (1e-7, 5e-5)
    assert (tab.lr_spin.text(), tab.scale_spin.text()) == ("1e-07", "5e-05")
    again = LinearFitTab(app_state)  # remembered exactly
    qtbot.addWidget(again)
    assert (again.lr_spin.value(), again.scale_spin.value()) == (1e-7, 5e-5)


def test_the_suggested_input_scale_can_be_typed_and_works(qtbot, tab) -> None:
    xs = (12000.0, 25000.0, 40000.0, 51000.0, 8000.0)
    tab.set_data(FitData(xs, tuple(0.002 * x + 3 for x in xs), "large x"))
    tab.epochs_spin.setValue(300)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "diverged"
    suggested = re.search(r"input scale ([-+.e\d]+)", tab.message_label.text()).group(1)
    assert suggested == "1e-05"
    type_into(qtbot, tab.scale_spin, suggested)
    assert tab.scale_spin.value() == 1e-5
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "done"


def test_a_reset_asked_during_a_run_that_errors_leaves_the_next_run_alone(
        qtbot, tab, monkeypatch, app_state) -> None:
    import time

    import gui.tabs.linear_fit as linear_fit
    from engine.jobs import JobError

    def job_that_fails_when_stopped(_config, ctx):
        while not ctx.stopped():
            time.sleep(0.005)
        raise JobError("the device went away")

    real_job = linear_fit.fit_job
    monkeypatch.setattr(linear_fit, "fit_job", job_that_fails_when_stopped)
    click(qtbot, tab.play_button)
    assert tab.is_running()
    click(qtbot, tab.reset_button)
    wait_idle(qtbot, tab)
    assert app_state.last_error is not None and "device went away" in app_state.last_error[1]
    assert tab.session.status == "ready" and tab.epoch_label.text() == "0"  # reset after all
    monkeypatch.setattr(linear_fit, "fit_job", real_job)
    tab.epochs_spin.setValue(20)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    qtbot.wait(50)  # anything queued after the run
    assert tab.last_result["status"] == "done" and tab.epoch_label.text() == "20"
    assert points(tab.train_curve) == 20 and "Done: 20 epochs" in tab.message_label.text()


def test_step_after_the_last_epoch_starts_a_new_run_as_play_does(qtbot, tab) -> None:
    tab.epochs_spin.setValue(20)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "done"
    click(qtbot, tab.step_button)
    wait_idle(qtbot, tab)
    assert tab.session.epoch == 1 and points(tab.train_curve) == 1
    assert tab.epoch_label.text() == "1"


def load(qtbot, tab, path) -> None:
    assert tab.load_csv_file(str(path))
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=RUN_TIMEOUT_MS)


def test_bad_csv_keeps_the_data_and_names_the_line(qtbot, tab, tmp_path, app_state) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,hot\n")
    load(qtbot, tab, bad)
    assert len(tab.data) == 11 and points(tab.train_points) == 11
    assert app_state.last_error[1] == "bad.csv line 3: 'hot' is not a number"
    assert "line 3" in tab.message_label.text()

    good = tmp_path / "good.csv"
    good.write_text("0,1\n1,3\n2,5\n3,7\n")
    load(qtbot, tab, good)
    assert points(tab.train_points) == 4 and "good.csv" in tab.data_label.text()
    assert tab.message_label.text() == ""  # the error went with the bad file


def test_a_csv_is_read_off_the_gui_thread_and_play_waits_for_it(
        qtbot, tab, tmp_path, monkeypatch) -> None:
    import threading

    import gui.tabs.linear_fit as linear_fit

    readers, release = [], threading.Event()

    def slow_load_csv(path):  # a large file: seconds of parsing
        readers.append(threading.current_thread())
        release.wait(RUN_TIMEOUT_MS / 1000)
        return FitData((0.0, 1.0, 2.0), (1.0, 3.0, 5.0), "big.csv")

    monkeypatch.setattr(linear_fit, "load_csv", slow_load_csv)
    assert tab.load_csv_file(str(tmp_path / "big.csv"))
    qtbot.waitUntil(lambda: len(readers) == 1, timeout=5000)
    assert readers[0] is not threading.main_thread()  # the window stays responsive
    assert "Reading big.csv" in tab.message_label.text()
    assert not tab.play_button.isEnabled() and not tab.load_button.isEnabled()
    assert not tab.load_csv_file(str(tmp_path / "another.csv"))  # one load at a time
    release.set()
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=RUN_TIMEOUT_MS)
    assert len(tab.data) == 3 and "big.csv" in tab.data_label.text()
    assert tab.play_button.isEnabled() and tab.message_label.text() == ""


def test_a_csv_s_arrays_are_made_on_the_loading_thread(tmp_path) -> None:
    # 2M points: ~0.15 s of converting floats, which the GUI thread would do at first use
    from gui.tabs.linear_fit import read_csv_job

    path = tmp_path / "points.csv"
    path.write_text("x,y\n1,2\n3,4\n5,7\n")
    data = read_csv_job(str(path), None)
    assert "arrays" in data.__dict__ and data.arrays[1].tolist() == [2.0, 4.0, 7.0]


def test_a_csv_dropped_on_the_tab_loads_and_other_files_are_left_to_classify(
        qtbot, tab, tmp_path, app_state) -> None:
    good = tmp_path / "points.CSV"
    good.write_text("0,1\n1,3\n2,5\n")
    assert tab.take_dropped_paths([str(good)])
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=RUN_TIMEOUT_MS)
    assert len(tab.data) == 3 and "points.CSV" in tab.data_label.text()

    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    assert tab.take_dropped_paths([str(good), str(good)])  # taken, but not loaded twice
    assert len(tab.data) == 3 and "one CSV file" in statuses[-1]
    assert not tab.take_dropped_paths([str(photo := tmp_path / "photo.jpg")])
    assert not tab.take_dropped_paths([str(good), str(photo)])


def test_a_csv_dropped_during_a_run_is_not_loaded_and_not_said_to_be(
        qtbot, tab, tmp_path, app_state) -> None:
    other = tmp_path / "other.csv"
    other.write_text("0,1\n1,3\n2,5\n3,7\n")
    tab.epochs_spin.setValue(tab.epochs_spin.maximum())
    click(qtbot, tab.play_button)
    assert tab.is_running()
    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    assert tab.take_dropped_paths([str(other)])  # the tab's file, refused while it trains
    assert len(tab.data) == 11 and not any("Loaded" in s for s in statuses)
    assert "Pause or stop training" in statuses[-1]
    click(qtbot, tab.stop_button)
    wait_idle(qtbot, tab)


def assert_contours_follow_the_loss(tab) -> None:
    """Every drawn contour point has its level's loss, computed afresh from the training data
    at that (w, b), and every level is drawn."""
    import numpy as np

    from engine.fit.surface import log_loss, session_surface

    w, b = tab.contours.getData()
    assert tab.contours.opts["connect"] == "pairs" and len(w) % 2 == 0 and len(w) > 0
    session = tab.session
    if hasattr(session, "sessions"):  # a race: each racer trains on the same points
        session = session.sessions["gd"]
    x = session.x_train.numpy().astype(np.float64)
    y = session.y_train.numpy().astype(np.float64)
    log_losses = np.log10(((w[:, None] * x + b[:, None] - y) ** 2).mean(axis=1))
    levels = tab.contour_levels(log_loss(session_surface(session)["loss"]))
    off_level = np.abs(log_losses[:, None] - levels[None, :])
    spacing = levels[1] - levels[0]
    assert off_level.min(axis=1).max() < 0.05 * spacing  # linear interpolation on the grid
    assert (off_level.min(axis=0) < 0.05 * spacing).all()


def test_contours_are_drawn_at_their_levels_and_follow_the_data(qtbot, tab) -> None:
    assert_contours_follow_the_loss(tab)
    before = tab.contours.getData()[0].copy()
    tab.click_at_scene(tab.data_plot.vb.mapViewToScene(QPointF(70.0, 0.0)))  # a new point
    assert len(tab.data) == 12 and len(tab.contours.getData()[0]) != len(before)
    assert_contours_follow_the_loss(tab)
    tab.race_check.setChecked(True)  # the race draws the same surface
    assert_contours_follow_the_loss(tab)
    tab.race_check.setChecked(False)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("mlp"))  # no surface for the MLP
    assert len(tab.contours.getData()[0]) == 0


def test_contours_match_pyqtgraphs_isocurves() -> None:
    import numpy as np
    import pyqtgraph.functions as fn

    from engine.fit.surface import contour_segments

    grid = np.arange(121.0)
    values = np.sin(3 * np.linspace(-2, 2, 121))[:, None] * \
        np.cos(2 * np.linspace(-1, 3, 121))[None, :]
    # levels without saddle cells: pyqtgraph pairs a saddle's crossings one fixed way
    for level in (0.5, -0.7, 0.93):
        x, y = contour_segments(values, grid + 0.5, grid + 0.5, [level])  # pixel centres
        ours = sorted(tuple(sorted(np.round(pair, 6).tolist()))
                      for pair in np.stack([x, y], axis=1).reshape(-1, 2, 2))
        theirs = sorted(tuple(sorted(np.round(np.array(segment, dtype=float), 6).tolist()))
                        for segment in fn.isocurve(values, level))
        assert ours == theirs and len(ours) > 100


def test_clicking_the_plot_adds_and_removes_points(qtbot, tab) -> None:
    view = tab.data_plot.vb
    widget = tab.data_view

    def click_at(x: float, y: float) -> None:
        scene = view.mapViewToScene(QPointF(x, y))
        qtbot.mouseClick(widget.viewport(), Qt.MouseButton.LeftButton,
                         pos=widget.mapFromScene(scene))

    click_at(70.0, 0.0)  # empty space: a new point
    qtbot.waitUntil(lambda: len(tab.data) == 12, timeout=5000)
    assert tab.data.x[-1] == pytest.approx(70.0, abs=1.0)
    assert drawn_train(tab) == (list(tab.data.x), list(tab.data.y))
    click_at(tab.data.x[0], tab.data.y[0])  # on a point: removes it
    qtbot.waitUntil(lambda: len(tab.data) == 11, timeout=5000)
    assert 35.7 not in tab.data.x


def test_clicking_among_many_points_maps_them_in_one_go(qtbot, tab, monkeypatch) -> None:
    n = 20_000
    xs = tuple(i / 100 for i in range(n))
    tab.set_data(FitData(xs, tuple((i * 7919 % 1000) / 10 for i in range(n)), "many"))
    view = tab.data_plot.vb
    target = 12_345
    scene = view.mapViewToScene(QPointF(xs[target], tab.data.y[target]))
    per_point = []
    real_map = view.mapViewToScene
    monkeypatch.setattr(view, "mapViewToScene", lambda p: per_point.append(p) or real_map(p))
    tab.click_at_scene(scene)
    assert len(tab.data) == n - 1 and xs[target] not in tab.data.x
    assert len(per_point) <= 1  # not one call per point (seconds for 200k points)


def drawn_train(tab) -> tuple[list[float], list[float]]:
    """The training points the data plot shows, in the data's order."""
    x, y = tab.train_layer.shown()
    return x.tolist(), y.tolist()


def count_calls(monkeypatch, obj, name: str) -> list:
    """Record each call of ``obj.name`` (still calling it)."""
    calls = []
    real = getattr(obj, name)
    monkeypatch.setattr(obj, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_clicks_edit_the_drawn_points_in_place(qtbot, tab, monkeypatch) -> None:
    n = 3000
    xs = (1000.0, *(i / 100 for i in range(1, n)))  # an outlier first, far to the right
    tab.set_data(FitData(xs, tuple((i * 7919 % 1000) / 10 for i in range(n)), "many"))
    redraws = count_calls(monkeypatch, tab.train_points, "setData")
    view = tab.data_plot.vb

    def click_on(index: int) -> None:
        tab.click_at_scene(view.mapViewToScene(QPointF(tab.data.x[index], tab.data.y[index])))

    click_on(1234)
    assert len(tab.data) == n - 1 and drawn_train(tab) == (list(tab.data.x), list(tab.data.y))
    click_on(0)  # the outlier goes, and the view may frame the rest
    assert drawn_train(tab) == (list(tab.data.x), list(tab.data.y))
    assert tab.train_points.dataBounds(0)[1] < 100
    tab.click_at_scene(view.mapViewToScene(QPointF(15.0, 120.0)))  # empty space: a point
    assert len(tab.data) == n - 1 and tab.data.y[-1] == pytest.approx(120.0, abs=5)
    assert drawn_train(tab) == (list(tab.data.x), list(tab.data.y))
    click_on(n - 2)  # the point just added
    assert drawn_train(tab) == (list(tab.data.x), list(tab.data.y)) and len(tab.data) == n - 2
    assert not redraws  # the 3000 points were never drawn again


def test_removing_most_points_draws_the_rest_afresh(qtbot, tab, monkeypatch) -> None:
    tab.set_data(FitData((0.0, 1.0, 2.0, 3.0, 4.0, 5.0), (0.0, 1.0, 4.0, 9.0, 16.0, 25.0)))
    redraws = count_calls(monkeypatch, tab.train_points, "setData")
    for index in (4, 0, 2, 1):
        tab.remove_point(index)
        assert drawn_train(tab) == (list(tab.data.x), list(tab.data.y))
    assert tab.data.x == (1.0, 5.0)
    assert len(redraws) == 1  # once half the rows were hidden, not once per click


@pytest.fixture
def many_points(tab, monkeypatch) -> FitData:
    """2,000 points on a tab that draws at most 500 (as 2M on one that draws 50,000)."""
    import gui.tabs.linear_fit as linear_fit

    monkeypatch.setattr(linear_fit, "MAX_DRAWN_POINTS", 500)
    n = 2000
    data = FitData(tuple(i / 20 for i in range(n)), tuple((i * 7919 % 1000) / 10 for i in range(n)),
                   "many")
    tab.set_data(data)
    return data


def test_large_data_draws_a_sample_and_trains_on_every_point(qtbot, tab, many_points) -> None:
    assert points(tab.train_points) == 500 and len(tab.drawn_indices) == 500
    drawn_x, drawn_y = drawn_train(tab)
    assert drawn_x == [many_points.x[i] for i in tab.drawn_indices]  # real points, in order
    assert drawn_y == [many_points.y[i] for i in tab.drawn_indices]
    assert len(set(drawn_x)) == 500 and max(drawn_x) - min(drawn_x) > 0.9 * 100  # spread out
    assert "2,000 points" in tab.data_label.text()
    assert "Showing a random 500 of them; training uses all" in tab.data_label.text()
    assert len(tab.session.train_indices) == 2000
    tab.val_spin.setValue(0.2)  # the same sample, each point drawn as its part
    val = set(tab.session.val_indices.tolist())
    val_x, _ = tab.val_points.getData()
    assert points(tab.train_points) + points(tab.val_points) == 500
    assert sorted([*drawn_train(tab)[0], *val_x.tolist()]) == sorted(drawn_x)
    assert set(val_x.tolist()) == {many_points.x[i] for i in tab.drawn_indices if i in val}
    assert "400 held out" in tab.data_label.text()
    tab.epochs_spin.setValue(3)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["n_train"] == 1600 and tab.last_result["n_val"] == 400


def test_clicks_on_a_sample_edit_the_points_drawn(qtbot, tab, many_points, monkeypatch) -> None:
    redraws = count_calls(monkeypatch, tab.train_points, "setData")
    view = tab.data_plot.vb
    drawn_before = tab.drawn_indices.copy()
    target = int(drawn_before[200])
    tab.click_at_scene(view.mapViewToScene(QPointF(many_points.x[target],
                                                   many_points.y[target])))
    assert len(tab.data) == 1999 and tab.data == many_points.without_point(target)
    # the others stay drawn, those after it one index lower
    kept = [i if i < target else i - 1 for i in drawn_before if i != target]
    assert tab.drawn_indices.tolist() == kept
    assert drawn_train(tab) == ([tab.data.x[i] for i in kept], [tab.data.y[i] for i in kept])
    tab.click_at_scene(view.mapViewToScene(QPointF(50.0, 150.0)))  # empty space: a new point
    assert len(tab.data) == 2000 and tab.drawn_indices[-1] == 1999
    assert drawn_train(tab)[1][-1] == pytest.approx(150.0, abs=5)
    assert not redraws  # edited in place
    hidden = next(i for i in range(1999) if i not in set(tab.drawn_indices.tolist()))
    tab.remove_point(hidden)  # not drawn (only code can remove it): the drawing is unchanged
    assert len(tab.data) == 1999 and len(tab.drawn_indices) == 500
    assert drawn_train(tab) == ([tab.data.x[i] for i in tab.drawn_indices],
                                [tab.data.y[i] for i in tab.drawn_indices])


def test_one_style_is_looked_up_once_and_draws_as_pyqtgraph_does(qtbot, monkeypatch) -> None:
    import numpy as np
    import pyqtgraph as pg

    from gui.tabs.linear_fit import UniformScatter

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, 2000), rng.uniform(0, 1, 2000)
    images = []
    for kind in (pg.ScatterPlotItem, UniformScatter):
        widget = pg.PlotWidget()
        qtbot.addWidget(widget)
        widget.resize(300, 200)
        item = kind(size=9, brush=pg.mkBrush(70, 140, 255), pen=pg.mkPen("w"))
        widget.addItem(item)
        styles = count_calls(monkeypatch, item.fragmentAtlas, "_keys")
        item.setData(x, y)
        widget.getPlotItem().setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        images.append(widget.grab().toImage())
        looked_up = sum(len(list(call[0])) for call in styles)
        assert looked_up == (1 if kind is UniformScatter else len(x))
    assert images[0] == images[1]


def test_a_new_setting_does_not_redraw_unchanged_points(qtbot, tab, monkeypatch) -> None:
    redraws = count_calls(monkeypatch, tab.train_points, "setData")
    type_into(qtbot, tab.lr_spin, "0.002")
    tab.epochs_spin.setValue(300)
    assert not redraws and points(tab.train_points) == 11
    tab.val_spin.setValue(0.2)  # a new split: the points are drawn again
    assert redraws and points(tab.train_points) == 9


def legend_names(legend) -> list[str]:
    return [label.text for _, label in legend.items]


def test_legends_are_rebuilt_only_when_their_entries_change(qtbot, tab, monkeypatch) -> None:
    rebuilds = count_calls(monkeypatch, tab.loss_legend, "clear")
    tab.click_at_scene(tab.data_plot.vb.mapViewToScene(QPointF(70.0, 0.0)))
    type_into(qtbot, tab.lr_spin, "0.002")
    assert not rebuilds and legend_names(tab.loss_legend) == ["train", "validation"]
    tab.race_check.setChecked(True)
    assert legend_names(tab.loss_legend) == ["gd", "momentum", "adam"]
    tab.val_spin.setValue(0.2)
    assert legend_names(tab.loss_legend)[3:] == ["dashed: val"]
    assert legend_names(tab.surface_legend) == ["gd", "momentum", "adam", "start (1, 0)",
                                                "minimum"]


def test_legends_in_a_small_window_leave_the_data_in_view(qtbot, tab) -> None:
    from gui.tabs.linear_fit import LEGEND_MAX_SHARE

    def legends_leave_room() -> bool:
        for view, legend in tab.legends:
            plot, size = view.getPlotItem().vb.boundingRect(), legend.boundingRect()
            if legend.isVisible() and (size.width() > LEGEND_MAX_SHARE[0] * plot.width() or
                                       size.height() > LEGEND_MAX_SHARE[1] * plot.height()):
                return False
        return True

    assert all(legend.isVisible() for _, legend in tab.legends)  # 1300×850
    tab.resize(700, 440)
    qtbot.waitUntil(lambda: not tab.loss_legend.isVisible(), timeout=5000)
    assert legends_leave_room()
    assert tab.loss_view.toolTip().endswith("train, validation")
    tab.race_check.setChecked(True)  # more entries, same rule
    assert legends_leave_room() and "momentum" in tab.surface_view.toolTip()
    tab.resize(1300, 850)
    qtbot.waitUntil(lambda: tab.surface_legend.isVisible(), timeout=5000)
    assert legends_leave_room() and tab.surface_view.toolTip() == ""


def plots_cut_off(tab) -> dict[str, list[str]]:
    views = {"data": tab.data_view, "loss": tab.loss_view, "surface": tab.surface_view}
    return {name: cut for name, view in views.items()
            if view.isVisible() and (cut := text_cut_off(view))}


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_plot_titles_and_axis_labels_are_whole_at_the_smallest_size(qtbot, tab, model) -> None:
    tab.model_combo.setCurrentIndex(tab.model_combo.findData(model))
    tab.resize(1, 1)  # as small as the tab's layout allows: the window can make it no smaller
    qtbot.waitUntil(lambda: tab.width() < 900 and tab.height() < 500, timeout=5000)
    qtbot.wait(50)  # the plots' own layouts
    assert plots_cut_off(tab) == {}
    # a loss axis with a scale in its label ("(x1e+12)") is longer; the plot makes room for it
    tab.loss_plot.setYRange(0, 5e12, padding=0)
    qtbot.wait(50)
    assert "x1e+12" in tab.loss_plot.getAxis("left").labelString()
    assert plots_cut_off(tab) == {}


def test_race_mode_runs_three_optimizers_on_one_surface(qtbot, tab) -> None:
    tab.race_check.setChecked(True)
    tab.epochs_spin.setValue(300)
    assert not tab.optimizer_combo.isEnabled()
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    result = tab.last_result
    assert set(result["racers"]) == {"gd", "momentum", "adam"}
    for name in ("gd", "momentum", "adam"):
        assert points(tab.race_curves[name]) == 300
        assert points(tab.race_paths[name]) == 301
        xs, ys = tab.race_paths[name].getData()
        assert (xs[0], ys[0]) == (1.0, 0.0)  # all from the same start
    assert "Leader: momentum" in tab.message_label.text()
    assert not tab.train_curve.isVisible()


def test_race_marks_racers_that_diverged(qtbot, tab) -> None:
    tab.race_check.setChecked(True)
    tab.lr_spin.setValue(10.0)  # gradient descent and momentum blow up, Adam copes
    tab.epochs_spin.setValue(50)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["racers"]["gd"]["status"] == "diverged"
    loss, params = tab.loss_label.text(), tab.params_label.text()
    assert "gd diverged" in loss and "momentum diverged" in loss
    assert "gd: diverged" in params and "gd: w" not in params and "adam: w" in params


def test_race_shows_each_racers_validation_loss(qtbot, tab) -> None:
    tab.race_check.setChecked(True)
    tab.val_spin.setValue(0.2)
    tab.epochs_spin.setValue(100)
    assert all(curve.isVisible() for curve in tab.race_val_curves.values())
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    lines = tab.val_label.text().splitlines()
    assert [line.split()[0] for line in lines] == ["gd", "momentum", "adam"]
    assert all(float(line.split()[1]) > 0 for line in lines)
    assert all(points(curve) == 100 for curve in tab.race_val_curves.values())
    assert "val" in tab.message_label.text()
    tab.val_spin.setValue(0.0)
    assert not any(curve.isVisible() for curve in tab.race_val_curves.values())


def test_a_race_with_validation_keeps_its_loss_legend_in_a_short_window(qtbot, tab) -> None:
    tab.resize(1300, 600)  # six entries (one per racer's val curve) were too tall here
    tab.race_check.setChecked(True)
    tab.val_spin.setValue(0.2)
    qtbot.wait(50)  # the plots' resize signals
    labels = [label.text for _, label in tab.loss_legend.items]
    assert labels == ["gd", "momentum", "adam", "dashed: val"]
    assert tab.loss_legend.isVisible()


def fresh_fit(**settings) -> dict:
    """What a fresh run of the engine returns for these settings (the tab's others at their
    defaults, as the CLI's are): ``python -m engine fit`` without the process, whose JSON
    tests/engine/test_fit_cli.py checks."""
    from engine.fit.trainer import fit_job
    from engine.jobs import JobContext

    return fit_job(settings, JobContext())


@pytest.mark.parametrize("lr, epochs", [
    (1e-3, 100),  # validation improves to the very end: the final parameters are the best
    (1e-2, 300),  # validation bottoms out early and rises again
])
def test_lowest_validation_loss_marker_readout_and_a_fresh_run_agree(qtbot, tab, lr,
                                                                    epochs) -> None:
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("mlp"))
    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("adam"))
    tab.lr_spin.setValue(lr)
    tab.val_spin.setValue(0.3)
    tab.epochs_spin.setValue(epochs)
    for _ in range(3):  # a few Steps first: each ends a job, as a Pause does
        click(qtbot, tab.step_button)
        wait_idle(qtbot, tab)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    expected = fresh_fit(model="mlp", optimizer="adam", lr=lr, val_fraction=0.3, epochs=epochs)
    best_epoch, best_loss = expected["best_val_epoch"], expected["best_val_loss"]
    assert tab.best_val_line.value() == best_epoch and tab.best_val == (best_epoch, best_loss)
    xs, ys = tab.val_curve.getOriginalDataset()
    assert ys[xs == best_epoch].tolist() == [best_loss] == [ys.min()]  # the marker is on it
    assert tab.val_label.text() == f"{expected['val_loss']:.6g}"
    assert f"val loss {expected['val_loss']:.4f} (lowest {best_loss:.4f} at epoch " \
           f"{best_epoch})" in tab.message_label.text()
    assert tab.is_overfitting() == (best_epoch < epochs)


def test_readout_summary_and_a_fresh_run_name_one_train_loss(qtbot, tab) -> None:
    """The readout ends at the final parameters' train loss, as the summary and the CLI do;
    the book's number (before the last update) stays on the curve, named in the note."""
    tab.val_spin.setValue(0.9)
    tab.epochs_spin.setValue(1_000_000)
    click(qtbot, tab.play_button)
    qtbot.waitUntil(lambda: points(tab.train_curve) > 0, timeout=RUN_TIMEOUT_MS)
    assert "before epoch" in tab.readout_note.text()  # during the run: the book's print
    click(qtbot, tab.stop_button)
    wait_idle(qtbot, tab)
    tab.epochs_spin.setValue(300)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    final = fresh_fit(val_fraction=0.9, epochs=300)["train_loss"]
    assert tab.last_result["train_loss"] == final
    assert tab.loss_label.text() == f"{final:.6g}"
    assert "At the final parameters (w = " in tab.message_label.text()
    assert f"train loss {final:.6f}" in tab.message_label.text()
    assert tab.readout_note.text().startswith("Losses at the parameters shown, after epoch 300's")
    book_print = tab.train_curve.getOriginalDataset()[1][-1]
    assert f"{book_print:.6g}" != f"{final:.6g}"  # two measurements, each named for its own

    click(qtbot, tab.step_button)  # a new run, paused after one epoch: at its parameters too
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "paused" and tab.epoch_label.text() == "1"
    assert tab.loss_label.text() == f"{tab.last_result['train_loss']:.6g}"
    assert tab.loss_label.text() != f"{tab.train_curve.getOriginalDataset()[1][-1]:.6g}"


def test_the_line_is_drawn_over_the_sessions_range_within_float32(qtbot, tab) -> None:
    from engine.fit.data import FLOAT32_MAX

    tab.set_data(FitData((-3e38, 0.0, 3e38), (0.0, 1.0, 2.0)))  # padded: past float32
    xs, ys = tab.prediction_curve.getOriginalDataset()  # not clipped to the view
    assert xs.tolist() == [tab.session.curve_x[0], tab.session.curve_x[-1]] \
        == [-FLOAT32_MAX, FLOAT32_MAX]
    assert ys.tolist() == pytest.approx([-0.1 * FLOAT32_MAX, 0.1 * FLOAT32_MAX])  # w=1, b=0
    tab.race_check.setChecked(True)  # a race draws its leader's line over the same range
    tab.epochs_spin.setValue(3)
    tab.set_data(FitData((10.0, 20.0), (1.0, 2.0)))
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.prediction_curve.getOriginalDataset()[0].tolist() == [9.0, 21.0]


def test_the_readout_shows_what_plain_pytorch_computes(qtbot, tab) -> None:
    from tests.engine.test_fit import plain_torch_fit

    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("adam"))
    tab.lr_spin.setValue(0.1)
    tab.epochs_spin.setValue(500)
    tab.val_spin.setValue(0.2)
    tab.seed_spin.setValue(7)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    _, val, w, b, final_train = plain_torch_fit("adam", 0.1, 500, 0.1, 0.2, 7)
    assert tab.loss_label.text() == f"{final_train:.6g}"
    assert tab.val_label.text() == f"{val:.6g}"
    assert tab.params_label.text() == f"w = {w:.5g}, b = {b:.5g}"


def test_mlp_shows_overfitting(qtbot, tab) -> None:
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("mlp"))
    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("adam"))
    tab.val_spin.setValue(0.3)
    tab.epochs_spin.setValue(600)
    assert not tab.surface_view.isVisible()
    assert points(tab.val_points) == 3 and points(tab.train_points) == 8
    tab.log_check.setChecked(True)
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert points(tab.val_curve) == 600
    assert tab.is_overfitting()
    best_epoch = tab.last_result["best_val_epoch"]
    assert tab.best_val_line.value() == best_epoch
    assert tab.overfit_region.getRegion() == (best_epoch, 600)
    assert points(tab.prediction_curve) > 2  # the MLP's curve, not a straight line
    assert "40 parameters" in tab.params_label.text()


def test_settings_are_remembered(qtbot, app_state, tab) -> None:
    from gui.tabs.linear_fit import LinearFitTab

    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("momentum"))
    tab.lr_spin.setValue(0.005)
    tab.val_spin.setValue(0.2)
    again = LinearFitTab(app_state)
    qtbot.addWidget(again)
    assert again.optimizer_combo.currentData() == "momentum"
    assert again.lr_spin.value() == pytest.approx(0.005)
    assert again.val_spin.value() == pytest.approx(0.2)

    # hand-edited or stale values keep the defaults (a too-large one broke the tab for good)
    for name, value in (("epochs", "99999999999"), ("lr", "nan"), ("input_scale", "inf"),
                        ("hidden", "-5")):
        app_state.settings.setValue(f"linear_fit/{name}", value)
    fresh = LinearFitTab(app_state)
    qtbot.addWidget(fresh)
    assert fresh.epochs_spin.value() == 5000 and fresh.lr_spin.value() == pytest.approx(0.01)
    assert fresh.scale_spin.value() == pytest.approx(0.1) and fresh.hidden_spin.value() > 0


def test_close_mid_run_stops_and_joins(qtbot, app_state) -> None:
    from gui.tabs.linear_fit import LinearFitTab

    widget = LinearFitTab(app_state)
    qtbot.addWidget(widget)
    widget.epochs_spin.setValue(10_000_000)
    widget.play()
    qtbot.waitUntil(lambda: points(widget.train_curve) > 0, timeout=RUN_TIMEOUT_MS)
    widget.shutdown()
    assert not widget.is_running()
    widget.close()


def test_screenshot_shows_the_book_fit(qtbot, tab) -> None:
    def wait(predicate, seconds):
        qtbot.waitUntil(predicate, timeout=int(seconds * 1000))

    tab.prepare_screenshot(wait)
    assert tab.last_result["status"] == "done"
    assert len(tab.train_losses) == 5000 and len(tab.path_w) == 5000
    # the curve clips to the view, whose range catches up with the run's end at the next layout
    qtbot.waitUntil(lambda: points(tab.train_curve) == 5000, timeout=5000)
    assert points(tab.path_curve) > 100


def test_switching_device_applies_to_the_next_run(qtbot, tab, app_state) -> None:
    tab.epochs_spin.setValue(200)
    app_state.set_device("cuda:7")  # a GPU this machine does not have
    click(qtbot, tab.play_button)
    assert not tab.is_running()
    assert "not available here" in tab.message_label.text()
    app_state.set_device("cpu")
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["status"] == "done" and tab.last_result["device"] == "cpu"


def test_a_paused_run_resumes_on_its_own_device(qtbot, tab, app_state) -> None:
    # the job moves the session to the device it is started with: the session's, not the
    # menu's new choice (that applies from the next Reset)
    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    click(qtbot, tab.step_button)
    wait_idle(qtbot, tab)
    app_state.set_device("cuda:7")  # a GPU this machine does not have
    assert "next Reset" in statuses[-1]
    click(qtbot, tab.step_button)
    wait_idle(qtbot, tab)
    assert tab.last_result["epochs"] == 2 and tab.last_result["device"] == "cpu"


def test_in_a_1024x600_window_the_run_buttons_readout_and_message_are_in_view(
        qtbot, tab) -> None:
    tab.resize(1024, 530)  # what a 1024×600 window leaves the tab
    from PySide6.QtWidgets import QScrollArea

    # scrolled down to the seed
    tab.findChild(QScrollArea).verticalScrollBar().setValue(10_000)
    tab.scale_spin.setValue(1.0)  # diverges: a long message
    click(qtbot, tab.play_button)
    wait_idle(qtbot, tab)
    qtbot.wait(50)
    assert "diverged at epoch" in tab.message_label.text()
    for widget in (tab.play_button, tab.readout_box, tab.grads_label, tab.message_label):
        assert widget.visibleRegion().boundingRect() == widget.rect(), widget


def test_a_click_while_a_csv_is_read_is_refused_not_lost_under_the_file(qtbot, tab, monkeypatch,
                                                                        app_state, tmp_path):
    import threading

    import gui.tabs.linear_fit as linear_fit

    release = threading.Event()
    real_read = linear_fit.read_csv_job

    def held_read(path, ctx):
        release.wait(timeout=30)
        return real_read(path, ctx)

    monkeypatch.setattr(linear_fit, "read_csv_job", held_read)
    shown: list[str] = []
    monkeypatch.setattr(app_state, "show_status", lambda text, *_: shown.append(text))
    csv_file = tmp_path / "three.csv"
    csv_file.write_text("1,2\n2,4\n3,6\n")
    assert tab.load_csv_file(str(csv_file))
    try:
        before = len(tab.data)
        tab.click_at_scene(tab.data_plot.vb.mapViewToScene(QPointF(70.0, 0.0)))
        assert len(tab.data) == before and "Still reading the CSV" in shown[-1]
    finally:
        release.set()  # the reader never outlives the test
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=10_000)
    assert len(tab.data) == 3
