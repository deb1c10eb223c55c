"""What every tab shares: the chosen device, settings, and ways to tell the user things."""

from __future__ import annotations

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

ALL_GPUS = "cuda:all"


class AppState(QObject):
    """Shared application state handed to every tab.

    ``device`` is a device id from ``engine.devices`` ("cpu", "cuda:0", "mps") or ``ALL_GPUS``
    (several CUDA GPUs; only the CIFAR-10 trainer spreads over them, other jobs use the first).
    """

    device_changed = Signal(str)
    status_message = Signal(str, int)  # text, timeout in ms (0 = until replaced)
    use_in_classify = Signal(dict)  # a trained model handed from the CIFAR-10 tab to Classify
    # (title, text): emitted on any thread, shown by show_error on the GUI thread
    error_reported = Signal(str, str)

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else QSettings("TorchDesk", "TorchDesk")
        self._device = "cpu"
        self.usable_gpus: list[str] = []  # what "All GPUs" spans (the Device menu fills it)
        self.torch_ready = False
        self.last_error: tuple[str, str] | None = None
        self.dialog_parent: QWidget | None = None
        self.error_reported.connect(self._show_reported_error)

    @property
    def device(self) -> str:
        return self._device

    @property
    def single_device(self) -> str:
        """The device for jobs that run on one device only: under "All GPUs", the first GPU
        that this PyTorch build can run (cuda:0 may be one it cannot)."""
        if self._device != ALL_GPUS:
            return self._device
        return self.usable_gpus[0] if self.usable_gpus else "cuda:0"

    def set_device(self, device: str) -> None:
        if device != self._device:
            self._device = device
            self.settings.setValue("device", device)
            self.device_changed.emit(device)

    def show_status(self, text: str, timeout_ms: int = 0) -> None:
        self.status_message.emit(text, timeout_ms)

    def _show_reported_error(self, title: str, text: str) -> None:
        self.show_error(title, text)

    def show_error(self, title: str, text: str) -> None:
        """Tell the user about a problem without blocking the event loop (window-modal box)."""
        self.last_error = (title, text)
        self.status_message.emit(f"{title}: {text.splitlines()[0] if text else ''}", 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok,
                          self.dialog_parent)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
