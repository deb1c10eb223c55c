"""The main window: three tabs, the Device menu, Help → About, a status bar, remembered layout.

The window is built and shown before PyTorch is imported; each tab starts as a "Loading PyTorch…"
placeholder and is replaced by the real tab once :meth:`MainWindow.on_torch_ready` is called.
"""

from __future__ import annotations

import importlib
import logging
import platform
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QEventLoop, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine import __version__
from gui.app_state import ALL_GPUS, AppState

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

# (title, module, class, screenshot file stem)
TAB_SPECS = (
    ("Classify", "gui.tabs.classify", "ClassifyTab", "classify"),
    ("Linear fit", "gui.tabs.linear_fit", "LinearFitTab", "linear-fit"),
    ("CIFAR-10", "gui.tabs.cifar", "CifarTab", "cifar-10"),
)


class _Placeholder(QWidget):
    """Shown in a tab until its real widget can be built (or if it failed to build)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        layout.addStretch(1)
        layout.addWidget(self.label)
        layout.addStretch(1)


class MainWindow(QMainWindow):
    def __init__(self, app_state: AppState) -> None:
        super().__init__()
        self.app = app_state
        self.app.dialog_parent = self
        self.setWindowTitle("TorchDesk")
        icon = RESOURCES / "icons" / "torchdesk.svg"
        if icon.exists():
            self.setWindowIcon(QIcon(str(icon)))
        self.setAcceptDrops(True)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)
        self.jobs_left_running = False  # set on close: a job did not stop in time
        self.tab_widgets: dict[str, QWidget] = {}
        for title, *_ in TAB_SPECS:
            placeholder = _Placeholder("Loading PyTorch…")
            self.tabs.addTab(placeholder, title)
            self.tab_widgets[title] = placeholder
        self._pending_paths: list[str] = []
        self.device_note: str | None = None  # why the saved device was not taken

        self.device_label = QLabel("Device: cpu")
        self.statusBar().addPermanentWidget(self.device_label)
        self.app.status_message.connect(self._show_status_message)
        self.app.device_changed.connect(self._on_device_changed)
        self.app.use_in_classify.connect(self._route_to_classify)

        self._build_menus()
        self._restore_settings()
        self.statusBar().showMessage("Loading PyTorch…")

    # ---- menus ----------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, shortcut, method in (("&Open photos…", "Ctrl+O", "choose_files"),
                                       ("Open &folder…", "Ctrl+Shift+O", "choose_folder")):
            action = QAction(text, self)
            action.setShortcut(shortcut)
            action.triggered.connect(lambda _=False, m=method: self._classify_dialog(m))
            file_menu.addAction(action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        self.device_menu = self.menuBar().addMenu("&Device")
        self.device_group = QActionGroup(self)
        self.device_group.setExclusive(True)
        self.device_group.triggered.connect(lambda action: self.app.set_device(action.data()))
        self._set_device_entries([("cpu", "CPU")])

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About TorchDesk", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def _set_device_entries(self, entries: list[tuple[str, str]],
                            unusable: frozenset[str] = frozenset()) -> None:
        self.device_menu.clear()
        for action in self.device_group.actions():
            self.device_group.removeAction(action)
        for device_id, label in entries:
            action = QAction(label, self, checkable=True)
            action.setData(device_id)
            action.setEnabled(device_id not in unusable)  # shown, with the reason in its label
            action.setChecked(device_id == self.app.device)
            self.device_group.addAction(action)
            self.device_menu.addAction(action)

    def device_actions(self) -> list[QAction]:
        return self.device_group.actions()

    def set_devices(self, devices: list) -> None:
        """Fill the Device menu from ``list_devices()`` and apply the saved choice."""
        entries = [(d.id, d.label) for d in devices]
        self._device_labels = dict(entries)
        unusable = frozenset(d.id for d in devices if d.problem)
        gpus = [d for d in devices if d.kind in ("cuda", "rocm") and not d.problem]
        self.app.usable_gpus = [d.id for d in gpus]
        if len(gpus) > 1:
            entries.append((ALL_GPUS, f"All GPUs ({len(gpus)}, CIFAR-10 training)"))
            self._device_labels[ALL_GPUS] = f"All {len(gpus)} GPUs"
        saved = str(self.app.settings.value("device", "cpu"))
        available = [device_id for device_id, _ in entries if device_id not in unusable]
        self.device_note = None  # shown once "PyTorch loaded." would have been shown
        if saved not in available:
            if saved != "cpu":
                self.device_note = f"Saved device {saved} is not available; using the CPU."
                self.app.show_status(self.device_note, 8000)
            saved = "cpu"
        self.app.set_device(saved)
        self._set_device_entries(entries, unusable)
        self._on_device_changed(self.app.device)

    def _on_device_changed(self, device: str) -> None:
        label = getattr(self, "_device_labels", {}).get(device, device)
        self.device_label.setText(f"Device: {label}")
        for action in self.device_group.actions():
            action.setChecked(action.data() == device)

    def _show_status_message(self, text: str, timeout_ms: int) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def about_text(self) -> str:
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import qVersion

        lines = [
            f"TorchDesk {__version__}",
            f"Python {platform.python_version()}",
            f"Qt {qVersion()} (PySide6 {pyside_version})",
        ]
        if self.app.torch_ready:
            import torch
            import torchvision

            cuda = torch.version.cuda or "none"
            available = "available" if torch.cuda.is_available() else "no GPU found"
            lines += [
                f"PyTorch {torch.__version__}",
                f"torchvision {torchvision.__version__}",
                f"CUDA {cuda} ({available})",
            ]
        else:
            lines.append("PyTorch: still loading")
        return "\n".join(lines)

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About TorchDesk",
                          "PyTorch's everyday jobs in a window.\n\n" + self.about_text(),
                          QMessageBox.StandardButton.Ok, self)
        box.open()

    # ---- tabs -----------------------------------------------------------------------------
    def on_torch_ready(self, devices: list) -> None:
        """Torch is imported: build the real tabs and the Device menu."""
        self.app.torch_ready = True
        self.set_devices(devices)
        current = self.tabs.currentIndex()
        for index, (title, module_name, class_name, _) in enumerate(TAB_SPECS):
            widget = self._build_tab(title, module_name, class_name)
            old = self.tabs.widget(index)
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, widget, title)
            old.deleteLater()
            self.tab_widgets[title] = widget
        self.tabs.setCurrentIndex(current)
        if self.device_note:  # says more than "loaded": keep it in view
            self.statusBar().showMessage(self.device_note, 8000)
        else:
            self.statusBar().showMessage("PyTorch loaded.", 5000)
        if self._pending_paths:
            paths, self._pending_paths = self._pending_paths, []
            self.open_paths(paths)

    def _build_tab(self, title: str, module_name: str, class_name: str) -> QWidget:
        try:
            return getattr(importlib.import_module(module_name), class_name)(self.app)
        except Exception as exc:  # one broken tab must not take the whole window down
            log.exception("building the %s tab failed", title)
            return _Placeholder(f"The {title} tab could not start: {type(exc).__name__}: {exc}")

    def on_torch_failed(self, message: str) -> None:
        for title in self.tab_widgets:
            widget = self.tab_widgets[title]
            if isinstance(widget, _Placeholder):
                widget.label.setText(f"PyTorch could not be loaded: {message}")
        self.app.show_error("PyTorch could not be loaded", message)

    def tab(self, title: str) -> QWidget:
        return self.tab_widgets[title]

    # ---- photos from outside: command line and drops ------------------------------------
    def open_paths(self, paths: list[str]) -> None:
        """Hand image files/folders to the Classify tab (queued until it exists)."""
        classify = self.tab_widgets.get("Classify")
        if not self.app.torch_ready or not hasattr(classify, "add_paths"):
            self._pending_paths.extend(paths)
            return
        self.tabs.setCurrentWidget(classify)
        classify.add_paths(paths)

    def _classify_dialog(self, method: str) -> None:
        """File → Open photos… / Open folder…: the Classify tab's own dialog."""
        classify = self.tab_widgets.get("Classify")
        if not hasattr(classify, method):
            self.app.show_status("The Classify tab is not ready yet.", 4000)
            return
        self.tabs.setCurrentWidget(classify)
        getattr(classify, method)()

    def _route_to_classify(self, description: dict) -> None:
        classify = self.tab_widgets.get("Classify")
        if hasattr(classify, "use_trained_model"):
            self.tabs.setCurrentWidget(classify)
            classify.use_trained_model(description)
        else:
            self.app.show_error("Use in Classify", "The Classify tab is not available.")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Files dropped on a tab go to it where it takes them (a dataset on the CIFAR-10 tab,
        a CSV on Linear fit); anything else goes to Classify."""
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        take_dropped = getattr(self.tabs.currentWidget(), "take_dropped_paths", None)
        if take_dropped is not None and take_dropped(paths):
            return
        self.open_paths(paths)

    # ---- settings, closing, screenshots ---------------------------------------------------
    def _restore_settings(self) -> None:
        geometry = self.app.settings.value("window/geometry")
        # Qt refuses a geometry saved on a screen of another size (False): the default size
        if not (isinstance(geometry, QByteArray) and not geometry.isEmpty()
                and self.restoreGeometry(geometry)):
            screen = self.screen().availableGeometry() if self.screen() else None
            width, height = SCREENSHOT_SIZE  # also the size screenshots are taken at
            if screen is not None:  # a small laptop screen: fill it rather than overflow it
                width, height = min(width, screen.width()), min(height, screen.height())
            self.resize(width, height)
        try:
            index = int(self.app.settings.value("window/tab", 0))
        except (TypeError, ValueError):
            index = 0
        if 0 <= index < self.tabs.count():
            self.tabs.setCurrentIndex(index)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.app.settings.setValue("window/geometry", self.saveGeometry())
        self.app.settings.setValue("window/tab", self.tabs.currentIndex())
        for title, widget in self.tab_widgets.items():
            shutdown = getattr(widget, "shutdown", None)
            if shutdown is not None:
                try:
                    if shutdown() is False:
                        self.jobs_left_running = True
                        log.warning("the %s tab's job did not stop in time", title)
                except Exception:
                    log.exception("shutting a tab down failed")
        self.app.settings.sync()
        super().closeEvent(event)

    def save_screenshots(self, directory: Path, timeout_s: float = 600) -> list[Path]:
        """Put real content on each tab, grab it to ``DIR/<tab>.png``; returns the files."""
        directory.mkdir(parents=True, exist_ok=True)
        self.resize(*SCREENSHOT_SIZE)  # the same pictures whatever the screen (offscreen: 800×600)
        written = []
        for title, _module, _cls, stem in TAB_SPECS:
            widget = self.tab_widgets[title]
            self.tabs.setCurrentWidget(widget)
            prepare = getattr(widget, "prepare_screenshot", None)
            if prepare is not None:
                prepare(lambda predicate, seconds=timeout_s: wait_until(predicate, seconds))
            wait_until(lambda: False, 0.3)  # let the last progress batch draw
            path = directory / f"{stem}.png"
            if not self.grab().save(str(path)):
                raise OSError(f"cannot write the screenshot {path}")
            written.append(path)
        return written


SCREENSHOT_SIZE = (1280, 820)


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Spin the event loop until ``predicate()`` is true or ``timeout_s`` passes."""
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(20)
    deadline = QTimer()
    deadline.setSingleShot(True)
    result = {"ok": predicate()}
    if result["ok"]:
        return True

    def poll() -> None:
        if predicate():
            result["ok"] = True
            loop.quit()

    timer.timeout.connect(poll)
    deadline.timeout.connect(loop.quit)
    timer.start()
    deadline.start(int(timeout_s * 1000))
    loop.exec()
    timer.stop()
    deadline.stop()
    return result["ok"]

