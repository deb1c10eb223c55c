"""The shell: tabs, Device menu, About, remembered settings, drops, closing mid-job."""

import time

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QWidget

from engine.devices import DeviceInfo, list_devices
from gui.app_state import ALL_GPUS
from gui.bridge import JobRunner
from gui.main_window import MainWindow


@pytest.fixture
def window(qtbot, app_state):
    win = MainWindow(app_state)
    qtbot.addWidget(win)
    win.show()
    return win


def test_window_title_and_tabs_before_torch_loads(window):
    assert window.windowTitle() == "TorchDesk"
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Classify", "Linear fit", "CIFAR-10"]
    assert "Loading PyTorch" in window.statusBar().currentMessage()
    assert "still loading" in window.about_text()


def test_torch_ready_builds_tabs_and_device_menu(window):
    window.on_torch_ready(list_devices())
    assert window.app.torch_ready
    assert [a.data() for a in window.device_actions()][0] == "cpu"
    about = window.about_text()
    for name in ("TorchDesk", "Python", "PyTorch", "torchvision", "Qt", "CUDA"):
        assert name in about
    assert window.device_label.text().startswith("Device: cpu")


def test_the_window_fits_an_800_by_600_screen_on_every_tab(window, qtbot):
    window.on_torch_ready(list_devices())
    classify = window.tab_widgets["Classify"]
    qtbot.waitUntil(lambda: classify.loaded_model is not None, timeout=60_000)
    classify.download_panel.show()  # with a long line in it, as while a model downloads
    classify.download_label.setText("Downloading ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1 · "
                                    "1.2 of 2.5 GB · 12 MB/s · 1 min 50 s left")
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        least = window.minimumSizeHint()
        # the frame and a taskbar take some of the screen
        assert least.width() <= 780 and least.height() <= 560, window.tabs.tabText(index)


def _fake_devices():
    return [
        DeviceInfo("cpu", "cpu", "Test CPU", 8 * 10**9),
        DeviceInfo("cuda:0", "cuda", "Fake GPU A", 80 * 10**9),
        DeviceInfo("cuda:1", "cuda", "Fake GPU B", 80 * 10**9),
    ]


def test_device_choice_applies_is_shown_and_remembered(window, app_state, qsettings):
    window.set_devices(_fake_devices())
    labels = [a.text() for a in window.device_actions()]
    assert any("Fake GPU A (80.0 GB)" in label for label in labels)
    assert [a.data() for a in window.device_actions()][-1] == ALL_GPUS
    seen = []
    app_state.device_changed.connect(seen.append)
    gpu_action = next(a for a in window.device_actions() if a.data() == "cuda:1")
    gpu_action.trigger()
    assert app_state.device == "cuda:1"
    assert seen == ["cuda:1"]
    assert "Fake GPU B" in window.device_label.text()
    assert qsettings.value("device") == "cuda:1"
    app_state.set_device(ALL_GPUS)
    assert app_state.single_device == "cuda:0"


def test_saved_device_that_is_gone_falls_back_to_cpu(window, app_state, qsettings):
    qsettings.setValue("device", "cuda:3")
    window.set_devices(_fake_devices())
    assert app_state.device == "cpu"
    assert "not available" in window.statusBar().currentMessage()


def test_geometry_and_tab_are_remembered(qtbot, app_state, qsettings):
    first = MainWindow(app_state)
    qtbot.addWidget(first)
    first.show()
    first.resize(700, 500)
    first.tabs.setCurrentIndex(2)
    first.close()
    second = MainWindow(app_state)
    qtbot.addWidget(second)
    assert second.tabs.currentIndex() == 2
    assert (second.width(), second.height()) == (700, 500)


def test_a_geometry_qt_cannot_restore_gives_the_default_size(qtbot, app_state, qsettings):
    """Qt refuses a geometry saved on a screen of another size, as it does this one: the
    window then opens at its default size, not at Qt's tiny initial one."""
    from PySide6.QtCore import QByteArray

    from gui.main_window import SCREENSHOT_SIZE

    qsettings.setValue("window/geometry", QByteArray(b"not a saved geometry"))
    win = MainWindow(app_state)
    qtbot.addWidget(win)
    screen = win.screen().availableGeometry()
    assert (win.width(), win.height()) == (min(SCREENSHOT_SIZE[0], screen.width()),
                                           min(SCREENSHOT_SIZE[1], screen.height()))


class _TabWithJob(QWidget):
    def __init__(self):
        super().__init__()
        self.runner = JobRunner(self)
        self.received_paths = []

    def start(self):
        def endless(config, ctx):
            while not ctx.stopped():
                time.sleep(0.005)
            return {"status": "stopped"}

        self.runner.start(endless)

    def shutdown(self):
        return self.runner.shutdown()

    def add_paths(self, paths):
        self.received_paths.extend(paths)

    def choose_files(self):
        self.received_paths.append("files chosen")

    def choose_folder(self):
        self.received_paths.append("folder chosen")


def test_closing_mid_job_stops_and_joins_the_worker(window):
    tab = _TabWithJob()
    window.tab_widgets["Linear fit"] = tab
    tab.start()
    assert tab.runner.is_running()
    window.close()
    assert not tab.runner.is_running()
    assert window.jobs_left_running is False


def test_a_job_that_will_not_stop_is_noted_on_close(window):
    class Stuck(QWidget):
        def shutdown(self):
            return False  # what JobRunner.shutdown says when its thread outlives the wait

    window.tab_widgets["Linear fit"] = Stuck()
    window.close()
    assert window.jobs_left_running is True


def test_dropped_files_go_to_the_classify_tab(window, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    tab = _TabWithJob()
    window.tab_widgets["Classify"] = tab
    window.app.torch_ready = True
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert tab.received_paths == [str(photo)]


def _drop(window, path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))


def test_a_drop_goes_to_the_tab_showing_where_it_takes_those_files(window, tmp_path):
    class TakesCsv(QWidget):
        def __init__(self):
            super().__init__()
            self.taken = []

        def take_dropped_paths(self, paths):
            if all(p.endswith(".csv") for p in paths):
                self.taken.extend(paths)
                return True
            return False

    classify, showing = _TabWithJob(), TakesCsv()
    window.tab_widgets["Classify"] = classify
    window.app.torch_ready = True
    window.tabs.addTab(showing, "Takes CSV")
    window.tabs.setCurrentWidget(showing)

    _drop(window, tmp_path / "points.csv")
    assert showing.taken == [str(tmp_path / "points.csv")]
    assert classify.received_paths == []

    _drop(window, tmp_path / "photo.jpg")  # not the showing tab's: Classify's
    assert classify.received_paths == [str(tmp_path / "photo.jpg")]


def test_ctrl_o_opens_the_classify_tabs_dialogs_from_any_tab(window, qtbot):
    from PySide6.QtTest import QTest

    tab = _TabWithJob()
    window.tab_widgets["Classify"] = tab
    window.tabs.setCurrentIndex(2)
    window.activateWindow()
    qtbot.waitActive(window)
    QTest.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)
    assert tab.received_paths == ["files chosen", "folder chosen"]


def test_paths_given_before_torch_loads_are_kept_until_then(window):
    window.open_paths(["/tmp/a.jpg"])
    tab = _TabWithJob()
    window.tab_widgets["Classify"] = tab
    window.app.torch_ready = True
    window.open_paths(["/tmp/b.jpg"])
    assert tab.received_paths == ["/tmp/b.jpg"]
    assert window._pending_paths == ["/tmp/a.jpg"]


def test_show_error_is_visible_and_non_blocking(window, app_state):
    app_state.show_error("Bad CSV", "line 3: 'abc' is not a number")
    assert app_state.last_error == ("Bad CSV", "line 3: 'abc' is not a number")
    assert "Bad CSV" in window.statusBar().currentMessage()


def test_a_gpu_this_build_cannot_run_is_shown_disabled(window, app_state, qsettings):
    old = DeviceInfo("cuda:2", "cuda", "Old GPU", 4 * 10**9,
                     problem="compute capability 6.1 is not among this PyTorch build's")
    qsettings.setValue("device", "cuda:2")
    window.set_devices([*_fake_devices(), old])
    action = next(a for a in window.device_actions() if a.data() == "cuda:2")
    assert not action.isEnabled() and "not usable: compute capability 6.1" in action.text()
    assert app_state.device == "cpu"
    all_gpus = next(a for a in window.device_actions() if a.data() == ALL_GPUS)
    assert "All GPUs (2," in all_gpus.text()


def test_all_gpus_runs_single_device_jobs_on_the_first_usable_gpu(window, app_state):
    old = DeviceInfo("cuda:0", "cuda", "Old GPU", 4 * 10**9,
                     problem="compute capability 6.1 is not among this PyTorch build's")
    window.set_devices([DeviceInfo("cpu", "cpu", "Test CPU", 8 * 10**9), old,
                        DeviceInfo("cuda:1", "cuda", "GPU B", 80 * 10**9),
                        DeviceInfo("cuda:2", "cuda", "GPU C", 80 * 10**9)])
    app_state.set_device(ALL_GPUS)
    assert app_state.single_device == "cuda:1"  # not the GPU this build cannot run
