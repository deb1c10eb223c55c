"""The CIFAR-10 tab: pick data, browse it, train a CNN live, read the confusion matrix.

All work runs through :class:`gui.bridge.JobRunner` (data loading and training are engine jobs);
with "All GPUs" chosen in the Device menu, training runs under ``torchrun`` in a child process
(:class:`gui.torchrun.TorchrunProcess`) whose progress lines feed the same view. Curves are
persistent ``PlotDataItem``s updated only from the batched progress handler.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.cifar.cli import short_duration
from engine.cifar.paths import same_path
from engine.classify.images import IMAGE_SUFFIXES
from engine.cli import format_duration
from engine.downloads import MEGABYTE, megabytes
from engine.jobs import JobError
from gui.app_state import ALL_GPUS, AppState
from gui.bridge import JobRunner
from gui.samples import cifar_archive
from gui.text import plural
from gui.torchrun import TorchrunProcess
from gui.widgets.cifar_confusion import ConfusionMatrixView
from gui.widgets.cifar_curves import TrainingCurves
from gui.widgets.cifar_samples import ClassSampleGrid
from gui.widgets.common import (
    ScientificSpinBox,
    SettingControl,
    control_value,
    scroll_area,
    set_control_value,
)
from gui.widgets.images import rgb_pixmap

MODEL_LABELS = {
    "fast": "Fast (residual, speed recipe)",
    "net": "Net (book)",
    "netwidth": "NetWidth (book)",
    "netdropout": "NetDropout (book)",
    "netbatchnorm": "NetBatchNorm (book)",
    "netdepth": "NetDepth (book)",
    "netres": "NetRes (book)",
    "netresdeep": "NetResDeep (book)",
}
OPTIMIZER_LABELS = {"sgd": "SGD + momentum", "nesterov": "SGD + Nesterov", "adam": "Adam",
                    "adamw": "AdamW", "muon": "Muon (filters) + Nesterov SGD"}
SCHEDULE_LABELS = {"constant": "Constant", "warmup_linear": "Warm-up, then linear decay",
                   "warmup_cosine": "Warm-up, then cosine decay"}
PRECISION_LABELS = {"auto": "Auto (bf16/fp16 where fast)", "fp32": "float32", "bf16": "bfloat16",
                    "fp16": "float16 (GPU)"}
RECIPE_FIELD_LABELS = {"optimizer": "optimizer", "lr": "learning rate", "momentum": "momentum",
                       "weight_decay": "weight decay", "label_smoothing": "label smoothing",
                       "schedule": "schedule", "batch_size": "batch size", "epochs": "epochs",
                       "flip": "flip", "translate": "shift"}
# what a settings error calls each field (the rest keep their config key)
SETTING_LABELS = {**RECIPE_FIELD_LABELS, "seed": "seed", "precision": "precision",
                  "max_train": "train images"}
# The end of a refused setting's message on Resume, which passes none of the recipe's fields
# (SettingError.whose): the command line's advice to set or leave out a flag cannot be followed.
RESUME_ADVICE = {
    "checkpoint": " (the checkpoint's value, which Resume keeps: start a new run with Train "
                  "to choose another)",
    "differs": "; Resume goes on with the checkpoint's {name}: start a new run with Train to "
               "choose another"}
CIFAR2 = ("airplane", "bird")
MAX_SHOWN_MISTAKES = 240


class CifarTab(QWidget):
    """Data source picker and browser, training controls, live curves, confusion matrix."""

    def __init__(self, app: AppState) -> None:
        super().__init__()
        self.app = app
        self.data_info: dict[str, Any] | None = None
        self._data_path: str | None = None  # where data_info came from
        # a run was asked for: the last results go once it has started (only runs report
        # "start", so a refused one leaves it set for the next)
        self._results_pending_clear = False
        self._loading_path: str | None = None
        self._load_cancelled = False
        self._data_notes: list[str] = []  # what the last load said (the cache is not written)
        self._shown_recipe_type: str | None = None  # device kind whose Fast recipe is shown
        self._recipe_stale = False  # the device changed during a run: show its recipe after
        self._recipe_defaults: dict[str, Any] = {}  # the shown recipe's defaults, as shown
        self._showing_recipe = False  # values set by the tab itself are not the user's changes
        self._checkpoint_recipe_shown = False
        # the user's seed and train images while a resumed checkpoint's are shown
        self._users_run_values: dict[str, Any] = {}
        self._resume_notes: list[str] = []  # the trainer's notes on the run being resumed
        # a checkpoint that does not hold the model its run trained (its last write failed):
        # Export and Use in Classify would hand on an older model
        self._unsaved_checkpoint: str | None = None
        self.last_result: dict[str, Any] | None = None  # the last completed run
        self.stopped_result: dict[str, Any] | None = None
        self.selected_cell: tuple[int, int] | None = None
        self._stopping = False  # Stop was pressed: the label says so until the run ends
        self._class_checks: dict[str, QListWidgetItem] = {}

        self.data_runner = JobRunner(self)
        self.data_runner.progress.connect(self._on_data_progress)
        self.data_runner.returned.connect(self._on_data_loaded)
        self.data_runner.errored.connect(self._on_data_error)
        self.data_runner.finished.connect(self._update_buttons)
        self.train_runner = JobRunner(self)
        self.export_runner = JobRunner(self)
        self.export_runner.returned.connect(self._on_exported)
        self.export_runner.errored.connect(self._on_export_error)
        self.export_runner.finished.connect(self._on_export_finished)
        self._export_title = "Export"  # what an export's error is said under
        self._after_export: Callable[[dict[str, Any]], None] | None = None
        self.torchrun = TorchrunProcess(self, name_setting=lambda exc: str(_labelled(exc)))
        for runner in (self.train_runner, self.torchrun):
            runner.progress.connect(self._on_train_progress)
            runner.returned.connect(self._on_train_returned)
            runner.errored.connect(self._on_train_error)
            runner.finished.connect(self._on_train_finished)

        self._build_ui()
        self.app.device_changed.connect(self._on_device_changed)
        self._restore_settings()
        self._on_model_changed()
        self._update_buttons()

    # ---- layout ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        controls = QWidget()
        form_box = QVBoxLayout(controls)
        form_box.addWidget(self._build_data_group())
        self.model_group = self._build_model_group()
        form_box.addWidget(self.model_group)
        form_box.addStretch(1)
        scroll = scroll_area(controls, horizontal=False)
        left = QWidget()  # the Run group (Train, Stop, …) stays in view below the scrolling
        left_box = QVBoxLayout(left)
        left_box.setContentsMargins(0, 0, 0, 0)
        left_box.addWidget(scroll, 1)
        left_box.addWidget(self._build_run_group())
        left.setMinimumWidth(350)

        self.pages = QTabWidget()
        self.pages.addTab(self._build_training_page(), "Training")
        self.pages.addTab(self._build_data_page(), "Data")

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.pages)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

    def _build_data_group(self) -> QGroupBox:
        box = QGroupBox("Data")
        layout = QVBoxLayout(box)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("folder, .tar.gz, or torchvision folder")
        self.path_edit.returnPressed.connect(lambda: self.load_data())  # as Load does
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        self.browse_folder_button = QPushButton("Folder…")
        self.browse_folder_button.clicked.connect(self._choose_folder)
        self.browse_archive_button = QPushButton("Archive…")
        self.browse_archive_button.clicked.connect(self._choose_archive)
        row.addWidget(self.browse_folder_button)
        row.addWidget(self.browse_archive_button)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda: self.load_data())
        self.download_button = QPushButton("Download CIFAR-10…")
        self.download_button.setToolTip("torchvision CIFAR-10 (170 MB, MD5-checked)")
        self.download_button.clicked.connect(self._choose_download_folder)
        self.cancel_load_button = QPushButton("Cancel")
        self.cancel_load_button.clicked.connect(self.cancel_load)
        for button in (self.load_button, self.download_button, self.cancel_load_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.data_progress = QProgressBar()
        self.data_progress.setTextVisible(True)
        self.data_progress.setFormat("")
        layout.addWidget(self.data_progress)
        # what the load said beside its progress (the cache cannot be written): stays until
        # the next load
        self.data_note_label = QLabel("")
        self.data_note_label.setWordWrap(True)
        self.data_note_label.setTextFormat(Qt.TextFormat.PlainText)  # paths may hold '<'
        self.data_note_label.setVisible(False)
        layout.addWidget(self.data_note_label)
        self.class_list = QListWidget()
        self.class_list.setMaximumHeight(150)
        self.class_list.itemChanged.connect(lambda _item: self._on_classes_changed())
        layout.addWidget(self.class_list)
        presets = QHBoxLayout()
        self.all_classes_button = QPushButton("All classes")
        self.all_classes_button.clicked.connect(lambda: self.set_classes(None))
        self.cifar2_button = QPushButton("CIFAR-2 (airplane, bird)")
        self.cifar2_button.clicked.connect(lambda: self.set_classes(list(CIFAR2)))
        presets.addWidget(self.all_classes_button)
        presets.addWidget(self.cifar2_button)
        layout.addLayout(presets)
        self.stats_label = QLabel("No data loaded.")
        self.stats_label.setWordWrap(True)
        layout.addWidget(self.stats_label)
        return box

    def _build_model_group(self) -> QGroupBox:
        box = QGroupBox("Model and recipe")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        for name, label in MODEL_LABELS.items():
            self.model_combo.addItem(label, name)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._on_model_changed())
        form.addRow("Model", self.model_combo)
        self.params_label = QLabel("")
        form.addRow("Parameters", self.params_label)
        self.optimizer_combo = self._combo(OPTIMIZER_LABELS)
        form.addRow("Optimizer", self.optimizer_combo)
        # the ranges are the trainer's: a checkpoint's recipe shows as it is
        self.lr_spin = ScientificSpinBox(1e-8, 100.0, 0.01)
        self.lr_spin.setToolTip("Type 0.001 or 1e-3; the arrows step 1, 2, 5, 10…")
        form.addRow("Learning rate", self.lr_spin)
        self.momentum_spin = self._double(0.0, 0.9999, 4, 0.9)
        form.addRow("Momentum", self.momentum_spin)
        self.weight_decay_spin = ScientificSpinBox(0.0, 10.0, 0.0)
        self.weight_decay_spin.setSingleStep(1e-4)  # the first step up from 0
        form.addRow("Weight decay", self.weight_decay_spin)
        self.smoothing_spin = self._double(0.0, 0.99, 2, 0.0)
        form.addRow("Label smoothing", self.smoothing_spin)
        self.schedule_combo = self._combo(SCHEDULE_LABELS)
        form.addRow("Schedule", self.schedule_combo)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(2, 1_000_000)
        form.addRow("Batch size", self.batch_spin)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1_000_000)
        form.addRow("Epochs", self.epochs_spin)
        aug = QHBoxLayout()
        self.flip_check = QCheckBox("Flip")
        self.translate_spin = QSpinBox()
        self.translate_spin.setRange(0, 8)
        self.translate_spin.setSuffix(" px shift")
        aug.addWidget(self.flip_check)
        aug.addWidget(self.translate_spin)
        form.addRow("Augment", aug)
        changes = QHBoxLayout()
        self.recipe_label = QLabel("")
        self.recipe_label.setWordWrap(True)
        self.defaults_button = QPushButton("Defaults")
        self.defaults_button.setToolTip("Forget your changes to this recipe and show its defaults")
        self.defaults_button.clicked.connect(self.restore_recipe_defaults)
        changes.addWidget(self.recipe_label, 1)
        changes.addWidget(self.defaults_button)
        form.addRow("", changes)
        for name, control in self._recipe_controls().items():
            edited = lambda *_, name=name: self._on_recipe_edited(name)  # noqa: E731
            if isinstance(control, QComboBox):
                control.currentIndexChanged.connect(edited)
            elif isinstance(control, QCheckBox):
                control.toggled.connect(edited)
            else:
                control.valueChanged.connect(edited)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed_spin)
        self.precision_combo = self._combo(PRECISION_LABELS)
        form.addRow("Precision", self.precision_combo)
        self.compile_check = QCheckBox("torch.compile")
        form.addRow("", self.compile_check)
        self.max_train_spin = QSpinBox()
        self.max_train_spin.setRange(0, 1_000_000)
        self.max_train_spin.setSpecialValueText("all")
        self.max_train_spin.setSingleStep(1000)
        form.addRow("Train images", self.max_train_spin)
        for name in ("seed", "max_train"):
            self._run_controls()[name].valueChanged.connect(
                lambda *_, name=name: self._on_run_value_edited(name))
        return box

    def _build_run_group(self) -> QGroupBox:
        box = QGroupBox("Run")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setToolTip("Written every epoch and when you stop")
        self.checkpoint_edit.textChanged.connect(lambda _text: self._update_buttons())
        row.addWidget(QLabel("Checkpoint"))
        row.addWidget(self.checkpoint_edit, 1)
        layout.addLayout(row)
        buttons = QGridLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.start_training())
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_training)
        self.resume_button = QPushButton("Resume…")
        self.resume_button.clicked.connect(self._choose_resume)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._choose_export)
        self.classify_button = QPushButton("Use in Classify")
        self.classify_button.clicked.connect(self.use_in_classify)
        buttons.addWidget(self.train_button, 0, 0)
        buttons.addWidget(self.stop_button, 0, 1)
        buttons.addWidget(self.resume_button, 1, 0)
        buttons.addWidget(self.export_button, 1, 1)
        buttons.addWidget(self.classify_button, 2, 0, 1, 2)
        layout.addLayout(buttons)
        return box

    def _build_training_page(self) -> QWidget:
        page = QWidget()
        layout = QGridLayout(page)
        self.epoch_progress = QProgressBar()
        self.epoch_progress.setFormat("epoch progress")
        self.speed_label = QLabel("—")
        # room for a long line: the bar keeps its width as the numbers change
        self.speed_label.setMinimumWidth(self.speed_label.fontMetrics().horizontalAdvance(
            "88,888 images/s · ETA 8:88:88 · loss 8.888") + 8)
        self.speed_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        status = QHBoxLayout()
        status.addWidget(self.epoch_progress, 1)
        status.addWidget(self.speed_label)
        layout.addLayout(status, 0, 0, 1, 2)

        self.curves = TrainingCurves()
        layout.addWidget(self.curves.loss_plot, 1, 0)
        layout.addWidget(self.curves.acc_plot, 1, 1)

        self.confusion_plot = ConfusionMatrixView()
        self.confusion_plot.cell_clicked.connect(self.show_misclassified)
        layout.addWidget(self.confusion_plot, 2, 0)

        mistakes = QWidget()
        mistakes_layout = QVBoxLayout(mistakes)
        mistakes_layout.setContentsMargins(0, 0, 0, 0)
        self.result_label = QLabel("Train a model to see its confusion matrix; click a cell of "
                                   "it to see those test images.")
        self.result_label.setWordWrap(True)
        self.mistakes_label = QLabel("")
        self.mistakes_label.setWordWrap(True)  # a long line would squeeze the heatmap's column
        self.mistakes_list = QListWidget()
        self.mistakes_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.mistakes_list.setIconSize(QSize(48, 48))
        self.mistakes_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.mistakes_list.setMovement(QListWidget.Movement.Static)
        mistakes_layout.addWidget(self.result_label)
        mistakes_layout.addWidget(self.mistakes_label)
        mistakes_layout.addWidget(self.mistakes_list, 1)
        layout.addWidget(mistakes, 2, 1)
        layout.setRowStretch(1, 1)
        layout.setRowStretch(2, 1)
        layout.setColumnStretch(0, 1)  # halves whatever the plots' titles and labels
        layout.setColumnStretch(1, 1)
        return page

    def _build_data_page(self) -> QWidget:
        self.sample_grid = ClassSampleGrid()
        return scroll_area(self.sample_grid)

    @staticmethod
    def _combo(labels: dict[str, str]) -> QComboBox:
        combo = QComboBox()
        for key, label in labels.items():
            combo.addItem(label, key)
        return combo

    @staticmethod
    def _double(low: float, high: float, decimals: int, value: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(decimals)
        spin.setSingleStep(10 ** -max(1, decimals - 2))
        spin.setValue(value)
        return spin

    @staticmethod
    def _select(combo: QComboBox, key: str) -> None:
        index = combo.findData(key)
        if index >= 0:
            combo.setCurrentIndex(index)

    # ---- settings -------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        settings = self.app.settings
        self.path_edit.setText(str(settings.value("cifar/data", "")))
        self._select(self.model_combo, str(settings.value("cifar/model", "fast")))
        default_checkpoint = self._default_checkpoint_path()
        self.checkpoint_edit.setText(str(settings.value("cifar/checkpoint", default_checkpoint)))
        for name, control in self._run_controls().items():
            value = settings.value(f"cifar/{name}")
            if value is not None:
                set_control_value(control, value)  # a stale value keeps the default

    def _save_settings(self) -> None:
        settings = self.app.settings
        settings.setValue("cifar/data", self.path_edit.text())
        settings.setValue("cifar/model", self.model_combo.currentData())
        settings.setValue("cifar/checkpoint", self.checkpoint_edit.text())
        for name, control in self._run_controls().items():
            settings.setValue(f"cifar/{name}",
                              self._users_run_values.get(name, control_value(control)))

    def _on_run_value_edited(self, name: str) -> None:
        if not self._showing_recipe:
            self._users_run_values.pop(name, None)  # the user's own value again

    @staticmethod
    def _default_checkpoint_path() -> str:
        import platformdirs

        folder = Path(platformdirs.user_data_dir("torchdesk", appauthor=False)) / "cifar"
        return str(folder / "last.pt")

    # ---- data -----------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "CIFAR data folder", self.path_edit.text())
        if folder:
            self.path_edit.setText(folder)
            self.load_data()

    def _choose_archive(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CIFAR archive", self.path_edit.text(),
                                              "Archives (*.tar.gz *.tgz *.tar)")
        if path:
            self.path_edit.setText(path)
            self.load_data()

    def _choose_download_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Download CIFAR-10 into")
        if folder:
            self.path_edit.setText(folder)
            self.load_data(download=True)

    def load_data(self, download: bool = False) -> None:
        """Load (or download, then load) the dataset at the path field, on the worker thread."""
        if self.data_runner.is_running() or self.is_training():
            return
        path = self.path_edit.text().strip()
        if not path:
            self.app.show_error("CIFAR-10 data", "Choose a dataset folder or archive first.")
            return
        from engine.cifar.data import browse_job

        self._loading_path = path
        self._load_cancelled = False
        self._show_data_notes([])
        self.data_progress.setRange(0, 0)
        self.data_progress.setFormat("loading…")
        self.data_runner.start(browse_job, {"path": path, "download": download},
                               self.app.single_device)
        self._update_buttons()

    def _on_data_progress(self, updates: list[dict]) -> None:
        notes = [u["message"] for u in updates if u.get("step_name") == "note" and u.get("message")]
        if notes:
            self._show_data_notes(self._data_notes + notes)
        steps = [u for u in updates if u.get("step_name") != "note"]
        if not steps:
            return
        update = steps[-1]
        total, done = int(update.get("total") or 0), int(update.get("done") or 0)
        what = {"decode": "decoding images (first time only)", "download": "downloading",
                "cache": "reading cache", "extract": "unpacking"}.get(update.get("step_name"),
                                                                       "loading")
        if total:
            self.data_progress.setRange(0, total)
            self.data_progress.setValue(done)
            if update.get("step_name") == "download":
                self.data_progress.setFormat(
                    f"{what} {done / MEGABYTE:.1f}/{megabytes(total)}")
            else:
                self.data_progress.setFormat(f"{what} {done}/{total}")

    def _show_data_notes(self, notes: list[str]) -> None:
        """Show the load's notes in the data box (none: hide the line)."""
        self._data_notes = list(dict.fromkeys(notes))  # each once, in order
        self.data_note_label.setText("\n".join(n[:1].upper() + n[1:] for n in self._data_notes))
        self.data_note_label.setVisible(bool(self._data_notes))

    def take_dropped_paths(self, paths: list[str]) -> bool:
        """A dataset (a folder, .tar.gz, .tgz or .tar) dropped on the tab loads, as Enter in the
        data field does; a TorchDesk checkpoint goes to the Checkpoint field, where Export…,
        Use in Classify and Resume… take it. Anything else is not this tab's (False)."""
        kinds = [_dropped_kind(path) for path in paths]
        if not paths or None in kinds:
            return False
        if len(paths) > 1:
            self.app.show_status("Drop one dataset (a folder or archive) or one checkpoint at a "
                                 "time.", 6000)
            return True
        if self._is_busy():
            doing = ("a run is training" if self.is_training() else "data is loading"
                     if self.data_runner.is_running() else "the model is being exported")
            self.app.show_status(f"Not now: {doing}. Drop it again when that has ended.", 6000)
            return True
        if kinds[0] == "data":
            self.path_edit.setText(paths[0])
            self.load_data()
        else:
            self.checkpoint_edit.setText(paths[0])
            self.app.show_status(f"Checkpoint {paths[0]}: Export… and Use in Classify use its "
                                 "model, Resume… continues it (a new run with Train would write "
                                 "over it).", 10000)
        return True

    def cancel_load(self) -> None:
        """Cancel the load or download: nothing it finds is applied, even if it ends first."""
        self._load_cancelled = True
        self.data_runner.stop()

    def _on_data_loaded(self, info: dict) -> None:
        if info.get("status") == "stopped" or self._load_cancelled:
            self._show_load_failed("cancelled")
            return
        self.data_info = info
        self._data_path = self._loading_path
        self._save_settings()
        # the same data again (say, to see a resumed run's mistakes): the results stay
        if self.last_result is not None and not self._result_data_matches():
            self._clear_results("New data loaded: train to see results for it.")
        self.data_progress.setRange(0, 1)
        self.data_progress.setValue(1)
        self.data_progress.setFormat("loaded")
        self.class_list.blockSignals(True)
        self.class_list.clear()
        self._class_checks = {}
        for name in info["class_names"]:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.class_list.addItem(item)
            self._class_checks[name] = item
        self.class_list.blockSignals(False)
        self.sample_grid.set_samples(info["class_names"], info["samples"], info["counts"])
        self._on_classes_changed()
        if self.last_result is not None and self.selected_cell is not None:
            self.show_misclassified(*self.selected_cell)  # now with the images
        self.app.show_status(f"CIFAR data: {sum(info['counts']['train'].values())} training and "
                             f"{sum(info['counts']['test'].values())} test images", 5000)

    def selected_classes(self) -> list[str] | None:
        """Checked class names, or None when all are checked (or nothing is loaded)."""
        if not self._class_checks:
            return None
        names = [name for name, item in self._class_checks.items()
                 if item.checkState() == Qt.CheckState.Checked]
        return None if len(names) == len(self._class_checks) else names

    def set_classes(self, names: list[str] | None) -> None:
        """Check exactly ``names`` (None: all classes)."""
        if names is not None and not self._class_checks:
            self.app.show_error("CIFAR-10 data", "Load a dataset first, then choose its classes.")
            return
        if names is not None:
            missing = [n for n in names if n not in self._class_checks]
            if missing:
                self.app.show_error("CIFAR-10 data",
                                    f"This dataset has no class {', '.join(missing)}.")
                return
        self.class_list.blockSignals(True)
        for name, item in self._class_checks.items():
            checked = names is None or name in names
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.class_list.blockSignals(False)
        self._on_classes_changed()

    def _num_classes(self) -> int:
        chosen = self.selected_classes()
        if chosen is not None:
            return len(chosen)
        return len(self._class_checks) or 10

    def _on_classes_changed(self) -> None:
        self._update_parameter_count()
        if self.data_info is None:
            return
        chosen = self.selected_classes()
        if chosen is not None and len(chosen) < 2:
            self.stats_label.setText(f"{plural(len(chosen), 'class')} chosen: check at least two "
                                     "classes to train a classifier.")
            return
        chosen = chosen or self.data_info["class_names"]
        counts = self.data_info["counts"]
        n_train = sum(counts["train"][c] for c in chosen)
        n_test = sum(counts["test"][c] for c in chosen)
        text = f"{len(chosen)} classes, {n_train} train / {n_test} test images."
        mean_std = self.chosen_mean_std()
        if mean_std is not None:
            text += (f"\nMean {self._fmt(mean_std[0])}  std {self._fmt(mean_std[1])} of their "
                     "training images: a run normalizes with these (a run on fewer "
                     "\"Train images\" uses its own, shown with its results).")
        self.stats_label.setText(text)

    def chosen_mean_std(self) -> tuple[list[float], list[float]] | None:
        """The chosen classes' training images' channel mean and std, as the trainer computes
        them; None when nothing is loaded or they have no training images."""
        from engine.cifar.data import added_sums, stats_from_sums

        if self.data_info is None:
            return None
        sums = self.data_info["class_sums"]
        try:
            return stats_from_sums(added_sums([sums[name] for name in
                                               self.selected_classes() or sums]))
        except JobError:  # no training images
            return None

    @staticmethod
    def _fmt(values) -> str:
        return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"

    # ---- model controls -------------------------------------------------------------------
    def _on_model_changed(self) -> None:
        from engine.cifar.trainer import model_defaults

        model = self.model_combo.currentData()
        try:
            defaults = model_defaults(model, self._device_type())
        except ImportError:
            self.params_label.setText("the Fast recipe is not installed")
            self._recipe_defaults = {}  # nothing to tell the user's changes from
            return
        self._shown_recipe_type = self._device_type()
        controls = self._recipe_controls()
        with self._showing():
            # a resumed checkpoint's seed and train images go with its recipe
            for name, value in self._users_run_values.items():
                set_control_value(self._run_controls()[name], value)
            self._users_run_values = {}
            for name, control in controls.items():
                set_control_value(control, defaults[name])
            self._recipe_defaults = {name: control_value(c) for name, c in controls.items()}
            for name, value in self._remembered_changes().items():
                if name in controls:
                    set_control_value(controls[name], value)
        self._tta_level = int(defaults["tta_level"])
        self._eval_every = int(defaults["eval_every"])
        self._warmup = float(defaults["warmup"])
        self._show_recipe_changes()
        self._update_parameter_count()

    # ---- the user's changes to a recipe ---------------------------------------------------
    # What the user changed in a recipe is remembered (per model, and for Fast per device kind,
    # as its defaults depend on it); what they left alone follows the defaults, also when those
    # change in a later version.
    def _recipe_controls(self) -> dict[str, SettingControl]:
        return {"optimizer": self.optimizer_combo, "lr": self.lr_spin,
                "momentum": self.momentum_spin, "weight_decay": self.weight_decay_spin,
                "label_smoothing": self.smoothing_spin, "schedule": self.schedule_combo,
                "batch_size": self.batch_spin, "epochs": self.epochs_spin,
                "flip": self.flip_check, "translate": self.translate_spin}

    def _run_controls(self) -> dict[str, SettingControl]:
        """Settings of a run rather than a recipe: remembered as they are, for every model."""
        return {"seed": self.seed_spin, "precision": self.precision_combo,
                "compile": self.compile_check, "max_train": self.max_train_spin}

    @contextmanager
    def _showing(self) -> Iterator[None]:
        """Values set in here are the tab's (defaults, a checkpoint's recipe), not the user's."""
        before, self._showing_recipe = self._showing_recipe, True
        try:
            yield
        finally:
            self._showing_recipe = before

    def _recipe_settings_key(self) -> str:
        model = self.model_combo.currentData()
        return f"cifar/recipe/{model}" + (f"@{self._shown_recipe_type}" if model == "fast" else "")

    def _remembered_changes(self) -> dict[str, Any]:
        stored = self.app.settings.value(self._recipe_settings_key())
        try:
            changes = json.loads(str(stored)) if stored is not None else {}
        except ValueError:
            return {}  # a hand-edited setting: the defaults
        return changes if isinstance(changes, dict) else {}

    def _on_recipe_edited(self, name: str) -> None:
        """The user changed one recipe field: remember it (only it, also when the rest shows a
        resumed checkpoint's recipe), or forget it when it is back at the default."""
        if self._showing_recipe or not self._recipe_defaults:
            return
        changes = self._remembered_changes()
        value = control_value(self._recipe_controls()[name])
        if value == self._recipe_defaults.get(name):
            changes.pop(name, None)
        else:
            changes[name] = value
        key = self._recipe_settings_key()
        if changes:
            self.app.settings.setValue(key, json.dumps(changes))
        else:
            self.app.settings.remove(key)
        self._show_recipe_changes()

    def _show_recipe_changes(self) -> None:
        controls = self._recipe_controls()
        remembered = self._remembered_changes()
        shown = {name: control_value(control) for name, control in controls.items()}
        # the user's changes on show, in the form's order; any other difference from the
        # defaults is a resumed checkpoint's
        changed = [name for name in controls if name in remembered
                   and shown[name] == remembered[name]]
        from_checkpoint = any(shown[name] != self._recipe_defaults.get(name)
                              for name in controls if name not in changed)
        self._checkpoint_recipe_shown = from_checkpoint
        if from_checkpoint:
            self.recipe_label.setText("The resumed checkpoint's recipe")
        elif changed:
            labels = ", ".join(RECIPE_FIELD_LABELS[name] for name in changed)
            self.recipe_label.setText(f"Changed: {labels}")
        else:
            self.recipe_label.setText("The recipe's defaults")
        self.defaults_button.setEnabled(from_checkpoint or bool(remembered))
        self.defaults_button.setToolTip(
            "Show this model's recipe with your changes again" if from_checkpoint
            else "Forget your changes to this recipe and show its defaults")

    def restore_recipe_defaults(self) -> None:
        """Forget the user's changes to the shown recipe and show its defaults; while a resumed
        checkpoint's recipe is shown, first show the defaults with the user's changes again."""
        if not self._checkpoint_recipe_shown:
            self.app.settings.remove(self._recipe_settings_key())
        self._on_model_changed()

    def _on_device_changed(self, _device: str) -> None:
        """The Fast recipe and net size depend on the device: re-apply its defaults; the book's
        nets keep the user's settings, and so does Fast between devices of one kind."""
        if self.is_training():  # the run keeps its settings; show the new recipe afterwards
            self._recipe_stale = True
            return
        fast = self.model_combo.currentData() == "fast"
        if fast and self._device_type() != self._shown_recipe_type:
            self._on_model_changed()
            self.app.show_status("The Fast recipe's settings for this device are shown.", 5000)
        else:
            self._update_parameter_count()

    def _device_type(self) -> str:
        """"cpu", "cuda" or "mps": which recipe and model size the current device gets."""
        device = self.app.device
        return "cuda" if device == ALL_GPUS else device.split(":")[0]

    def _update_parameter_count(self) -> None:
        from engine.cifar.models import parameter_count

        chosen = self.selected_classes()
        if chosen is not None and len(chosen) < 2:
            self.params_label.setText("— (choose at least two classes)")
            return
        try:
            counts = parameter_count(self.model_combo.currentData(), self._num_classes(),
                                     self._device_type())
        except Exception as exc:  # a model that cannot be built says why, here
            self.params_label.setText(f"unavailable ({exc})")
            return
        text = f"{counts['trainable']:,}"
        if counts["total"] != counts["trainable"]:
            text += f" trainable ({counts['total']:,} in all)"
        self.params_label.setText(text)

    def training_config(self) -> dict[str, Any]:
        """The trainer config the controls describe (see engine.cifar.trainer)."""
        return {
            # the data the tab shows; a path typed but not loaded is used only if none is
            "data": self._data_path or self.path_edit.text().strip() or None,
            "classes": self.selected_classes(),
            "model": self.model_combo.currentData(),
            "epochs": self.epochs_spin.value(),
            "batch_size": self.batch_spin.value(),
            "lr": self.lr_spin.value(),
            "optimizer": self.optimizer_combo.currentData(),
            "momentum": self.momentum_spin.value(),
            "weight_decay": self.weight_decay_spin.value(),
            "label_smoothing": self.smoothing_spin.value(),
            "schedule": self.schedule_combo.currentData(),
            "warmup": (None if self.schedule_combo.currentData() == "constant"
                       else getattr(self, "_warmup", None)),
            "flip": self.flip_check.isChecked(),
            "translate": self.translate_spin.value(),
            "tta_level": getattr(self, "_tta_level", None),
            "eval_every": getattr(self, "_eval_every", None),
            "seed": self.seed_spin.value(),
            "precision": self.precision_combo.currentData(),
            "compile": self.compile_check.isChecked(),
            "max_train": self.max_train_spin.value() or None,
            "checkpoint": self._checkpoint_path() or None,
        }

    # ---- training -------------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.train_runner.is_running() or self.torchrun.is_running()

    def _is_busy(self) -> bool:
        """Loading, training or exporting: no run may start."""
        return self.is_training() or self.data_runner.is_running() or self.is_exporting()

    def _refusal_to_train(self) -> str | None:
        """Why a run cannot start from what the tab shows, or None."""
        typed = self.path_edit.text().strip()
        if self._data_path is not None and typed and not same_path(typed, self._data_path):
            return (f"The data field names {typed}, but the dataset shown is {self._data_path}. "
                    "Press Load to use the new one, or put the path back.")
        return None

    def start_training(self, resume: str | None = None,
                       overrides: dict[str, Any] | None = None) -> None:
        """Start training from the controls (``resume``: continue that checkpoint instead)."""
        if self._is_busy():
            return
        refusal = self._refusal_to_train()
        if refusal:
            self.app.show_error("CIFAR-10 training", refusal)
            return
        config = self.training_config()
        if resume:
            # the checkpoint knows its model, classes and recipe; keep only the run settings
            keep = ("data", "epochs", "checkpoint", "compile", "precision")
            config = {key: config[key] for key in keep}
            config["resume"] = resume
            config["checkpoint"] = config["checkpoint"] or resume
        config.update(overrides or {})
        if not config.get("data") and not resume:  # a checkpoint knows where its data was
            self.app.show_error("CIFAR-10 training", "Choose and load a dataset first.")
            return
        if config.get("classes") is not None and len(config["classes"]) < 2:
            self.app.show_error("CIFAR-10 training",
                                "Check at least two classes to train a classifier.")
            return
        usable_gpus = self._usable_gpus() if self.app.device == ALL_GPUS else []
        if self.app.device == ALL_GPUS and not usable_gpus:
            self.app.show_error("CIFAR-10 training", "No usable GPU is left for \"All GPUs\" "
                                "(gone since the Device menu listed them?); choose another "
                                "device in the Device menu.")
            return
        if usable_gpus and not resume:  # torchrun would name the settings by their flags
            problem = _settings_problem(config)
            if problem:
                self.app.show_error("CIFAR-10 training", problem)
                return
        if not resume:
            self._users_run_values = {}  # a new run's seed and image count: what it trains with
        self._save_settings()
        # the last results stay until this run has started: a refused one keeps them
        self._results_pending_clear = True
        self._resume_notes = []
        self._stopping = False
        self.pages.setCurrentIndex(0)
        if self.app.device == ALL_GPUS:
            try:
                self.torchrun.start({**config, "device": "cuda"}, usable_gpus)
            except ValueError as exc:  # a setting torchrun's command line cannot carry
                self.app.show_error("CIFAR-10 training", f"\"All GPUs\" cannot run this: {exc}")
                return
        else:
            self.train_runner.start(_train_job, config, self.app.device)
        self._update_buttons()

    @staticmethod
    def _usable_gpus() -> list[int]:
        """CUDA indices of the GPUs that "All GPUs" trains on."""
        from engine.devices import list_devices

        return [int(d.id.split(":")[1]) for d in list_devices()
                if d.kind in ("cuda", "rocm") and not d.problem]

    def stop_training(self) -> None:
        self._stopping = self.is_training()
        self.train_runner.stop()
        self.torchrun.stop()
        self.speed_label.setText("stopping…")

    def _reset_live_view(self) -> None:
        self.curves.clear()
        self.epoch_progress.setValue(0)
        self.speed_label.setText("starting…")

    def _on_train_progress(self, updates: list[dict]) -> None:
        """Handle a batch of trainer updates; curves are redrawn once per batch, and the bar
        and label show the latest training step or evaluation."""
        latest = None  # the last "train" or "evaluate" update
        for update in updates:
            phase = update.get("phase")
            if phase == "train":
                self.curves.add_step(update["global_step"] / update["steps_per_epoch"],
                                     update["loss"])
                latest = update
            elif phase == "epoch":
                self.curves.add_epoch(update)
            elif phase == "load":
                self.speed_label.setText("loading data…")
            elif phase == "start":
                if self._results_pending_clear:
                    self._results_pending_clear = False
                    self._clear_results(self._resume_note())
                    self._reset_live_view()
                if update.get("history"):  # a resumed run: the epochs it already trained
                    self.curves.show_history(update["history"])
                # not the last run's "epoch 6/6 — step 37/37" while this one warms up
                epochs = int(update["epochs"])
                self.epoch_progress.setValue(0)
                self.epoch_progress.setFormat(
                    f"epoch {min(int(update['start_epoch']) + 1, epochs)}/{epochs}")
                self.speed_label.setText(
                    f"{update['model']}: {update['params']['trainable']:,} parameters on "
                    f"{update['device']} ×{update['world_size']} ({update['precision']})")
            elif phase == "evaluate":
                latest = update
            elif phase == "resume" and update.get("message"):
                # kept in view while the run trains: one may say its result will differ from
                # a run straight through, and the status bar shows only the last one
                self._resume_notes.append(update["message"])
                self.app.show_status(self._resume_note(), 12000)
                if not self._results_pending_clear:
                    self.result_label.setText(self._resume_note())
            elif phase == "warm-up":
                self.speed_label.setText("warming up the device…")
        self.curves.redraw()
        if latest is not None and latest["phase"] == "train":
            self._show_training_step(latest)
        elif latest is not None:
            self._show_evaluation(latest)

    def _show_training_step(self, u: dict) -> None:
        self.epoch_progress.setRange(0, 1000)
        self.epoch_progress.setValue(int(u["epoch_progress"] * 1000))
        self.epoch_progress.setFormat(f"epoch {u['epoch']}/{u['epochs']} — "
                                      f"step {u['step']}/{u['steps_per_epoch']}")
        if not self._stopping:
            self.speed_label.setText(f"{u['images_per_s']:,.0f} images/s · ETA "
                                     f"{format_duration(u['eta_s'])} · loss {u['loss']:.3f}")

    def _show_evaluation(self, update: dict) -> None:
        """An evaluation's progress over the test images (the final one's, or one between
        epochs); an update without counts says only what is evaluated."""
        what = (f"testing after epoch {update.get('epoch')}" if update.get("between_epochs")
                else "evaluating on the test set")
        total, done = int(update.get("total") or 0), int(update.get("done") or 0)
        if total > 0:
            self.epoch_progress.setRange(0, total)
            self.epoch_progress.setValue(min(done, total))
            # the label beside it says what is evaluated, and how far it has got
            self.epoch_progress.setFormat(
                f"epoch {update.get('epoch')} — test set %p%" if update.get("between_epochs")
                else "final evaluation — %p%")
        if self._stopping:
            return
        if total <= 0:
            self.speed_label.setText(f"{what}…")
            return
        eta = update.get("eta_s")
        # None (no estimate yet), or NaN: torchrun's JSON lines carry None as NaN
        left = (f", ~{short_duration(eta)} left" if isinstance(eta, (int, float))
                and math.isfinite(eta) and done < total else "")
        # what is evaluated is on the bar: the label stays short enough for the bar's width
        self.speed_label.setText(f"{done:,} / {total:,} test images{left}")

    def _resume_note(self) -> str:
        """What the trainer said about the resumed run (the settings it goes on with)."""
        return f"Resume: {'; '.join(self._resume_notes)}." if self._resume_notes else ""

    def _on_train_returned(self, result: dict) -> None:
        self._unsaved_checkpoint = (self._checkpoint_path() if result
                                    and result.get("warning") and not result.get("checkpoint")
                                    else None)
        if not result or "confusion" not in result:  # stopped: curves stay, checkpoint kept
            self.stopped_result = result
            self.speed_label.setText("stopped")
            self.result_label.setText(self._stopped_message(result or {}))
            if result and result.get("checkpoint"):
                self.app.show_status(f"Stopped; checkpoint kept in {result['checkpoint']}", 8000)
            return
        self.last_result = result
        self.curves.show_history(result.get("history") or [], losses=False)
        self._show_confusion(result)
        per_class = ", ".join(f"{name} {'n/a' if acc is None else f'{acc:.0%}'}"
                              for name, acc in result["per_class_acc"].items())
        self.result_label.setText(
            f"Test accuracy {result['test_acc']:.2%} after {plural(result['epochs'], 'epoch')} "
            f"({result['train_time_s']:.1f} s training).\nPer class: {per_class}\n"
            f"Normalized by mean {self._fmt(result['mean'])} std {self._fmt(result['std'])} "
            "(of its training images)."
            + (f"\nWarning: {result['warning']}." if result.get("warning") else ""))
        if result.get("warning"):
            self.app.show_status(f"Warning: {result['warning']}", 12000)
        self.speed_label.setText(f"{result['status']} · test acc {result['test_acc']:.2%}")

    def _stopped_message(self, result: dict) -> str:
        """What a stopped run kept: its checkpoint's epoch and step, as the trainer says."""
        checkpoint, warning = result.get("checkpoint"), result.get("warning")
        planned = (result.get("config") or {}).get("epochs")
        if result.get("epochs") == planned and (checkpoint or warning):
            if not checkpoint:  # the finished model could not be written
                return f"Stopped during the final evaluation; {warning}."
            return (f"Stopped during the final evaluation; the trained model "
                    f"({plural(planned, 'epoch')}) is kept in {checkpoint} (Resume it to "
                    "evaluate).")
        epochs = plural(int(result.get("epochs", 0)), "full epoch")
        if checkpoint:
            epoch, step = result.get("saved_at") or (result.get("epochs", 0), 0)
            # a checkpoint written mid-epoch keeps that epoch's steps so far
            where = (f"during epoch {epoch + 1} (after {plural(epoch, 'full epoch')})" if step
                     else f"after {plural(epoch, 'full epoch')}")
            return f"Stopped {where}; checkpoint kept in {checkpoint}: Resume… goes on from there."
        if self.checkpoint_edit.text().strip():
            return f"Stopped after {epochs}, before a new step: the checkpoint file is as it was."
        return (f"Stopped after {epochs}; nothing was kept (set a checkpoint file to keep a run "
                "you stop).")

    def _clear_results(self, note: str) -> None:
        """Forget the last run's results (new data, a new run): nothing stale stays clickable."""
        self.last_result = None
        self.selected_cell = None
        self.confusion_plot.clear_matrix()
        self.mistakes_list.clear()
        self.mistakes_label.setText("")
        self.result_label.setText(note)

    def _on_data_error(self, message: str) -> None:
        if self._load_cancelled:  # the user gave up on it: no dialog about how it ended
            self._show_load_failed("cancelled")
            return
        self._show_load_failed("not loaded")
        self.app.show_error("CIFAR-10 data", message)

    def _show_load_failed(self, how: str) -> None:
        """An empty bar that says how the load ended, and which data is still shown."""
        self.data_progress.setRange(0, 1)
        self.data_progress.setValue(0)
        if self.data_info is not None and self._data_path is not None:
            how += f"; {Path(self._data_path).name} is still shown"
        self.data_progress.setFormat(how)

    def _on_train_error(self, message: str) -> None:
        self.speed_label.setText("error")
        self.app.show_error("CIFAR-10 training", message)

    def _on_train_finished(self) -> None:
        self._stopping = False
        self._update_buttons()
        if self._recipe_stale:
            self._recipe_stale = False
            self._on_device_changed(self.app.device)

    # ---- confusion matrix -----------------------------------------------------------------
    def _show_confusion(self, result: dict) -> None:
        self.confusion_plot.show_matrix(result["confusion"], result["class_names"])
        worst = self.confusion_plot.most_confused()
        if worst is not None:
            self.show_misclassified(*worst)
        else:
            self.mistakes_list.clear()
            self.mistakes_label.setText("No misclassified test images.")

    def confusion_cell_pixels(self) -> float:
        """The side of one heatmap cell on screen, in pixels."""
        return self.confusion_plot.cell_pixels()

    def show_misclassified(self, true_index: int, predicted_index: int) -> None:
        """List the test images of class ``true_index`` predicted as ``predicted_index``."""
        if self.last_result is None:
            return
        self.selected_cell = (true_index, predicted_index)
        names = self.last_result["class_names"]
        true_name, predicted_name = names[true_index], names[predicted_index]
        indices = self.last_result["misclassified"].get(f"{true_index},{predicted_index}", [])
        self.mistakes_list.clear()
        if true_index == predicted_index:
            count = int(self.last_result["confusion"][true_index][true_index])
            self.mistakes_label.setText(f"{plural(count, f'{true_name} image')} classified "
                                        "correctly.")
            return
        images = None
        if self.data_info is not None and self._result_data_matches():
            images = self.data_info.get("test_images")
        self.mistakes_label.setText(
            f"{plural(len(indices), f'{true_name} image')} predicted as {predicted_name}"
            + (f" (first {MAX_SHOWN_MISTAKES})" if len(indices) > MAX_SHOWN_MISTAKES else ""))
        if images is None:
            self.mistakes_label.setText(self.mistakes_label.text() +
                                        " — load the dataset to see them.")
            return
        for index in indices[:MAX_SHOWN_MISTAKES]:
            if 0 <= index < len(images):
                item = QListWidgetItem(QIcon(rgb_pixmap(images[index], 48)), "")
                item.setToolTip(f"test image #{index}: {true_name}, predicted {predicted_name}")
                self.mistakes_list.addItem(item)

    def _result_data_matches(self) -> bool:
        """Whether the loaded data is the data the last run was trained on (same path, same
        classes), so its test-image indices point at the right images."""
        config = (self.last_result or {}).get("config") or {}
        trained_on = str(config.get("data") or "")
        same_data = bool(trained_on) and self._data_path is not None and same_path(
            trained_on, self._data_path)
        names = {n.lower() for n in (self.data_info or {}).get("class_names", [])}
        return same_data and all(n.lower() in names for n in self.last_result["class_names"])

    # ---- checkpoints ----------------------------------------------------------------------
    def _choose_resume(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Resume from checkpoint",
                                              self.checkpoint_edit.text(),
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.resume_from(path)

    def resume_from(self, path: str, epochs: int | None = None) -> None:
        """Show a checkpoint's settings in the controls and continue training it: to ``epochs``,
        by default to the epochs it was planned for. A finished run goes on to the Epochs box's
        value; at most its own epochs, it is evaluated again without training (what a run
        stopped in its final evaluation needs, and how an earlier session's run shows its
        results)."""
        from engine.cifar.checkpoint import describe, load_checkpoint

        if self._is_busy():
            return
        refusal = self._refusal_to_train()  # before the controls show the checkpoint
        if refusal:
            self.app.show_error("Resume", refusal)
            return
        try:
            blob = load_checkpoint(path)
        except JobError as exc:
            self.app.show_error("Resume", str(exc))
            return
        info = describe(blob)
        if self._class_checks and any(n not in self._class_checks for n in info["class_names"]):
            self.app.show_error("Resume", f"The checkpoint was trained on classes "
                                f"{', '.join(info['class_names'])}, which the loaded data lacks; "
                                "load its dataset first.")
            return
        # the run goes on in its own file; one that cannot be written (a read-only disk), in
        # the Checkpoint box's file if that names another
        writable = all(os.access(place, os.W_OK)
                       for place in (path, os.path.dirname(os.path.abspath(path))))
        if not writable and same_path(self._checkpoint_path() or path, path):
            self.app.show_error("Resume", f"{path} cannot be written, so the run cannot go on in "
                                "it: enter another file in the Checkpoint box (the run goes on "
                                "there), then Resume… again.")
            return
        asked = self.epochs_spin.value()
        with self._showing():  # the checkpoint's recipe, not changes to remember
            self._select(self.model_combo, info["model"])  # resets the boxes to its defaults
            for name in ("seed", "max_train"):
                self._users_run_values.setdefault(name, control_value(self._run_controls()[name]))
            self._show_recipe(blob["config"])
            if epochs is None:
                epochs = info["epochs"] if info["epoch"] < info["epochs"] else asked
            # not before where it stopped: within an epoch, that epoch's end
            self.epochs_spin.setValue(max(int(epochs), info["epoch"] + (1 if info["step"] else 0)))
        self._show_recipe_changes()
        self.set_classes(info["class_names"] if self._class_checks else None)
        if writable:
            self.checkpoint_edit.setText(path)  # the run goes on in its own file
        self.start_training(resume=path)

    def _show_recipe(self, config: dict[str, Any]) -> None:
        """Show a checkpoint's recipe in the controls (what the resumed run trains with; the
        precision and torch.compile boxes stay the user's, as a resumed run takes them)."""
        controls = {**self._recipe_controls(), "seed": self.seed_spin,
                    "max_train": self.max_train_spin}
        for key, control in controls.items():
            value = config.get(key)
            if key == "max_train" and not value:
                value = 0  # "all"
            if value is not None:
                set_control_value(control, value)
        for key in ("tta_level", "eval_every"):
            if isinstance(config.get(key), int):
                setattr(self, f"_{key}", config[key])
        if isinstance(config.get("warmup"), (int, float)):
            self._warmup = float(config["warmup"])

    def _choose_export(self) -> None:
        source = self._finished_checkpoint()
        if source is None:
            return
        # the dialog's own overwrite question would be about the name as typed, before
        # export_path adds the suffix: the tab asks about the files the export writes
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export model", str(Path(source).with_suffix(".torchscript.pt")),
            "TorchScript (*.pt);;ONNX (*.onnx)", "", QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return
        out = self.export_path(path, chosen)
        from engine.cifar.checkpoint import export_targets

        existing = [file for file in export_targets(out) if file.is_file()]
        if existing and not self._confirm_replace(existing):
            return
        self.export_to(out)

    def _confirm_replace(self, files: list[Path]) -> bool:
        """Ask whether to replace these existing files (those an export would write)."""
        names = " and ".join(f"'{file.name}'" for file in files)
        one = len(files) == 1
        answer = QMessageBox.question(
            self, "Export model", f"{names} already {'exists' if one else 'exist'} in "
            f"{files[0].parent}. Replace {'it' if one else 'them'}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    @staticmethod
    def export_path(path: str, chosen_filter: str) -> str:
        """``path`` with the suffix of the file type chosen in the dialog, unless it has one of
        the export suffixes already (its suffix then says the format)."""
        from engine.cifar.checkpoint import export_name

        return export_name(path, "onnx" if "onnx" in chosen_filter.lower() else "torchscript")

    def _checkpoint_path(self) -> str:
        """The Checkpoint box's file, with ``~`` expanded as the trainer does ("" if none)."""
        path = self.checkpoint_edit.text().strip()
        return os.path.expanduser(path) if path else ""

    def _finished_checkpoint(self) -> str | None:
        path = self._checkpoint_path()
        if not path or not Path(path).is_file():
            self.app.show_error("Export", "Train a model (with a checkpoint file) first.")
            return None
        return path

    def is_exporting(self) -> bool:
        return self.export_runner.is_running()

    def export_to(self, out_path: str, title: str = "Export",
                  then: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Export the current checkpoint on the worker thread; the outcome is said (errors under
        ``title``) and the export's description handed to ``then``. False: not started."""
        if self.is_exporting() or self.is_training():
            return False
        source = self._finished_checkpoint()
        if source is None:
            return False
        self._export_title, self._after_export = title, then
        self.export_button.setText("Exporting…")
        self.app.show_status(f"Exporting the model to {out_path}…")  # until the outcome
        from engine.cifar.checkpoint import export_job

        self.export_runner.start(export_job, {"checkpoint": source, "out": out_path})
        self._update_buttons()
        return True

    def _on_exported(self, meta: dict[str, Any]) -> None:
        self.app.show_status(f"Exported {meta['format']} model to {meta['path']}", 6000)
        if self._after_export is not None:
            self._after_export(meta)

    def _on_export_error(self, message: str) -> None:
        self.app.show_error(self._export_title, message)

    def _on_export_finished(self) -> None:
        self.export_button.setText("Export…")
        self._update_buttons()

    def use_in_classify(self) -> None:
        """Hand the trained model to the Classify tab, exported beside its checkpoint.

        The description emitted: ``{"format": "torchscript", "path", "model", "class_names",
        "mean", "std", "input_size": 32, "input"}`` — the TorchScript file takes float RGB in
        [0, 1], N×3×32×32, and normalizes inside (mean/std are given for display).
        """
        from engine.cifar.checkpoint import handover_path

        source = self._finished_checkpoint()
        if source is not None:
            self.export_to(str(handover_path(source)), "Use in Classify",
                           self.app.use_in_classify.emit)

    # ---- state ----------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        loading = self.data_runner.is_running()
        training = self.is_training()
        exporting = self.is_exporting()
        idle = not loading and not training
        # what a run trains on and with stays as it started until it ends
        for widget in (self.path_edit, self.browse_folder_button, self.browse_archive_button,
                       self.load_button, self.download_button, self.class_list,
                       self.all_classes_button, self.cifar2_button):
            widget.setEnabled(idle)
        for widget in (self.train_button, self.resume_button):  # an export reads the checkpoint
            widget.setEnabled(idle and not exporting)
        self.model_group.setEnabled(not training)
        self.checkpoint_edit.setEnabled(not training and not exporting)
        self.cancel_load_button.setEnabled(loading)
        self.stop_button.setEnabled(training)
        checkpoint = self._checkpoint_path()
        have_model = (not training and not exporting and bool(checkpoint)
                      and Path(checkpoint).is_file() and checkpoint != self._unsaved_checkpoint)
        self.export_button.setEnabled(have_model)
        self.classify_button.setEnabled(have_model)
        unsaved = checkpoint == self._unsaved_checkpoint and not training
        for button in (self.export_button, self.classify_button):
            button.setToolTip("The last run's model could not be written to this checkpoint: "
                              "it holds an older one." if unsaved else "")

    def shutdown(self) -> bool:
        """Stop and join the data, training and export jobs (window closing); False if a worker
        thread is still running (a torchrun child that will not stop is killed)."""
        self._save_settings()
        ended = [self.data_runner.shutdown(5000), self.train_runner.shutdown(10000),
                 self.export_runner.shutdown(10000)]  # an export cannot stop: it ends soon
        # torchrun gives its ranks 30 s after passing the stop on, then kills them itself;
        # killing torchrun first would leave them running (they are in their own sessions)
        self.torchrun.shutdown(40000)
        self._update_buttons()
        return all(ended)

    def prepare_screenshot(self, wait: Callable[[Callable[[], bool], float], None]) -> None:
        """Load CIFAR-10 and train a small real run so curves and the confusion matrix show."""
        if not self.path_edit.text().strip() and cifar_archive().is_file():
            self.path_edit.setText(str(cifar_archive()))
        if not self.path_edit.text().strip():
            return
        self.load_data()
        wait(lambda: not self.data_runner.is_running(), 300)
        if self.data_info is None:
            return
        # A throwaway checkpoint: the user's last run must survive a screenshot run.
        self._screenshot_scratch = tempfile.TemporaryDirectory(prefix="torchdesk-screenshot-")
        self.checkpoint_edit.setText(str(Path(self._screenshot_scratch.name) / "screenshot.pt"))
        self._select(self.model_combo, "netbatchnorm")
        self.epochs_spin.setValue(3)
        self.batch_spin.setValue(64)
        self.lr_spin.setValue(0.05)
        self.flip_check.setChecked(True)
        self.max_train_spin.setValue(4000)
        self.start_training(overrides={"max_test": 2000})
        wait(lambda: not self.is_training(), 300)
        self.pages.setCurrentIndex(0)


def _dropped_kind(path: str) -> str | None:
    """What a dropped path is to the tab: "data" (a dataset folder or an archive),
    "checkpoint" (a TorchDesk checkpoint, whatever its name ends with; an exported model's .pt
    is not one), or None (a folder of photos, say: Classify's)."""
    dropped = Path(path)
    if dropped.is_dir():
        from engine.cifar.data import looks_like_a_dataset

        return "data" if looks_like_a_dataset(dropped) else None
    if dropped.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        return "data"
    if dropped.is_file() and dropped.suffix.lower() not in IMAGE_SUFFIXES:
        from engine.cifar.checkpoint import is_checkpoint_file

        return "checkpoint" if is_checkpoint_file(dropped) else None
    return None


def _labelled(exc) -> JobError:
    """A trainer SettingError naming the tab's field ("batch size must be …"), not its key, with
    advice a tab user can follow."""
    return JobError(exc.naming(SETTING_LABELS.get(exc.key, exc.key), RESUME_ADVICE))


def _train_job(config: dict[str, Any], ctx) -> dict[str, Any]:
    """The trainer's job, its settings errors naming the tab's fields."""
    from engine.cifar.trainer import SettingError, train_job

    try:
        return train_job(config, ctx)
    except SettingError as exc:
        raise _labelled(exc) from None


def _settings_problem(config: dict[str, Any]) -> str | None:
    """What the trainer's checks say about a new run's settings (for CUDA), or None."""
    from engine.cifar.trainer import SettingError, resolve_config

    try:
        resolve_config(config, device_type="cuda")
    except SettingError as exc:
        return str(_labelled(exc))
    except (JobError, ImportError):  # not about the settings: the run itself says it
        pass
    return None

