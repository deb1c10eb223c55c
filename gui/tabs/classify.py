"""The Classify tab: drop photos in, see what a pretrained ImageNet network thinks they are.

All work runs as engine jobs (``engine.classify.jobs``) on one :class:`gui.bridge.JobRunner`; the
engine keeps the loaded model between jobs, so a dropped photo only costs decode + one forward.
Requests that arrive while a job runs (a second drop, a model change) wait in a short queue.
"""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from PySide6.QtCore import QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QIcon,
    QImage,
    QKeySequence,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.classify import jobs as classify_jobs
from engine.classify.images import IMAGE_SUFFIXES, natural_sort_key, skipped_note
from engine.classify.zoo import params_text
from engine.cli import printable
from engine.downloads import megabytes
from gui.app_state import AppState
from gui.bridge import JobRunner
from gui.samples import book_photo
from gui.text import plural
from gui.widgets.classify_views import (
    ClassifyImagePane,
    ClassifyTopBars,
    heatmap_rgba,
)
from gui.widgets.images import rgb_to_qimage

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

DEFAULT_MODEL = "efficientnet_lite0"
DETAIL_THUMBNAIL = 640
ROW_THUMBNAIL = 40
COLUMNS = ("File", "Top-1", "Prob.", "Top-5", "ms")
COLUMN_TIPS = ("The photo (hover for its full path)", "The class the net thinks most likely",
               "The net's probability for its top-1 class", "The five most likely classes",
               "Milliseconds for this photo: decoding, resizing and its share of the batch")
PROB_COLUMN = 2
TIME_COLUMN = 4
#: The widest text each number column shows: the column is made just wide enough for it.
WIDEST_NUMBERS = {PROB_COLUMN: "100.0%", TIME_COLUMN: "99999"}
#: The download panel's progress bar is this many M-widths wide.
DOWNLOAD_BAR_EMS = 20
ORIGINAL_CAPTION = "Original"
NET_VIEW_CAPTION = "What the net sees (after resize, crop)"


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number, not its text."""

    def __init__(self, value: float | None, text: str) -> None:
        super().__init__(text)
        self.value = value if value is not None else float("-inf")

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _NumberItem):
            return self.value < other.value
        return super().__lt__(other)


class _FileNameItem(QTableWidgetItem):
    """The File cell: sorts in natural order, as folders are listed (p2 before p10). It keeps
    its row's ``path`` as Python has it: Qt's strings drop the undecodable bytes a file name
    may hold (kept by Python as lone surrogates), and that path would name no file."""

    def __init__(self, path: str) -> None:
        name = os.path.basename(path)
        super().__init__(printable(name))
        self.path = path
        self.sort_key = natural_sort_key(name)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _FileNameItem):
            return self.sort_key < other.sort_key
        return super().__lt__(other)


class HubDialog(QDialog):
    """Ask for a Torch Hub repository and entry point (the book's pytorch/vision, resnet18)."""

    def __init__(self, parent: QWidget | None, repo: str, entry: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Load from Torch Hub")
        form = QFormLayout(self)
        self.repo_edit = QLineEdit(repo)
        self.repo_edit.setPlaceholderText("owner/name[:ref] or a local folder")
        self.entry_edit = QLineEdit(entry)
        form.addRow("Repository:", self.repo_edit)
        form.addRow("Entry point:", self.entry_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class PastedImages:
    """Pasted or dropped images (not files) saved as PNGs for the engine to read: one folder
    for each tab, kept while it lives (its rows may show them again) and removed when it shuts
    down or the app exits. A folder's lock file is locked while its tab lives, so the next tab
    to paste removes the folders whose lock nobody holds (a crashed session's)."""

    ROOT = "torchdesk-pasted"
    SESSION_PREFIX = "session-"
    LOCK_NAME = ".lock"
    #: What has no lock to tell whether it is in use (the loose PNGs of older versions, their
    #: session folders without a lock file) goes after a week.
    UNLOCKED_PREFIXES = ("session-", "pasted-")
    KEEP_UNLOCKED_S = 7 * 24 * 3600

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._lock: BinaryIO | None = None  # held open (and locked) while the folder is in use

    def new_path(self) -> Path | None:
        """Where the next image goes (a PNG not yet written); None if the folder cannot be
        made."""
        try:
            folder = self._session_folder()
        except OSError:
            return None
        return folder / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}.png"

    def save(self, image: QImage) -> Path | None:
        """Save ``image`` as a new PNG; its path, or None if it cannot be written."""
        path = self.new_path()
        return path if path is not None and image.save(str(path)) else None

    def remove(self) -> None:
        """Remove this session's images (the tab is going away)."""
        atexit.unregister(self.remove)
        if self._lock is not None:
            self._lock.close()  # first: Windows removes no open file
            self._lock = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _session_folder(self) -> Path:
        if self._folder is None or not self._folder.is_dir():
            self.remove()
            self._folder, self._lock = self._new_session_folder()
            atexit.register(self.remove)  # also when the app ends without closing the window
        return self._folder

    def _new_session_folder(self) -> tuple[Path, BinaryIO]:
        temp = Path(tempfile.gettempdir())
        try:
            folder = self._new_folder_in(temp / self.ROOT)
        except OSError:  # another user's: this user's own beside it (Windows' temp is the user's)
            folder = self._new_folder_in(
                temp / f"{self.ROOT}-{os.getuid() if hasattr(os, 'getuid') else 'own'}")
        lock = open(folder / self.LOCK_NAME, "wb")  # noqa: SIM115 (held until remove)
        _lock_file(lock, wait=True)  # a tab checking whether this is a leftover lets go at once
        lock.write(f"{os.getpid()}\n".encode())  # an empty lock file is not taken yet
        lock.flush()
        return folder, lock

    def _new_folder_in(self, root: Path) -> Path:
        root.mkdir(exist_ok=True)
        self._remove_leftovers(root)
        return Path(tempfile.mkdtemp(prefix=self.SESSION_PREFIX, dir=root))

    def _remove_leftovers(self, root: Path) -> None:
        for entry in root.iterdir():
            try:
                if self._is_leftover(entry):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
            except OSError:
                pass  # gone already, or not ours to remove

    def _is_leftover(self, entry: Path) -> bool:
        if entry.name.startswith(self.SESSION_PREFIX):
            try:
                with open(entry / self.LOCK_NAME, "rb") as lock:
                    if not _lock_file(lock, wait=False):
                        return False  # its tab is alive
                    if lock.read():
                        return True  # its tab took the lock and is gone
            except FileNotFoundError:
                pass
        too_old = time.time() - self.KEEP_UNLOCKED_S
        return entry.name.startswith(self.UNLOCKED_PREFIXES) and entry.stat().st_mtime < too_old


def _lock_file(file: BinaryIO, wait: bool) -> bool:
    """Lock ``file`` until it is closed, waiting for another process's lock or not; whether it
    is locked now."""
    try:
        if fcntl is not None:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        else:
            msvcrt.locking(file.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class ClassifyTab(QWidget):
    """Model picker, drop zone, per-image results with Grad-CAM, and a results table for folders."""

    #: (path, written): a pasted image's PNG, saved on a helper thread
    _image_saved = Signal(str, bool)

    def __init__(self, app: AppState) -> None:
        super().__init__()
        self.app = app
        self.setAcceptDrops(True)
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.returned.connect(self._on_returned)
        self.runner.errored.connect(self._on_errored)
        self.runner.finished.connect(self._start_next)
        self._queue: list[tuple[str, Callable, dict]] = []
        self._job_kind: str | None = None
        self._catalog: dict[str, dict] = {}
        self.model_config: dict[str, Any] = {"model": DEFAULT_MODEL}
        self.loaded_model: dict | None = None  # info of the model the engine holds now
        self._loaded_config: dict[str, Any] = dict(self.model_config)
        self._running_config: dict[str, Any] = dict(self.model_config)
        self._loaded_device: str | None = None  # where the model in use last loaded
        self._running_device: str | None = None  # the device the running job was given
        self.results: dict[str, dict] = {}  # path → JSON result (top, error) for the table
        self._name_items: dict[str, QTableWidgetItem] = {}  # path → its row's File cell
        self.current: dict | None = None  # the result in the detail view (with images)
        self.current_cam: dict | None = None  # {"class_index", "cam"} shown over it
        self._download_started = 0.0
        self._cancelling = False  # Cancel was pressed in the download panel for the running job
        self._folder_config: dict | None = None  # the folder run in progress, to redo it
        self._failure_note: str | None = None  # why the model in use is not the one asked for
        self._model_generation = 0  # counts model loads; each row keeps the one it came from
        self.pasted = PastedImages()
        self._savers: list[threading.Thread] = []  # pasted images being written
        self._unsaved = 0  # pasted images not yet written or not yet handed on
        self._image_saved.connect(self._on_image_saved)
        self._shut_down = False
        self._build()
        self._fill_models()
        remembered = str(self.app.settings.value("classify/model", DEFAULT_MODEL))
        if remembered != DEFAULT_MODEL and self._catalog.get(remembered, {}).get("on_disk"):
            self._select_model_item(remembered)  # a downloaded model, used last time
            self.model_config = {"model": remembered}
            self._show_model_info(self._catalog[remembered], "loading…")
        self.app.device_changed.connect(self._on_device_changed)
        paste = QShortcut(QKeySequence(QKeySequence.StandardKey.Paste), self)
        paste.activated.connect(self.paste)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.activated.connect(self.stop_or_cancel)
        self._request("load", classify_jobs.load_model_job, {})  # ready before the first drop

    # ---- building ----------
    def _build(self) -> None:
        root = QVBoxLayout(self)

        model_row = QHBoxLayout()
        model_label = QLabel("&Model:")
        model_row.addWidget(model_label)
        self.model_combo = QComboBox()
        model_label.setBuddy(self.model_combo)
        # long model names are cut in the closed box (whole in its list): the row fits 800 px
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(22)
        self.model_combo.activated.connect(self._on_model_chosen)
        model_row.addWidget(self.model_combo, 1)
        self.import_button = QPushButton("Import weights…")
        self.import_button.setToolTip("Load a local .pth file into the chosen architecture")
        self.import_button.clicked.connect(self._choose_weights_file)
        self.hub_button = QPushButton("Torch Hub…")
        self.hub_button.setToolTip(
            "Load a model from Torch Hub: a GitHub repository and its entry point")
        self.hub_button.clicked.connect(self._choose_hub_model)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open photos (Ctrl+O)")
        self.open_button.clicked.connect(self.choose_files)
        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("Open a folder of photos (Ctrl+Shift+O)")
        self.folder_button.clicked.connect(self.choose_folder)
        for button in (self.import_button, self.hub_button, self.open_button, self.folder_button):
            model_row.addWidget(button)
        root.addLayout(model_row)
        self.model_info_label = QLabel()
        self.model_info_label.setStyleSheet("color: gray")
        self.model_info_label.setWordWrap(True)  # a long line wraps, never widens the window
        root.addWidget(self.model_info_label)

        self.download_panel = QWidget()
        download_row = QHBoxLayout(self.download_panel)
        download_row.setContentsMargins(0, 0, 0, 0)
        self.download_label = QLabel()
        # the label takes the room the bar leaves, whatever its text: a longer line ('… · 12 s
        # left', a long file name) no longer narrows the bar, and one too long is cut, whole in
        # its tooltip
        self.download_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                          QSizePolicy.Policy.Preferred)
        self.download_bar = QProgressBar()
        self.download_bar.setRange(0, 1000)
        em = self.fontMetrics().horizontalAdvance("M")
        self.download_bar.setFixedWidth(DOWNLOAD_BAR_EMS * em)
        self.download_cancel = QPushButton("Cancel")
        self.download_cancel.clicked.connect(self.cancel_download)
        download_row.addWidget(self.download_label, 1)
        download_row.addWidget(self.download_bar)
        download_row.addWidget(self.download_cancel)
        self.download_panel.hide()
        root.addWidget(self.download_panel)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.drop_zone = QLabel("Drop photos or folders here\n(or Open…, or paste with Ctrl+V)")
        self.drop_zone.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.drop_zone.setMinimumHeight(70)
        self.drop_zone.setFrameShape(QFrame.Shape.StyledPanel)
        self.drop_zone.setStyleSheet("border: 2px dashed gray; border-radius: 8px; color: gray;")
        left_layout.addWidget(self.drop_zone)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, tip in enumerate(COLUMN_TIPS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setIconSize(QSize(ROW_THUMBNAIL, ROW_THUMBNAIL))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self._fit_number_columns()
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        left_layout.addWidget(self.table, 1)
        progress_row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the folder run (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._choose_csv)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear_results)
        progress_row.addWidget(self.progress_bar, 1)
        for button in (self.stop_button, self.export_button, self.clear_button):
            progress_row.addWidget(button)
        left_layout.addLayout(progress_row)
        splitter.addWidget(left)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        panes = QHBoxLayout()
        # blank while empty: the captions under them name them (not twice, as before)
        self.original_pane = ClassifyImagePane()
        self.original_pane.setAccessibleName(ORIGINAL_CAPTION)
        self.net_view_pane = ClassifyImagePane()
        self.net_view_pane.setAccessibleName(NET_VIEW_CAPTION)
        panes.addWidget(self.original_pane, 3)
        panes.addWidget(self.net_view_pane, 2)
        right_layout.addLayout(panes, 1)
        captions = QHBoxLayout()
        self.original_caption = QLabel(ORIGINAL_CAPTION)
        self.net_view_caption = QLabel(NET_VIEW_CAPTION)
        for caption in (self.original_caption, self.net_view_caption):
            caption.setWordWrap(True)
        captions.addWidget(self.original_caption, 3)
        captions.addWidget(self.net_view_caption, 2)
        right_layout.addLayout(captions)
        self.result_label = QLabel("Drop a photo to classify it.")
        self.result_label.setWordWrap(True)
        right_layout.addWidget(self.result_label)
        self.bars = ClassifyTopBars(5)
        self.bars.class_clicked.connect(self.show_grad_cam)
        right_layout.addWidget(self.bars)
        cam_row = QHBoxLayout()
        self.cam_check = QCheckBox("Grad-CAM heatmap (click a class)")
        self.cam_check.setToolTip("Colour the photo where the net found the class clicked above")
        self.cam_check.setChecked(True)
        self.cam_check.toggled.connect(lambda _on: self._update_overlay())
        cam_row.addWidget(self.cam_check)
        cam_row.addStretch(1)
        right_layout.addLayout(cam_row)
        splitter.addWidget(right)
        splitter.setSizes([640, 640])  # at 1024 px the table's five columns need half
        root.addWidget(splitter, 1)
        self._update_buttons()

    def _fit_number_columns(self) -> None:
        """Probability and Time as wide as their header or their widest number, no wider, so
        the file name keeps room on a small screen. Measured once: fitting to the rows would
        look at every row each time one is added."""
        padding = 4 * self.table.style().pixelMetric(
            self.table.style().PixelMetric.PM_FocusFrameHMargin, None, self.table) + 8
        for column, widest in WIDEST_NUMBERS.items():
            self.table.resizeColumnToContents(column)  # no rows yet: the header's own width
            content = self.table.fontMetrics().horizontalAdvance(widest) + padding
            self.table.setColumnWidth(column, max(self.table.columnWidth(column), content))

    # ---- the model ----------
    def _fill_models(self) -> None:
        """Fill the picker from the engine's catalogue (torchvision's metadata, on-disk state)."""
        try:
            models = classify_jobs.catalog_job(None, None)["models"]
        except Exception as exc:  # torchvision missing or broken: the offline default still works
            from engine.classify.zoo import default_model_info

            models = [default_model_info().to_dict()]
            self.app.show_status(f"Only the offline model is available ({exc}).", 8000)
        self._catalog = {m["id"]: m for m in models}
        self.model_combo.clear()
        for info in models:
            self._add_model_item(info)
        self._select_model_item(DEFAULT_MODEL)
        self._show_model_info(self._catalog[DEFAULT_MODEL])

    def _add_model_item(self, info: dict) -> None:
        self.model_combo.addItem(_model_item_text(info), info["id"])
        self.model_combo.setItemData(self.model_combo.count() - 1, _model_summary(info),
                                     Qt.ItemDataRole.ToolTipRole)

    def _select_model_item(self, model_id: str) -> None:
        index = self.model_combo.findData(model_id)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)

    def _show_model_info(self, info: dict, note: str = "") -> None:
        self.model_info_label.setText(_model_summary(info) + (f" — {note}" if note else ""))

    def available_models(self) -> list[str]:
        return [self.model_combo.itemData(i) for i in range(self.model_combo.count())]

    def set_model(self, model_id: str) -> None:
        """Choose a catalogue model (downloads its weights if needed) and load it."""
        self._select_model_item(model_id)
        self.model_config = {"model": model_id}
        self._show_model_info(self._catalog.get(model_id, {"title": model_id}), "loading…")
        self._load_and_refresh()

    def _load_and_refresh(self) -> None:
        """Load ``model_config``, then classify again with it the photo on show and every
        listed one (rows are replaced as the results come; a folder run in progress is redone
        whole). If the load fails, the model still loaded redoes them: no row is left claiming
        another model's answer."""
        unfinished: list[str] = []  # inputs of a folder run this change interrupts
        if self.runner.is_running() and self._job_kind == "folder":
            unfinished = list(self._folder_config.get("unfinished", self._folder_config["paths"]))
            self.runner.stop()
        # a redo still waiting (the model changed again before it ran) is folded into this one
        for _kind, _job, config in self._queue:
            unfinished += config.get("unfinished", [])
        self._queue = [q for q in self._queue if "unfinished" not in q[2]]
        self._request("load", classify_jobs.load_model_job, {})
        if self.current is not None and not self.current.get("error"):
            self._request("single", classify_jobs.classify_job,
                          self._single_config(self.current["path"]))
        # the rows' paths are read when it starts: by then it is known which model is loaded
        self._request("folder", classify_jobs.classify_job,
                      {**self._folder_config_for([]), "unfinished": unfinished})

    def _redo_paths(self, config: dict) -> list[str]:
        """For a redo after a model change: the listed photos that another model classified,
        then the interrupted folder inputs."""
        stale = [path for path in (self._row_path(row) for row in range(self.table.rowCount()))
                 if self.results.get(path, {}).get("generation") != self._model_generation]
        if stale:
            self.app.show_status(f"Classifying the {plural(len(stale), 'listed photo')} "
                                 "again with the model now loaded…", 6000)
        return stale + config["unfinished"]

    def _on_model_chosen(self, index: int) -> None:
        model_id = self.model_combo.itemData(index)
        if model_id and model_id != self.model_config.get("model") or (
            model_id and (self.model_config.get("weights_file") or self.model_config.get("hub"))
        ):
            self.set_model(model_id)

    def load_weights_file(self, path: str, arch: str | None = None) -> None:
        """Import weights…: ``path`` (.pth) into ``arch``; by default the architecture its file
        name starts with (torchvision's names, e.g. ``resnet18-f37072fd.pth``), else the one
        chosen in the picker."""
        arch = (arch or guess_architecture(path, self.available_models())
                or self.model_combo.currentData() or DEFAULT_MODEL)
        self._select_model_item(arch)  # programmatic: no activated signal, so no second load
        self.model_config = {"model": arch, "weights_file": path}
        self._show_model_info(self._catalog.get(arch, {"title": arch}),
                              f"loading {os.path.basename(path)}…")
        self._load_and_refresh()

    def load_hub_model(self, repo: str, entry: str) -> None:
        """Load from Torch Hub (``repo`` on GitHub or a local folder with hubconf.py)."""
        self.model_config = {"hub": {"repo": repo, "entry": entry}}
        self._show_model_info({"title": f"{entry} from {repo}"}, "loading…")
        self._load_and_refresh()

    def use_trained_model(self, description: dict) -> None:
        """Classify with a model handed over by the CIFAR-10 tab (a TorchScript export)."""
        if description.get("format") != "torchscript" or not description.get("path"):
            self.app.show_error("Use in Classify", "Only TorchScript exports can be used here "
                                f"(got {description.get('format', 'nothing')}).")
            return
        name = description.get("model", "model")
        classes = description.get("class_names") or []
        self.model_config = {"torchscript": {
            "path": description["path"], "class_names": classes,
            "input_size": int(description.get("input_size", 32)),
            "title": f"{name} trained in TorchDesk ({len(classes)} classes)"}}
        self._show_model_info({"title": self.model_config["torchscript"]["title"]}, "loading…")
        self._load_and_refresh()

    def _choose_weights_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import weights", str(Path.home()), "PyTorch weights (*.pth *.pt *.bin);;All (*)")
        if not path:
            return
        ids = self.available_models()
        guess = guess_architecture(path, ids) or self.model_combo.currentData() or DEFAULT_MODEL
        titles = [self._catalog.get(i, {}).get("title", i) for i in ids]
        title, ok = QInputDialog.getItem(
            self, "Import weights", f"Architecture of {os.path.basename(path)}:", titles,
            ids.index(guess) if guess in ids else 0, False)
        if ok and title in titles:
            self.load_weights_file(path, ids[titles.index(title)])

    def _choose_hub_model(self) -> None:
        settings = self.app.settings
        dialog = HubDialog(self, str(settings.value("classify/hub_repo", "pytorch/vision")),
                           str(settings.value("classify/hub_entry", "resnet18")))
        if dialog.exec() == QDialog.DialogCode.Accepted:
            repo, entry = dialog.repo_edit.text().strip(), dialog.entry_edit.text().strip()
            settings.setValue("classify/hub_repo", repo)
            settings.setValue("classify/hub_entry", entry)
            self.load_hub_model(repo, entry)

    def _on_device_changed(self, _device: str) -> None:
        """Move the model to the new device now, then redo the photo on show and any folder
        run in progress (its rows are replaced as the new results come)."""
        folder = None
        if self.runner.is_running() and self._job_kind == "folder":
            folder = self._folder_config
            self.runner.stop()
        self._failure_note = None
        self._request("load", classify_jobs.load_model_job, {})
        if self.current is not None and not self.current.get("error"):
            self._request("single", classify_jobs.classify_job, self._single_config(
                self.current["path"]))
        if folder is not None:
            self.app.show_status("Device changed: classifying the folder again on it.", 6000)
            self._request("folder", classify_jobs.classify_job, folder)

    # ---- input ----------
    def add_paths(self, paths: list[str]) -> None:
        """Classify image files and folders (drops, Open…, paste, the command line)."""
        paths = [str(p) for p in paths if str(p)]
        if not paths:
            return
        if len(paths) == 1 and not os.path.isdir(paths[0]):
            self._request("single", classify_jobs.classify_job, self._single_config(paths[0]))
        else:
            self._request("folder", classify_jobs.classify_job, self._folder_config_for(paths))

    @staticmethod
    def _folder_config_for(paths: list[str]) -> dict:
        return {"paths": paths, "top_k": 5, "batch_size": 16, "views": True,
                "thumbnail_size": ROW_THUMBNAIL}

    def _single_config(self, path: str) -> dict:
        return {"paths": [path], "top_k": 5, "views": True, "thumbnail_size": DETAIL_THUMBNAIL,
                "gradcam_limit": 1, "threads": "idle"}

    def choose_files(self) -> None:
        """Open… (and File → Open photos…): pick photos to classify."""
        patterns = " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES))
        paths, _ = QFileDialog.getOpenFileNames(self, "Open photos", str(Path.home()),
                                                f"Images ({patterns});;All files (*)")
        if paths:
            self.add_paths(paths)

    def choose_folder(self) -> None:
        """Open folder… (and File → Open folder…): classify a folder of photos."""
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of photos", str(Path.home()))
        if folder:
            self.add_paths([folder])

    def paste(self) -> None:
        """Paste files (copied in a file manager), an image (a screenshot) or a path as text."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return
        if mime.hasUrls():
            paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            if paths:
                self.add_paths(paths)
                return
        if mime.hasImage() and self._add_image_data(QGuiApplication.clipboard().image()):
            return
        text = mime.text().strip() if mime.hasText() else ""
        candidates = [_local_path(line.strip()) for line in text.splitlines()]
        existing = [p for p in candidates if p and os.path.exists(p)]
        if existing:
            self.add_paths(existing)
        else:
            self.app.show_status("The clipboard holds no image or image path.", 4000)

    def _add_image_data(self, image) -> bool:
        """Classify a pasted or dropped image (not a file): saved to a temporary PNG first, on
        a helper thread (a 4K screenshot takes ~0.4 s to encode: the window must not wait)."""
        if not isinstance(image, QImage) or image.isNull():
            return False
        path = self.pasted.new_path()
        if path is None:
            self._cannot_save_image()
            return False

        def save() -> None:
            self._image_saved.emit(str(path), image.save(str(path)))

        saver = threading.Thread(target=save, name="save-pasted-image", daemon=True)
        self._savers.append(saver)
        self._unsaved += 1
        saver.start()
        return True

    def _on_image_saved(self, path: str, written: bool) -> None:
        self._unsaved -= 1
        self._savers = [saver for saver in self._savers if saver.is_alive()]
        if self._shut_down:
            return
        if written:
            self.add_paths([path])
        else:
            self._cannot_save_image()

    def _cannot_save_image(self) -> None:
        self.app.show_error("Classify", "Cannot save the image as a temporary file in "
                            f"{tempfile.gettempdir()}, so it cannot be classified.")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()
            self.drop_zone.setStyleSheet(
                "border: 2px dashed #3b82f6; border-radius: 8px; color: #3b82f6;")

    def dragLeaveEvent(self, event) -> None:  # noqa: N802
        self.drop_zone.setStyleSheet("border: 2px dashed gray; border-radius: 8px; color: gray;")

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.dragLeaveEvent(event)
        mime = event.mimeData()
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)
        elif mime.hasImage() and self._add_image_data(mime.imageData()):
            event.acceptProposedAction()  # an image dragged out of a web browser
        elif mime.hasUrls():
            self.app.show_status("Only files on this computer can be dropped: save the image "
                                 "first, or copy it and paste here.", 6000)

    # ---- jobs ----------
    def _request(self, kind: str, job: Callable, config: dict) -> None:
        """Run ``job`` now, or after the current one (a newer photo replaces a queued photo)."""
        if kind in ("single", "gradcam"):
            self._queue = [q for q in self._queue if q[0] not in ("single", "gradcam")]
        if kind == "load":
            self._queue = [q for q in self._queue if q[0] != "load"]
        self._queue.append((kind, job, config))
        if not self.runner.is_running():
            self._start_next()

    def _start_next(self) -> None:
        self._update_buttons()
        if self.runner.is_running() or not self._queue:
            if not self.runner.is_running():
                self._job_kind = None
            return
        kind, job, config = self._queue.pop(0)
        if "unfinished" in config:
            config = {**config, "paths": self._redo_paths(config)}
            if not config["paths"]:  # every row is the loaded model's already
                self._start_next()
                return
        self._job_kind = kind
        self._cancelling = False
        if kind == "folder":
            self._folder_config = config
        full_config = {**config, **self.model_config}
        self._running_config = dict(self.model_config)
        self._running_device = self.app.single_device
        if kind == "folder":
            self.progress_bar.setFormat("%v / %m images")
            self.progress_bar.setRange(0, 0)
            self.app.show_status("Classifying…")
        self.runner.start(job, full_config, self._running_device)
        self._update_buttons()

    def is_busy(self) -> bool:
        return self.runner.is_running() or bool(self._queue) or self._unsaved > 0

    def stop(self) -> None:
        """Stop the folder run (results so far stay in the table)."""
        self._queue = [q for q in self._queue if q[0] != "folder"]
        self.runner.stop()

    def stop_or_cancel(self) -> None:
        """Esc: cancel the download, the check or the load shown in the download panel, else
        stop the folder run."""
        if self.download_panel.isVisible():
            self.cancel_download()
        elif self.runner.is_running() and self._job_kind == "folder":
            self.stop()

    def cancel_download(self) -> None:
        """Cancel (and Esc) in the download panel: stop the download, the check of the weights
        or the model's load (at the end of the stage under way)."""
        if not self.runner.is_running():
            return
        self.runner.stop()
        self._cancelling = True
        self._set_download_text("Cancelling…")

    def _on_progress(self, batch: list[dict]) -> None:
        for update in batch:
            event = update.get("event")
            if event == "download":
                self._show_download(update)
            elif event == "verify":
                self._show_check(update)
            elif event == "loading":
                self._show_loading(update)
            elif event == "model":
                self.download_panel.hide()
                if self._job_kind == "load":  # rows from before are another load's
                    self._model_generation += 1
                same = self._running_config == self._loaded_config
                self._loaded_device = self._running_device
                if same and self._failure_note and self.loaded_model is not None:
                    # the model in use, reloaded after another failed: keep saying so
                    self.loaded_model = update["model"]
                    self._show_model_info(self.loaded_model, self._failure_note)
                    continue
                self.loaded_model = update["model"]
                self._loaded_config = dict(self._running_config)
                self._failure_note = None
                if set(self._loaded_config) == {"model"}:  # a catalogue model: next time too
                    self.app.settings.setValue("classify/model", self._loaded_config["model"])
                self._remember_model(update["model"])
                seconds = update.get("load_seconds", 0.0)
                note = f"loaded on {self._running_device}" + (
                    f" in {seconds:.1f} s" if seconds > 0.05 else "")
                self._show_model_info(update["model"], note)
            elif event == "result":
                self._on_result(update)
            elif event == "gradcam":
                self._on_grad_cam(update)
            elif event == "note":
                self.app.show_status(update["text"], 6000)

    def _on_returned(self, outcome: dict) -> None:
        self.download_panel.hide()
        kind = self._job_kind
        if outcome.get("status") == "stopped":
            # a folder stopped by a device change runs again at once: no "Stopped." for it
            if not (kind == "folder" and any(q[0] == "folder" for q in self._queue)):
                # a classify job loads its model only when it differs from the one loaded
                if kind == "load" or self._running_config != self._loaded_config:
                    self._restore_loaded_model("not loaded (cancelled)")
                reason = outcome.get("reason")  # what was stopped, while loading the model
                self.app.show_status(f"{reason[0].upper()}{reason[1:]}." if reason else "Stopped.",
                                     8000 if reason else 4000)
        elif kind == "folder":
            rate = outcome.get("images_per_second", 0.0)
            if outcome["classified"] + outcome["failed"] == 0:
                text = "No images found there."
            else:
                text = (f"{plural(outcome['classified'], 'image')} classified, "
                        f"{outcome['failed']} could not be read")
                if outcome.get("skipped"):
                    text += f", {skipped_note(outcome['skipped'])}"
                text += f", in {outcome['seconds']:.1f} s"
                text += f" ({rate:.0f} images/s)." if outcome["classified"] else "."
            self.app.show_status(text, 10000)
            if self.table.rowCount() and not self.table.selectedItems():
                self.table.selectRow(self._first_classified_row())
        self._finish_progress()

    def _on_errored(self, message: str) -> None:
        self.download_panel.hide()
        self._finish_progress()
        failed = self._running_config
        # a job fails while loading when it had a model to load: another model than the one
        # in use, or the one in use on a device it has not loaded on (a device change)
        loading = (self._job_kind == "load" or self._running_config != self._loaded_config
                   or self._running_device != self._loaded_device)
        if loading:
            self._restore_loaded_model("not loaded")
        if loading and (self.model_config == failed
                        or self._loaded_device != self.app.single_device):
            # No model is known to load on this device (it cannot take any, say): each queued
            # job would load one and fail the same way, one dialog after another.
            dropped_folder = any(q[0] == "folder" for q in self._queue)
            self._queue.clear()
            if dropped_folder:
                message += ("\n\nThe folder was not classified: once a model loads (choose "
                            "another device in the Device menu, say), open it again.")
        self.app.show_error("Classify", message)

    def _restore_loaded_model(self, note: str) -> None:
        """After a failed or cancelled load, go back to the model the engine still holds and
        say so: the info line describes the model in use, not the one that failed."""
        failed = self.model_config
        if failed != self._loaded_config:
            self.model_config = dict(self._loaded_config)
            if "model" in self.model_config:
                self._select_model_item(self.model_config["model"])
        if self.loaded_model is not None and failed != self._loaded_config:
            self._failure_note = (f"{_config_title(failed, self._catalog)} {note}; still using "
                                  "this model")
            self._show_model_info(self.loaded_model, self._failure_note)
        else:
            if self.loaded_model is None:  # the start-up model failed: not again next time
                self.app.settings.remove("classify/model")
            self._show_model_info(self._catalog.get(failed.get("model"), {"title": "model"}),
                                  note)

    def _finish_progress(self) -> None:
        if self.progress_bar.maximum() == 0:  # the job ended before its first image
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("")

    def _remember_model(self, info: dict) -> None:
        if info["id"] in self._catalog or info.get("source") == "torchvision":
            self._catalog[info["id"]] = info
            index = self.model_combo.findData(info["id"])
            if index >= 0:
                self.model_combo.setItemText(index, _model_item_text(info))
                self.model_combo.setItemData(index, _model_summary(info),
                                             Qt.ItemDataRole.ToolTipRole)

    def _show_download(self, update: dict) -> None:
        if self._cancelling:  # updates sent before the job saw the stop: keep 'Cancelling…'
            return
        self.download_panel.show()
        total, done = update.get("total"), update["bytes"]
        if total:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(round(1000 * done / total))
        else:
            self.download_bar.setRange(0, 0)
        eta = update.get("eta")
        text = f"Downloading {update['file']}: {megabytes(done)}"
        if total:
            text += f" of {megabytes(total)}"
        text += f" · {megabytes(update['speed'])}/s"
        if eta is not None:
            text += f" · {eta:.0f} s left"
        self._set_download_text(text)

    def _set_download_text(self, text: str) -> None:
        self.download_label.setText(text)
        self.download_label.setToolTip(text)  # whole, where the window is too narrow for it

    def _show_loading(self, update: dict) -> None:
        """A stage of a model's load (reading its weights, building the network, …) in the
        download's panel: its Cancel and Esc stop the load as that stage ends."""
        if self._cancelling:
            return
        self.download_panel.show()
        self.download_bar.setRange(0, 0)  # busy: a stage has no progress of its own
        self._set_download_text(f"Loading {update['model']}: {update['text']}…")

    def _show_check(self, update: dict) -> None:
        """The SHA-256 check of weights (after a download, or once for a copy already on
        disk), in the download's panel: its Cancel and Esc stop it."""
        if self._cancelling:
            return
        self.download_panel.show()
        total, done = update["total"], update["bytes"]
        self.download_bar.setRange(0, 1000)
        self.download_bar.setValue(round(1000 * done / total) if total else 1000)
        what = "the downloaded weights" if update.get("downloaded") else "the weights on disk"
        text = f"Checking {what} ({update['file']}): {megabytes(done)} of {megabytes(total)}"
        eta = update.get("eta")
        if eta is not None and eta >= 1:
            text += f" · {eta:.0f} s left"
        self._set_download_text(text)

    # ---- results ----------
    def _on_result(self, update: dict) -> None:
        result = update["result"]
        total = update.get("total", 1)
        if self._job_kind == "folder":
            if self.progress_bar.maximum() != total:
                self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(update["index"] + 1)
        self._add_row(result)
        if self._job_kind == "single":
            self._show_detail({**result, "device": self._running_device})

    def _add_row(self, result: dict) -> None:
        """Add ``result``'s row, or replace the one its photo has. The cost does not grow with
        the table: the row is found through ``_name_items``, and a sorted table moves just this
        row to its place (Qt does that when the sort column's cell is set) instead of sorting
        everything again."""
        path = result["path"]
        self.results[path] = {k: result.get(k) for k in ("path", "top", "error", "seconds")}
        self.results[path]["model"] = (self.loaded_model or {}).get("title", "")
        self.results[path]["generation"] = self._model_generation
        cells = self._row_cells(result)
        row = self._row_of(path)
        if row is None:
            row = self.table.rowCount()
            self.table.insertRow(row)
        sort_column = self.table.horizontalHeader().sortIndicatorSection()
        # the sort column's cell last: setting it may move the row, and ``row`` with it
        for column in sorted(range(len(cells)), key=lambda c: c == sort_column):
            self.table.setItem(row, column, cells[column])
        self._name_items[path] = cells[0]

    @staticmethod
    def _row_cells(result: dict) -> list[QTableWidgetItem]:
        path = result["path"]
        name = _FileNameItem(path)
        thumb = result.get("thumbnail")
        if thumb is not None:
            name.setIcon(QIcon(QPixmap.fromImage(rgb_to_qimage(thumb)).scaled(
                ROW_THUMBNAIL, ROW_THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation)))
        name.setToolTip(printable(path))
        if result.get("error"):
            cells = [name, QTableWidgetItem("—"), _NumberItem(None, ""),
                     QTableWidgetItem(f"error: {result['error']}"), _NumberItem(None, "")]
            cells[3].setForeground(Qt.GlobalColor.red)
            return cells
        top = result["top"]
        best = top[0]
        return [name, QTableWidgetItem(best["label"]),
                _NumberItem(best["prob"], f"{best['prob']:.1%}"),
                QTableWidgetItem(", ".join(f"{t['label']} {t['prob']:.0%}" for t in top)),
                _NumberItem(result.get("seconds"), f"{1000 * (result.get('seconds') or 0):.0f}")]

    def _first_classified_row(self) -> int:
        for row in range(self.table.rowCount()):
            result = self.results.get(self._row_path(row))
            if result and not result.get("error"):
                return row
        return 0

    def _row_path(self, row: int) -> str | None:
        item = self.table.item(row, 0)
        return item.path if isinstance(item, _FileNameItem) else None

    def _row_of(self, path: str) -> int | None:
        item = self._name_items.get(path)
        return item.row() if item is not None else None

    def _on_row_selected(self) -> None:
        items = self.table.selectedItems()
        if not items:
            return
        path = self._row_path(items[0].row())
        if self.current is not None and self.current["path"] == path:
            return
        result = self.results.get(path)
        if result and result.get("error"):
            self._show_detail(result)
        else:  # runs now, or right after a folder in progress
            self._request("single", classify_jobs.classify_job, self._single_config(path))

    def _show_detail(self, result: dict) -> None:
        self.current = result
        self.current_cam = None
        name = printable(os.path.basename(result["path"]))
        if result.get("error"):
            self.original_pane.set_image(None)
            self.net_view_pane.set_image(None)
            self._update_overlay()
            self._reset_captions()
            self.bars.set_predictions([])
            self.result_label.setText(f"{name}: could not be classified — {result['error']}")
            return
        thumb = result.get("thumbnail")
        original = rgb_to_qimage(thumb) if thumb is not None else None
        box = None
        if original is not None and result.get("crop_box") and result.get("original_size"):
            scale = original.width() / result["original_size"][0]
            left, top, right, bottom = (v * scale for v in result["crop_box"])
            box = QRectF(left, top, right - left, bottom - top)
        self.original_pane.set_image(original, box)
        self.net_view_pane.set_image(rgb_to_qimage(result["net_view"]))
        width, height = result.get("original_size") or (0, 0)
        crop = result["net_view"].shape
        self.original_caption.setText(f"Original {width}×{height} (dashed: the net's crop)")
        self.net_view_caption.setText(f"What the net sees: {crop[1]}×{crop[0]}")
        self.bars.set_predictions(result["top"], selected=result["top"][0]["index"])
        best = result["top"][0]
        model = (self.loaded_model or {}).get("title", "")
        device = result.get("device", self._running_device)  # where it ran, not the menu's now
        self.result_label.setText(
            f"<b>{name}</b>: {best['label']} ({best['prob']:.1%}) — "
            f"{1000 * result.get('seconds', 0):.0f} ms on {device}"
            + (f" with {model}" if model else ""))

    def _reset_captions(self) -> None:
        self.original_caption.setText(ORIGINAL_CAPTION)
        self.net_view_caption.setText(NET_VIEW_CAPTION)

    def show_grad_cam(self, class_index: int) -> None:
        """Grad-CAM for ``class_index`` over the photo in the detail view."""
        if self.current is None or self.current.get("error"):
            return
        if str((self.loaded_model or {}).get("id", "")).startswith("torchscript:"):
            self.app.show_status("Grad-CAM needs a Python model; TorchScript files have no hooks.",
                                 6000)
            return
        self.cam_check.setChecked(True)
        self._request("gradcam", classify_jobs.gradcam_job,
                      {"path": self.current["path"], "class_index": int(class_index),
                       "threads": "idle"})

    def _on_grad_cam(self, update: dict) -> None:
        if self.current is None or update["path"] != self.current["path"]:
            return
        self.current_cam = {"class_index": update["class_index"], "cam": update["cam"],
                            "label": update["label"]}
        self.bars.select(update["class_index"])
        self._update_overlay()
        if not update["cam"].any():  # an empty map looks like no heatmap at all: say why
            self.app.show_status(f"Grad-CAM: no part of this photo raises the score of "
                                 f"{update['label']}, so its heatmap is empty.", 8000)

    def _update_overlay(self) -> None:
        if self.current_cam is None or not self.cam_check.isChecked():
            self.net_view_pane.set_overlay(None)
            self.original_pane.set_overlay(None)
            return
        overlay = rgb_to_qimage(heatmap_rgba(self.current_cam["cam"]))
        self.net_view_pane.set_overlay(overlay)
        self.original_pane.set_overlay(overlay)

    def clear_results(self) -> None:
        """Empty the table and the detail view."""
        self.results.clear()
        self._name_items.clear()
        self.table.setRowCount(0)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.current = None
        self.current_cam = None
        self.original_pane.set_image(None)
        self.net_view_pane.set_image(None)
        self._update_overlay()
        self._reset_captions()
        self.bars.set_predictions([])
        self.result_label.setText("Drop a photo to classify it.")
        self._update_buttons()

    # ---- CSV ----------
    def _choose_csv(self) -> None:
        if not self.results:
            self.app.show_status("Nothing to export yet.", 4000)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export results", str(Path.home() /
                                              "classify-results.csv"), "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> int:
        """Write the table (in its current sort order) to ``path``; returns the row count."""
        rows = []
        for row in range(self.table.rowCount()):
            result = self.results.get(self._row_path(row))
            if result is not None:
                rows.append(result)
        try:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["path", "top1_label", "top1_index", "top1_prob", "top5", "error",
                                 "model"])
                for result in rows:
                    top = result.get("top") or []
                    best = top[0] if top else {"label": "", "index": "", "prob": ""}
                    writer.writerow([
                        printable(result["path"]), best["label"], best["index"],
                        f"{best['prob']:.6f}" if top else "",
                        "; ".join(f"{t['label']}:{t['prob']:.4f}" for t in top),
                        result.get("error") or "",
                        result.get("model") or "",
                    ])
        except OSError as exc:
            self.app.show_error("Export CSV", f"Cannot write {path}: {exc.strerror or exc}")
            return 0
        self.app.show_status(f"Exported {len(rows)} results to {path}.", 6000)
        return len(rows)

    # ---- state, closing, screenshots ----------
    def _update_buttons(self) -> None:
        running = self.runner.is_running()
        self.stop_button.setEnabled(running and self._job_kind == "folder")
        self.export_button.setEnabled(bool(self.results))

    def shutdown(self) -> bool:
        """Stop and join the worker (window closing); False if it is still running."""
        self._queue.clear()
        self._shut_down = True
        stopped = self.runner.shutdown(5000)
        for saver in self._savers:
            saver.join(5)  # before its folder goes
        self.pasted.remove()
        return stopped

    def prepare_screenshot(self, wait: Callable[[Callable[[], bool], float], None]) -> None:
        """Classify the book's bobby.jpg with the offline default and show its Grad-CAM."""
        if self.model_config != {"model": DEFAULT_MODEL}:
            self.set_model(DEFAULT_MODEL)
        if book_photo().is_file():
            self.add_paths([str(book_photo())])
            wait(lambda: not self.is_busy() and self.current_cam is not None, 180)


def guess_architecture(path: str, model_ids: list[str]) -> str | None:
    """The model id a weights file's name starts with (torchvision names its files
    ``<id>-<hash>.pth``, e.g. ``resnet18-f37072fd.pth``); the longest match wins."""
    stem = Path(path).name.lower().split(".")[0]
    matches = [i for i in model_ids if i and (stem == i.lower() or any(
        stem.startswith(i.lower() + sep) for sep in ("-", "_")))]
    return max(matches, key=len) if matches else None


def _local_path(text: str) -> str:
    """A pasted line as a local path: file URLs (percent-encoded, as file managers copy them)
    are decoded; anything else is taken as a path."""
    if text.lower().startswith("file:"):
        url = QUrl(text)
        return url.toLocalFile() if url.isLocalFile() else ""
    return text


def _config_title(config: dict, catalog: dict) -> str:
    """A short name for a model config (for messages)."""
    if config.get("weights_file"):
        return os.path.basename(config["weights_file"])
    if config.get("hub"):
        return f"{config['hub'].get('entry')} from {config['hub'].get('repo')}"
    if config.get("torchscript"):
        return config["torchscript"].get("title") or "the trained model"
    return catalog.get(config.get("model"), {}).get("title", config.get("model") or "model")


def _model_item_text(info: dict) -> str:
    mark = "✓ " if info.get("on_disk") else "↓ "
    top1 = f" — {info['top1']:.1f}%" if info.get("top1") is not None else ""
    return mark + info.get("title", info.get("id", "")) + top1


def _model_summary(info: dict) -> str:
    parts = [info.get("title", info.get("id", "model"))]
    if info.get("top1") is not None:
        parts.append(f"ImageNet top-1 {info['top1']:.1f}%")
    if info.get("params"):
        parts.append(params_text(info["params"]))
    if info.get("gflops") is not None:
        parts.append(f"{info['gflops']:.2f} GFLOPS")
    if info.get("file_mb") is not None:
        parts.append(f"{info['file_mb']:.1f} MB")
    if "on_disk" in info:
        parts.append("on disk" if info["on_disk"] else "not downloaded yet")
    return " · ".join(parts)
