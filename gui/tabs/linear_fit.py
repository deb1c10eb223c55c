"""The Linear-fit tab: fit the book's thermometer data (or your points) live, epoch by epoch.

The engine's :class:`~engine.fit.trainer.FitSession` (or :class:`~engine.fit.surface.RaceSession`)
holds the model and optimizer state; Play, Step and resume hand it to a job on the
:class:`gui.bridge.JobRunner`, so training never runs on the GUI thread and the tab only touches
the session while no job is running. Every curve is one persistent ``PlotDataItem`` updated from
the batched progress handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QEvent, QPointF, QRectF, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGraphicsItem,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.fit.choices import INPUT_SCALE_RANGE, LR_RANGE
from engine.fit.data import FitData, book_data, load_csv
from engine.fit.models import ACTIVATIONS, DEFAULT_HIDDEN
from engine.fit.surface import (
    RACERS,
    RaceSession,
    contour_segments,
    log_loss,
    race_job,
    session_surface,
)
from engine.fit.trainer import FitConfig, FitSession, fit_job
from engine.jobs import JobError
from gui.app_state import AppState
from gui.bridge import JobRunner
from gui.plotting import GrowingArray, keep_text_whole, make_fast, thin_path
from gui.widgets.common import ScientificSpinBox, control_value, scroll_area, set_control_value

OPTIMIZER_LABELS = {
    "gd": "Gradient descent (book)",
    "sgd": "SGD (torch.optim)",
    "momentum": "SGD + momentum 0.9",
    "adam": "Adam",
}
RACER_PENS = {"gd": (230, 80, 80), "momentum": (80, 200, 120), "adam": (90, 160, 255)}
TRAIN_COLOR, VAL_COLOR = (70, 140, 255), (255, 150, 40)
CLICK_RADIUS_PX = 8
CONTOUR_LEVELS = 10
SETTINGS_PREFIX = "linear_fit/"
# An epoch's validation loss this much above the best one marks the run as overfitting.
OVERFIT_MARGIN = 1.05
# Small, see-through legends; one wider or taller than this share of its plot would cover the
# data there (a small window), so it is hidden and its plot's tooltip names the curves.
LEGEND_STYLE = {"labelTextSize": "8pt", "verSpacing": -6, "brush": pg.mkBrush(0, 0, 0, 150)}
LEGEND_MAX_SHARE = (0.4, 0.5)  # of the plot's width, height
# Beyond this many points the data plot draws a uniform random sample of this many (training
# uses them all): pyqtgraph's scatter costs ~1 µs a point to set and as much to paint, every
# frame of a run (2M points: ~4 s to draw, the window frozen); 50k already fill a plot.
MAX_DRAWN_POINTS = 50_000


class UniformScatter(pg.ScatterPlotItem):
    """A scatter whose spots all share the item's one style (no per-spot pens, sizes…).

    pyqtgraph looks every new spot's style up in its symbol atlas one spot at a time: ~0.3 s
    per ``setData`` of 200k points, most of a click's cost. With one style, one look-up
    serves every spot.
    """

    def updateSpots(self, dataSet=None) -> None:  # noqa: N803 (pyqtgraph's name)
        spots = self.data if dataSet is None else dataSet
        if self.opts["pxMode"] and self.opts["useCache"] and len(spots):
            style = (self.opts["symbol"], self.opts["size"], self.opts["pen"],
                     self.opts["brush"])
            spots["sourceRect"] = self.fragmentAtlas[[style]][0]
        super().updateSpots(dataSet)  # finds no spot left to look up

    def hide_spot(self, row: int) -> None:
        """Hide one spot where it is, out of the item's bounds too (its x, y become NaN)."""
        spot = self.data[row:row + 1]  # a view: the item's own record
        spot["x"] = spot["y"] = np.nan
        self.setPointsVisible(False, dataSet=spot)  # updates this spot only
        self.invalidate()  # its style was looked up already: updateSpots would not repaint
        self.prepareGeometryChange()
        self.bounds = [None, None]
        self.informViewBoundsChanged()


class EditablePoints:
    """Points drawn once, then edited in place as clicks add and remove them.

    ``setData`` rebuilds a ScatterPlotItem's record array (~60 ms per 200k points even with one
    style), so a removed point is hidden in its row of ``drawn`` and added points go to the
    small ``added`` item. Clicks keep the data's order: the kept rows, then the added points.
    """

    def __init__(self, drawn: UniformScatter, added: UniformScatter) -> None:
        self.drawn, self.added = drawn, added
        self.kept_rows = np.arange(0)
        self.added_x: list[float] = []
        self.added_y: list[float] = []

    def set_points(self, x: np.ndarray, y: np.ndarray) -> None:
        self.drawn.setData(x, y)
        self.kept_rows = np.arange(len(x))
        self.added_x, self.added_y = [], []
        self.added.setData([], [])

    def append(self, x: float, y: float) -> None:
        self.added_x.append(x)
        self.added_y.append(y)
        self.added.setData(self.added_x, self.added_y)

    def remove(self, index: int) -> None:
        if index >= len(self.kept_rows):
            del self.added_x[index - len(self.kept_rows)], self.added_y[index - len(self.kept_rows)]
            self.added.setData(self.added_x, self.added_y)
        elif 2 * (len(self.kept_rows) - 1) < len(self.drawn.data):
            # mostly hidden rows (or none left): draw what is left afresh
            x, y = self.shown()
            self.set_points(np.delete(x, index), np.delete(y, index))
        else:
            self.drawn.hide_spot(int(self.kept_rows[index]))
            self.kept_rows = np.delete(self.kept_rows, index)

    def shown(self) -> tuple[np.ndarray, np.ndarray]:
        """The points drawn, in the data's order."""
        x, y = self.drawn.getData()
        return (np.concatenate([x[self.kept_rows], self.added_x]),
                np.concatenate([y[self.kept_rows], self.added_y]))


class LinearFitTab(QWidget):
    """Controls on the left; data + fit, loss curves and the loss surface on the right."""

    def __init__(self, app: AppState) -> None:
        super().__init__()
        self.app = app
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.returned.connect(self._on_returned)
        self.runner.errored.connect(self._on_errored)
        self.runner.finished.connect(self._on_run_finished)
        # a CSV is read off the GUI thread too: a large one takes seconds (2M rows: ~8 s)
        self.csv_runner = JobRunner(self)
        self.csv_runner.returned.connect(self._on_csv_loaded)
        self.csv_runner.errored.connect(self._on_csv_failed)
        self.csv_runner.finished.connect(self._update_buttons)

        self.data: FitData = book_data()
        self.session: FitSession | RaceSession | None = None
        self.last_result: dict[str, Any] | None = None
        self._stop_means_end = False  # Stop ends the run; Pause keeps it for Play to resume
        self._reset_when_idle = False
        self._restoring = False
        self._drawn_points: tuple[FitData, np.ndarray] | None = None  # data and its val split
        # the indices of the points drawn (all of them, or a sample of large data), ascending
        self.drawn_indices = np.arange(0)
        # (the data before, the drawn indices after, the edit that draws them in place) of a
        # click being applied
        self._pending_edit: tuple[FitData, np.ndarray, Callable[[], None]] | None = None
        self._clear_history()

        self._build_controls()
        self._build_plots()
        # The settings scroll on short screens (a 1366×768 laptop); the run buttons and the
        # readout stay in view below them, however short the window.
        controls = self.controls_scroll = scroll_area(self.controls_panel, horizontal=False)
        controls.setFrameShape(QFrame.Shape.NoFrame)
        controls.setFixedWidth(self.controls_panel.width()
                               + controls.verticalScrollBar().sizeHint().width())
        left = QVBoxLayout()
        left.addWidget(controls, 1)
        left.addWidget(self.run_panel, 0, Qt.AlignmentFlag.AlignLeft)
        layout = QHBoxLayout(self)
        layout.addLayout(left)
        layout.addWidget(self.plots, 1)
        self._restore_settings()
        self.reset()
        app.device_changed.connect(self._on_device_changed)

    # ---- building ----------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self.controls_panel = QWidget()
        self.controls_panel.setFixedWidth(330)  # a live readout must never re-lay out the plots
        panel = QVBoxLayout(self.controls_panel)
        panel.setContentsMargins(0, 0, 0, 0)

        data_box = QGroupBox("Data")
        data_layout = QVBoxLayout(data_box)
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load CSV…")
        self.load_button.clicked.connect(self._choose_csv)
        self.book_button = QPushButton("Book data")
        self.book_button.setToolTip("Go back to the book's 11 thermometer readings")
        self.book_button.clicked.connect(lambda: self.set_data(book_data()))
        row.addWidget(self.load_button)
        row.addWidget(self.book_button)
        data_layout.addWidget(self.data_label)
        data_layout.addLayout(row)
        hint = QLabel("Click the plot to add a point, click a point to remove it.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray")
        data_layout.addWidget(hint)
        panel.addWidget(data_box)

        settings_box = QGroupBox("Model and training")
        form = QFormLayout(settings_box)
        self.model_combo = QComboBox()
        self.model_combo.addItem("Linear  w·x + b", "linear")
        self.model_combo.addItem("MLP  Linear(1,H) → act → Linear(H,1)", "mlp")
        self.hidden_spin = QSpinBox()
        self.hidden_spin.setRange(1, 4096)
        self.hidden_spin.setValue(DEFAULT_HIDDEN)
        self.activation_combo = QComboBox()
        for name in ACTIVATIONS:
            self.activation_combo.addItem(name, name)
        self.optimizer_combo = QComboBox()
        for key, label in OPTIMIZER_LABELS.items():
            self.optimizer_combo.addItem(label, key)
        self.lr_spin = ScientificSpinBox(*LR_RANGE, 1e-2)
        self.lr_spin.setToolTip("Type 0.001 or 1e-3; the arrows step 1, 2, 5, 10…")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10_000_000)
        self.epochs_spin.setValue(5000)
        self.epochs_spin.setSingleStep(500)
        self.scale_spin = ScientificSpinBox(*INPUT_SCALE_RANGE, 0.1)
        self.scale_spin.setToolTip("The model sees input_scale * x (the book's t_un = 0.1 * t_u)")
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setDecimals(2)
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        form.addRow("Model", self.model_combo)
        form.addRow("Hidden units", self.hidden_spin)
        form.addRow("Activation", self.activation_combo)
        form.addRow("Optimizer", self.optimizer_combo)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Input scale", self.scale_spin)
        form.addRow("Validation fraction", self.val_spin)
        form.addRow("Seed", self.seed_spin)
        self.race_check = QCheckBox("Race: gradient descent vs momentum vs Adam")
        self.race_check.setToolTip("Same start, same learning rate, same loss surface")
        form.addRow(self.race_check)
        panel.addWidget(settings_box)
        self.setting_widgets = {
            "model": self.model_combo, "hidden": self.hidden_spin,
            "activation": self.activation_combo, "optimizer": self.optimizer_combo,
            "lr": self.lr_spin, "epochs": self.epochs_spin, "input_scale": self.scale_spin,
            "val_fraction": self.val_spin, "seed": self.seed_spin, "race": self.race_check,
        }
        for widget in self.setting_widgets.values():
            signal = (widget.currentIndexChanged if isinstance(widget, QComboBox)
                      else widget.toggled if isinstance(widget, QCheckBox)
                      else widget.valueChanged)
            signal.connect(self._on_setting_changed)

        buttons = QGridLayout()
        def icon(name: str):
            return self.style().standardIcon(getattr(QStyle.StandardPixmap, name))

        self.play_button = QPushButton(icon("SP_MediaPlay"), "Play")
        self.pause_button = QPushButton(icon("SP_MediaPause"), "Pause")
        self.step_button = QPushButton(icon("SP_MediaSeekForward"), "Step")
        self.step_button.setToolTip("Run one epoch")
        self.reset_button = QPushButton("Reset")
        self.stop_button = QPushButton(icon("SP_MediaStop"), "Stop")
        self.play_button.clicked.connect(self.play)
        self.pause_button.clicked.connect(self.pause)
        self.step_button.clicked.connect(self.step)
        self.reset_button.clicked.connect(self.request_reset)
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.play_button, 0, 0)
        buttons.addWidget(self.pause_button, 0, 1)
        buttons.addWidget(self.step_button, 0, 2)
        buttons.addWidget(self.reset_button, 1, 0)
        buttons.addWidget(self.stop_button, 1, 1)
        self.log_check = QCheckBox("Log loss")
        self.log_check.toggled.connect(self._apply_log_scale)
        buttons.addWidget(self.log_check, 1, 2)
        self.run_panel = QWidget()
        self.run_panel.setFixedWidth(self.controls_panel.width())
        run_layout = QVBoxLayout(self.run_panel)
        run_layout.setContentsMargins(0, 0, 0, 0)
        run_layout.addLayout(buttons)

        readout_box = self.readout_box = QGroupBox("Now")
        readout = QFormLayout(readout_box)
        self.epoch_label = QLabel("0")
        self.loss_label = QLabel("–")
        self.val_label = QLabel("–")
        self.params_label = QLabel("–")
        self.grads_label = QLabel("–")
        for label in (self.epoch_label, self.loss_label, self.val_label, self.params_label,
                      self.grads_label):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for label in (self.loss_label, self.params_label, self.grads_label):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        readout.addRow("Epoch", self.epoch_label)
        readout.addRow("Train loss", self.loss_label)
        readout.addRow("Val loss", self.val_label)
        readout.addRow("Parameters", self.params_label)
        readout.addRow("Gradients", self.grads_label)
        # the book prints each epoch's loss before its update; the summary is at the end
        self.readout_note = QLabel()
        self.readout_note.setWordWrap(True)
        self.readout_note.setStyleSheet("color: gray")
        readout.addRow(self.readout_note)
        run_layout.addWidget(readout_box)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.hide()
        # on top of the settings, where a message is in view (see _show_message)
        panel.insertWidget(0, self.message_label)
        panel.addStretch(1)

    def _build_plots(self) -> None:
        # One view per plot, so a new point on the loss curve repaints only the loss plot.
        self.data_view = pg.PlotWidget(title="Data and prediction")
        self.loss_view = pg.PlotWidget(title="Loss per epoch")
        self.surface_view = pg.PlotWidget(title="Loss surface over (w, b) and the path taken")
        self.plots = QWidget()
        grid = QGridLayout(self.plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.data_view, 0, 0)
        grid.addWidget(self.loss_view, 0, 1)
        grid.addWidget(self.surface_view, 1, 0, 1, 2)
        self.data_plot = self.data_view.getPlotItem()
        self.data_plot.setLabel("bottom", "x")
        self.data_plot.setLabel("left", "y")
        # fixed items: names given at creation
        self.data_legend = self.data_plot.addLegend(offset=(5, 5), **LEGEND_STYLE)
        self.train_points = UniformScatter(size=9, brush=pg.mkBrush(*TRAIN_COLOR),
                                           pen=pg.mkPen("w"), name="train")
        self.val_points = UniformScatter(size=11, symbol="s", brush=pg.mkBrush(*VAL_COLOR),
                                         pen=pg.mkPen("w"), name="validation")
        self.prediction_curve = pg.PlotDataItem(pen=pg.mkPen((240, 240, 90), width=2),
                                                name="prediction")
        # points added by clicks: the train points' style, no legend entry of their own
        self.added_points = UniformScatter(size=9, brush=pg.mkBrush(*TRAIN_COLOR),
                                           pen=pg.mkPen("w"))
        self.train_layer = EditablePoints(self.train_points, self.added_points)
        self.data_plot.addItem(self.train_points)
        self.data_plot.addItem(self.added_points)
        self.data_plot.addItem(self.val_points)
        # The view frames the data; a moving prediction must not rescale the axes every frame.
        self.data_plot.addItem(self.prediction_curve, ignoreBounds=True)
        self.data_plot.scene().sigMouseClicked.connect(self._on_scene_clicked)

        self.loss_plot = self.loss_view.getPlotItem()
        self.loss_plot.setLabel("bottom", "epoch")
        self.loss_plot.setLabel("left", "mean squared error")
        self.loss_legend = self.loss_plot.addLegend(offset=(-5, 5), **LEGEND_STYLE)
        self.train_curve = self.loss_plot.plot(pen=pg.mkPen(TRAIN_COLOR, width=2))
        self.val_curve = self.loss_plot.plot(pen=pg.mkPen(VAL_COLOR, width=2))
        self.race_curves = {
            name: self.loss_plot.plot(pen=pg.mkPen(RACER_PENS[name], width=2)) for name in RACERS
        }
        # each racer's validation loss: its colour, dashed
        self.race_val_curves = {
            name: self.loss_plot.plot(pen=pg.mkPen(RACER_PENS[name], width=2, style=Qt.DashLine))
            for name in RACERS
        }
        # one legend entry for all three (a legend sample only, never drawn on the plot)
        self.race_val_key = pg.PlotDataItem(pen=pg.mkPen("#888888", width=2, style=Qt.DashLine))
        for curve in (self.train_curve, self.val_curve, *self.race_curves.values(),
                      *self.race_val_curves.values()):
            make_fast(curve)
        self.best_val_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(VAL_COLOR, style=Qt.DashLine),
                                             label="lowest val loss", labelOpts={"position": 0.9})
        self.overfit_region = pg.LinearRegionItem(brush=pg.mkBrush(255, 80, 80, 45),
                                                  movable=False)
        self.loss_plot.addItem(self.best_val_line)
        self.loss_plot.addItem(self.overfit_region)

        self.surface_plot = self.surface_view.getPlotItem()
        self.surface_plot.setLabel("bottom", "w")
        self.surface_plot.setLabel("left", "b")
        self.surface_legend = self.surface_plot.addLegend(offset=(-5, 5), **LEGEND_STYLE)
        self._legend_entries: tuple[bool, bool] | None = None  # (race, race_val) they name
        self.surface_image = pg.ImageItem()
        self.surface_image.setColorMap(pg.colormap.get("viridis"))
        self.surface_plot.addItem(self.surface_image)
        # every level's contour in one curve of segment pairs, drawn once per data change
        # (pyqtgraph's IsocurveItem traces each level in Python: ~60 ms a click)
        self.contours = pg.PlotCurveItem(pen=pg.mkPen(255, 255, 255, 110), connect="pairs")
        self.surface_plot.addItem(self.contours)
        self.path_curve = self.surface_plot.plot(pen=pg.mkPen((240, 240, 90), width=2))
        self.race_paths = {
            name: self.surface_plot.plot(pen=pg.mkPen(RACER_PENS[name], width=2))
            for name in RACERS
        }
        self.optimum_marker = pg.ScatterPlotItem(size=14, symbol="star", brush=pg.mkBrush("w"))
        self.start_marker = pg.ScatterPlotItem(size=10, symbol="o", brush=pg.mkBrush("r"))
        self.surface_plot.addItem(self.optimum_marker)
        self.surface_plot.addItem(self.start_marker)
        # The surface and its contours stay put during a run: paint them from a cached pixmap.
        self.surface_image.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.contours.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.legends = ((self.data_view, self.data_legend), (self.loss_view, self.loss_legend),
                        (self.surface_view, self.surface_legend))
        for view, _ in self.legends:
            view.getPlotItem().vb.sigResized.connect(self._fit_legends)
            keep_text_whole(view)

    # ---- settings ------------------------------------------------------------------------------
    def config(self) -> FitConfig:
        """The settings in the controls as an engine config."""
        return FitConfig(
            model="linear" if self.race_check.isChecked() else self.model_combo.currentData(),
            hidden=self.hidden_spin.value(), activation=self.activation_combo.currentData(),
            optimizer=self.optimizer_combo.currentData(), lr=self.lr_spin.value(),
            epochs=self.epochs_spin.value(), input_scale=self.scale_spin.value(),
            val_fraction=self.val_spin.value(), seed=self.seed_spin.value(),
        )

    def _restore_settings(self) -> None:
        settings = self.app.settings
        self._restoring = True
        try:
            for name, widget in self.setting_widgets.items():
                value = settings.value(SETTINGS_PREFIX + name)
                if value is not None:
                    set_control_value(widget, value)  # a stale value keeps the default
            self.log_check.setChecked(
                str(settings.value(SETTINGS_PREFIX + "log_scale", "false")).lower() == "true")
        finally:
            self._restoring = False

    def _save_settings(self) -> None:
        settings = self.app.settings
        for name, widget in self.setting_widgets.items():
            settings.setValue(SETTINGS_PREFIX + name, control_value(widget))
        settings.setValue(SETTINGS_PREFIX + "log_scale", self.log_check.isChecked())

    def _on_setting_changed(self, *_: Any) -> None:
        if self._restoring:
            return
        self._save_settings()
        self._update_visibility()
        if not self.runner.is_running():
            self.reset()  # new settings mean a new run

    # ---- data -------------------------------------------------------------------------------
    def set_data(self, data: FitData,
                 edit: tuple[np.ndarray, Callable[[], None]] | None = None) -> bool:
        """Replace the points (only while idle) and start over; False while training. ``edit``,
        for data that is the current data with one point more or less: the indices drawn
        afterwards, and a function that changes the drawn points to them in place (used where
        no validation split is drawn)."""
        if self.runner.is_running():
            self.app.show_status("Pause or stop training to change the data.", 4000)
            return False
        self._pending_edit = (self.data, *edit) if edit is not None else None
        self.data = data
        self.reset()
        return True

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load x,y points", "",
                                              "CSV files (*.csv *.txt);;All files (*)")
        if path:
            self.load_csv_file(path)

    def load_csv_file(self, path: str) -> bool:
        """Start reading a CSV of x,y on a worker thread; False (with the reason shown) while
        training or another load runs. A bad file shows why, naming the line, and keeps the
        current data."""
        if self.runner.is_running():
            self.app.show_status("Pause or stop training to change the data.", 4000)
            return False
        if self.csv_runner.is_running():
            self.app.show_status("Still reading the previous CSV; load this one after it.", 4000)
            return False
        self._show_message(f"Reading {Path(path).name}…")
        self.csv_runner.start(read_csv_job, path)
        self._update_buttons()
        return True

    def is_loading(self) -> bool:
        return self.csv_runner.is_running()

    def _on_csv_loaded(self, data: FitData) -> None:
        self._show_message("")
        if self.set_data(data):
            self.app.show_status(f"Loaded {len(data)} points from {data.source}.", 5000)

    def _on_csv_failed(self, message: str) -> None:
        self._show_message(f"Could not load the CSV: {message}", error=True)
        self.app.show_error("Could not load the CSV", message)

    def take_dropped_paths(self, paths: list[str]) -> bool:
        """A CSV dropped on the tab loads, as Load CSV… does; other files are not this tab's."""
        if not paths or not all(p.lower().endswith((".csv", ".txt")) for p in paths):
            return False
        if len(paths) > 1:
            self.app.show_status("Drop one CSV file at a time: the fit uses one set of points.",
                                 6000)
        else:
            self.load_csv_file(paths[0])
        return True

    def add_point(self, x: float, y: float) -> None:
        """Add a point at the data's end; it is drawn, however many are."""
        drawn = np.append(self.drawn_indices, len(self.data))
        self.set_data(self.data.with_point(x, y), (drawn, lambda: self.train_layer.append(x, y)))

    def remove_point(self, index: int) -> None:
        if len(self.data) <= 2:
            self.app.show_status("A fit needs at least 2 points.", 4000)
            return
        drawn = self.drawn_indices
        row = int(np.searchsorted(drawn, index))  # where it is among the drawn points
        is_drawn = row < len(drawn) and drawn[row] == index
        after = np.delete(drawn, row) if is_drawn else drawn.copy()
        after[after > index] -= 1  # the points after it move up one

        def edit() -> None:
            if is_drawn:
                self.train_layer.remove(row)

        self.set_data(self.data.without_point(index), (after, edit))

    def _on_scene_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        view = self.data_plot.vb
        if not view.sceneBoundingRect().contains(event.scenePos()):
            return
        event.accept()
        self.click_at_scene(event.scenePos())

    def click_at_scene(self, scene_pos: QPointF) -> None:
        """A click on the data plot: remove the point under it, or add one there."""
        if self.runner.is_running():
            self.app.show_status("Pause or stop training to edit the points (an edit starts a "
                                 "new run).", 4000)
            return
        if self.csv_runner.is_running():  # the file's points would replace the edit
            self.app.show_status("Still reading the CSV file: edit its points once they are "
                                 "shown.", 4000)
            return
        nearest = self._point_near(scene_pos)
        if nearest is not None:
            self.remove_point(nearest)
        else:
            point = self.data_plot.vb.mapSceneToView(scene_pos)
            self.add_point(point.x(), point.y())

    def _point_near(self, scene_pos: QPointF) -> int | None:
        """The index of the point drawn nearest ``scene_pos``, if within the click radius
        (only drawn points: of large data, the sample shown)."""
        drawn = self.drawn_indices
        if not len(drawn):
            return None
        view = self.data_plot.vb
        # view → scene for all points at once; a ViewBox's transform is affine
        t = view.childTransform() * view.sceneTransform()
        x, y = self.data.arrays
        if len(drawn) < len(x):
            x, y = x[drawn], y[drawn]
        distances = np.hypot(t.m11() * x + t.m21() * y + t.m31() - scene_pos.x(),
                             t.m12() * x + t.m22() * y + t.m32() - scene_pos.y())
        nearest = int(np.argmin(distances))
        return int(drawn[nearest]) if distances[nearest] <= CLICK_RADIUS_PX else None

    # ---- run control --------------------------------------------------------------------------
    def is_race(self) -> bool:
        return self.race_check.isChecked()

    def _on_device_changed(self, _device: str) -> None:
        """A run that has not started moves to the new device; a paused one keeps its own."""
        if self.runner.is_running() or (self.session is not None and
                                        self.session.status not in ("ready", "done")):
            self.app.show_status("Linear fit: the new device applies from the next Reset.", 5000)
        else:
            self.reset()

    def _new_session(self) -> bool:
        """A fresh session from the controls; False (with the reason shown) if they are invalid."""
        try:
            config = self.config()
            config.validate()
            if self.is_race():
                self.session = RaceSession(config, self.data, self.app.single_device)
            else:
                self.session = FitSession(config, self.data, self.app.single_device)
        except (JobError, RuntimeError) as exc:
            self.session = None
            self._show_message(str(exc), error=True)
            return False
        return True

    def reset(self) -> None:
        """Forget the run: fresh model and optimizer, empty curves, the surface for the settings."""
        if self.runner.is_running():
            self.request_reset()
            return
        self.last_result = None
        self._clear_history()
        self._show_message("")
        ok = self._new_session()
        self._draw_data()
        self._draw_surface()
        self._redraw_curves()
        self._update_readout()
        self._update_visibility()
        self._update_buttons()
        if ok:
            self.epoch_label.setText("0")

    def request_reset(self) -> None:
        if self.runner.is_running():
            self._reset_when_idle = True
            self._stop_means_end = True
            self.runner.stop()
        else:
            self.reset()

    def _session_can_continue(self) -> bool:
        s = self.session
        return s is not None and s.status in ("ready", "paused", "stopped") and \
            not self._stop_means_end and s.remaining_epochs > 0

    def play(self) -> None:
        """Run to the configured number of epochs, resuming a paused run."""
        self._continue_or_restart(run_epochs=None)

    def step(self) -> None:
        """Run exactly one epoch; after the last one (or Stop), of a new run, as Play does."""
        self._continue_or_restart(run_epochs=1)

    def _continue_or_restart(self, run_epochs: int | None) -> None:
        if self.runner.is_running():
            return
        if not self._session_can_continue():
            self.reset()
            if self.session is None:
                return
        self._start(run_epochs=run_epochs)

    def pause(self) -> None:
        if self.runner.is_running():
            self._stop_means_end = False
            self.runner.stop()

    def stop(self) -> None:
        """End the run; the next Play starts over from the initial parameters."""
        if self.runner.is_running():
            self._stop_means_end = True
            self.runner.stop()

    def _start(self, run_epochs: int | None) -> None:
        self._stop_means_end = False
        self.end_losses = None
        self._show_message("")
        job = race_job if isinstance(self.session, RaceSession) else fit_job
        # the session's own device: one chosen since its Reset applies from the next one
        self.runner.start(job, {"session": self.session, "run_epochs": run_epochs},
                          str(self.session.device))
        self._update_buttons()

    def is_running(self) -> bool:
        return self.runner.is_running()

    # ---- job news -----------------------------------------------------------------------------
    def _clear_history(self) -> None:
        self.epochs = GrowingArray()
        self.train_losses = GrowingArray()
        self.val_losses = GrowingArray()
        self.path_w = GrowingArray()
        self.path_b = GrowingArray()
        self.race_history: dict[str, dict[str, GrowingArray]] = {
            name: {key: GrowingArray() for key in ("epoch", "loss", "val", "w", "b")}
            for name in RACERS
        }
        self.race_dropped: set[str] = set()  # racers that diverged
        self.last_update: dict[str, Any] = {}
        # the returned run's losses at its final parameters (a race: per racer), while idle
        self.end_losses: dict[str, Any] | None = None
        self.last_snapshot: dict[str, Any] | None = None
        # (epoch, val loss) of the lowest validation loss so far, counted as the engine does
        self.best_val: tuple[int, float] | None = None
        self._frame = 0
        self._loss_range: tuple[float, tuple[float, float] | None] | None = None

    def _on_progress(self, batch: list[dict]) -> None:
        # Collect the batch in lists, then grow the history arrays once per batch.
        epochs, train, val, path_w, path_b = [], [], [], [], []
        for update in batch:
            kind = update.get("kind")
            if kind == "epoch":
                epochs.append(update["epoch"])
                train.append(update["train_loss"])
                if "val_loss" in update:
                    val.append(update["val_loss"])
                    if self.best_val is None or update["val_loss"] < self.best_val[1]:
                        self.best_val = (update["epoch"], update["val_loss"])
                if "w" in update:
                    path_w.append(update["w"])
                    path_b.append(update["b"])
                self.last_update = update
            elif kind == "race":
                for name, racer in update["racers"].items():
                    history = self.race_history[name]
                    history["epoch"].append(update["epoch"])
                    history["loss"].append(racer["train_loss"])
                    if "val_loss" in racer:
                        history["val"].append(racer["val_loss"])
                    history["w"].append(racer["w"])
                    history["b"].append(racer["b"])
                for name, message in update.get("diverged", {}).items():
                    self.race_dropped.add(name)
                    self._show_message(f"{name} dropped out. {message}", error=True)
                self.last_update = update
            elif kind == "snapshot":
                self.last_snapshot = update
            elif kind == "diverged":  # the epoch the message names, not the last good one
                self.last_update = update
        for history, values in ((self.epochs, epochs), (self.train_losses, train),
                                (self.val_losses, val), (self.path_w, path_w),
                                (self.path_b, path_b)):
            if values:
                history.extend(values)
        # Alternate between the loss plot and the fit plots so each frame stays short.
        self._frame += 1
        loss_turn = self._frame % 2 == 1
        self._redraw_curves(("loss",) if loss_turn else ("fit",))
        self._update_readout()
        if self.isVisible():
            views = [self.loss_view] if loss_turn else [self.data_view, self.surface_view]
            self._paint_now([*views, self.readout_box])

    def _paint_now(self, views: list) -> None:
        """Paint ``views`` now, while the bridge holds the worker (see gui/bridge.py).

        A graphics scene reports changed items through a queued call; deliver it first so the
        repaint draws this batch and leaves nothing to paint later, outside that window.
        """
        for view in views:
            if view.isVisible():
                if hasattr(view, "scene"):
                    # pyqtgraph applies auto-range when a paint starts; do it before painting,
                    # or the range change asks for a second paint after the window closes.
                    view.scene().prepareForPaint()
                    QCoreApplication.sendPostedEvents(view.scene(), QEvent.Type.MetaCall.value)
                view.repaint()

    def _on_returned(self, result: dict) -> None:
        self.last_result = result
        self.end_losses = self._final_losses(result)
        self._update_readout()
        self._loss_range = None
        self._redraw_curves()
        self._frame_all_losses()
        status = result.get("status")
        epoch = result.get("epochs", 0)
        if status == "diverged":
            message = result.get("message") or \
                "Every optimizer diverged: lower the learning rate or the input scale."
            self._show_message(message, error=True)
            self.app.show_status("Training diverged — see the Linear fit tab for what to try.",
                                 10000)
        elif status == "stopped" and self._stop_means_end:
            self.app.show_status(f"Linear fit stopped at epoch {epoch}.", 5000)
        elif status == "stopped":
            self.app.show_status(f"Linear fit paused at epoch {epoch}; Play resumes.", 5000)
        elif status == "done":
            summary = self._result_summary(result)
            self._show_message(summary)
            self.app.show_status(summary, 8000)

    def _on_run_finished(self) -> None:
        """A run ended, however (returned or errored): a Reset asked during it happens now."""
        if self._reset_when_idle:
            self._reset_when_idle = False
            self._stop_means_end = False
            self.reset()
        else:
            self._update_buttons()

    def _on_errored(self, message: str) -> None:
        self._show_message(message, error=True)
        self.app.show_error("Linear fit", message)

    @staticmethod
    def _final_losses(result: dict) -> dict[str, Any] | None:
        """(train, val) loss at the final parameters: ``{"": …}``, or per racer; None for a
        diverged run (its readout keeps the epoch the message names)."""
        if result.get("status") == "diverged":
            return None
        racers = result.get("racers", {"": result})
        return {name: (r["train_loss"], r["val_loss"]) for name, r in racers.items()
                if r["status"] != "diverged"}

    def _result_summary(self, result: dict) -> str:
        if "racers" in result:
            parts = []
            for name, r in result["racers"].items():
                if r["status"] == "diverged":
                    parts.append(f"{name}: diverged")
                elif r.get("val_loss") is not None:
                    parts.append(f"{name}: loss {r['train_loss']:.4g}, val {r['val_loss']:.4g}")
                else:
                    parts.append(f"{name}: loss {r['train_loss']:.4g}")
            return f"Race over after {result['epochs']} epochs; at the final parameters " \
                "— " + ", ".join(parts) + \
                (f". Leader: {result['leader']}." if result.get("leader") else ".")
        text = f"Done: {result['epochs']} epochs. At the final parameters"
        params = result["params"]
        if "w" in params:
            text += f" (w = {params['w']:.4f}, b = {params['b']:.4f})"
        text += f": train loss {result['train_loss']:.6f}"
        if result.get("val_loss") is not None:
            text += f", val loss {result['val_loss']:.4f} (lowest {result['best_val_loss']:.4f}" \
                    f" at epoch {result['best_val_epoch']})"
        return text + "."

    # ---- drawing ------------------------------------------------------------------------------
    def _show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #e05050; font-weight: bold" if error else "")
        self.message_label.setVisible(bool(text))
        if text:  # scrolled down to the settings: back up to where it is said
            self.controls_scroll.verticalScrollBar().setValue(0)

    def _draw_data(self) -> None:
        x, y = self.data.arrays
        session = self.session
        val_idx = session_val_indices(session) if session is not None else np.arange(0)
        pending, self._pending_edit = self._pending_edit, None
        drawn = self._drawn_points
        edited = pending is not None and drawn is not None and drawn[0] is pending[0]
        if edited:  # a click: one point more or less, the others drawn where they are
            self.drawn_indices = pending[1]
        elif drawn is None or drawn[0] is not self.data:  # new data
            self.drawn_indices = drawn_sample(len(self.data))
        shown = self.drawn_indices
        if drawn is not None and drawn[0] is self.data and np.array_equal(drawn[1], val_idx):
            pass  # a new setting keeps the points
        elif edited and not len(drawn[1]) and not len(val_idx):
            pending[2]()  # in place
        elif len(val_idx):  # a new split moves points between the two items
            held_out = np.isin(shown, val_idx, assume_unique=True)
            train_shown, val_shown = shown[~held_out], shown[held_out]
            self.train_layer.set_points(x[train_shown], y[train_shown])
            self.val_points.setData(x[val_shown], y[val_shown])
        else:  # every point trains
            self.train_layer.set_points(x[shown], y[shown])
            self.val_points.setData([], [])
        self._drawn_points = (self.data, val_idx)
        text = f"{len(self.data):,} points — {self.data.source}"
        if len(val_idx):
            text += f" ({len(val_idx):,} held out for validation)"
        if len(shown) < len(self.data):
            text += f". Showing a random {len(shown):,} of them; training uses all."
        self.data_label.setText(text)

    def _draw_surface(self) -> None:
        session = self.session
        linear = session is not None and (isinstance(session, RaceSession) or session.is_linear)
        if not linear:
            self.surface_image.clear()
            self.contours.setData([], [])
            return
        surface = session.surface() if isinstance(session, RaceSession) \
            else session_surface(session)
        levels = log_loss(surface["loss"])
        w, b = surface["w"], surface["b"]
        dw, db = w[1] - w[0], b[1] - b[0]
        self.surface_image.setImage(levels, autoLevels=True)
        self.surface_image.setRect(QRectF(w[0] - dw / 2, b[0] - db / 2,
                                          w[-1] - w[0] + dw, b[-1] - b[0] + db))
        self.contours.setData(*contour_segments(levels, w, b, self.contour_levels(levels)))
        optimum = surface["optimum"]
        self.optimum_marker.setData([optimum["w"]], [optimum["b"]])
        self.start_marker.setData([1.0], [0.0])
        self.surface_plot.setRange(xRange=(w[0], w[-1]), yRange=(b[0], b[-1]), padding=0)

    @staticmethod
    def contour_levels(log_losses: np.ndarray) -> np.ndarray:
        """The log10 losses the contours are drawn at: evenly spaced inside the finite range
        (none where the losses overflow everywhere)."""
        finite = log_losses[np.isfinite(log_losses)]
        if not len(finite):
            return np.empty(0)
        return np.linspace(finite.min(), finite.max(), CONTOUR_LEVELS + 2)[1:-1]

    def _redraw_curves(self, parts: tuple[str, ...] = ("loss", "fit")) -> None:
        """Push the history into the persistent plot items: the loss plot, and/or the fit
        (prediction over the data and the path over the loss surface)."""
        if "loss" in parts:
            self._redraw_loss()
        if "fit" in parts:
            self._redraw_fit()

    def _redraw_loss(self) -> None:
        epochs = self.epochs.values
        self.train_curve.setData(epochs, self.train_losses.values)
        if len(self.val_losses):
            self.val_curve.setData(epochs[-len(self.val_losses):], self.val_losses.values)
        else:
            self.val_curve.setData([], [])
        for name, curve in self.race_curves.items():
            history = self.race_history[name]
            curve.setData(history["epoch"].values, history["loss"].values)
            has_val = len(history["val"]) > 0  # then one per epoch
            self.race_val_curves[name].setData(history["epoch"].values if has_val else [],
                                               history["val"].values)
        self._draw_overfitting()
        if self.runner.is_running():
            self._step_loss_range()

    def _step_loss_range(self) -> None:
        """During a run, move the loss plot's range in steps rather than every frame: new axis
        ticks are the costliest part of a frame. Auto-range returns when the run ends."""
        race = isinstance(self.session, RaceSession)
        series = ([h[key].values for h in self.race_history.values() for key in ("loss", "val")]
                  if race else [self.train_losses.values, self.val_losses.values])
        values = np.concatenate(series)
        if self.log_check.isChecked():
            values = np.log10(values[values > 0])
        values = values[np.isfinite(values)]
        last_epoch = max((float(h["epoch"][-1]) for h in self.race_history.values()
                          if len(h["epoch"])), default=0.0) if race else \
            (float(self.epochs[-1]) if len(self.epochs) else 0.0)
        if not len(values) or last_epoch <= 0:
            return
        lo, hi = float(values.min()), float(values.max())
        span = max(hi - lo, 1e-9)
        x_max, y_range = self._loss_range or (0.0, None)
        if last_epoch > x_max:
            x_max = max(10.0, 1.5 * last_epoch)
        if y_range is None or lo < y_range[0] or hi > y_range[1] or \
                span < 0.5 * (y_range[1] - y_range[0]):
            y_range = (lo - 0.25 * span, hi + 0.05 * span)
        if (x_max, y_range) != self._loss_range:
            self._loss_range = (x_max, y_range)
            self.loss_plot.setRange(xRange=(0, x_max), yRange=y_range, padding=0)

    def _frame_all_losses(self) -> None:
        """Show every epoch of the run, then leave the range to auto-range.

        Auto-range alone can frame nothing: the curves' downsampling is sized for the range
        shown, and a few points in a range wide enough for thousands (a short run after a long
        one) downsample to none, so auto-range finds no data and keeps the old range."""
        last_epochs = [float(h["epoch"][-1]) for h in self.race_history.values()
                       if len(h["epoch"])]
        if len(self.epochs):
            last_epochs.append(float(self.epochs[-1]))
        if last_epochs:
            self.loss_plot.setXRange(0, max(last_epochs), padding=0.02)
        self.loss_plot.enableAutoRange()

    def _redraw_fit(self) -> None:
        race = isinstance(self.session, RaceSession)
        for name, path in self.race_paths.items():
            history = self.race_history[name]
            path.setData(*self._display_path(history["w"], history["b"]))
        if race or not len(self.path_w):
            self.path_curve.setData([], [])
        else:
            self.path_curve.setData(*self._display_path(self.path_w, self.path_b))
        self._draw_prediction()

    @staticmethod
    def _display_path(w: GrowingArray, b: GrowingArray) -> tuple[np.ndarray, np.ndarray]:
        """The optimizer's path from the start (1, 0), thinned to what a plot can show."""
        return thin_path(np.concatenate(([1.0], w.values)), np.concatenate(([0.0], b.values)))

    def _draw_prediction(self) -> None:
        session = self.session
        if session is None:
            self.prediction_curve.setData([], [])
            return
        scale = self.scale_spin.value()
        xs = np.array(first_session(session).curve_range)  # where an MLP's curve is drawn too
        if isinstance(session, RaceSession):
            leader = self._race_leader()
            if leader is None:
                self.prediction_curve.setData([], [])
                return
            history = self.race_history[leader]
            w, b = history["w"][-1], history["b"][-1]
        elif session.is_linear:
            w = self.last_update.get("w", 1.0)
            b = self.last_update.get("b", 0.0)
        else:
            if self.last_snapshot is None:
                self.prediction_curve.setData([], [])
                return
            self.prediction_curve.setData(self.last_snapshot["curve_x"],
                                          self.last_snapshot["curve_y"])
            return
        if math.isfinite(w) and math.isfinite(b):
            self.prediction_curve.setData(xs, w * scale * xs + b)

    def _race_leader(self) -> str | None:
        if self.end_losses is not None and self.last_result is not None:
            return self.last_result.get("leader")  # by the losses at the final parameters
        losses = {n: h["loss"][-1] for n, h in self.race_history.items()
                  if len(h["loss"]) and n not in self.race_dropped}
        finite = {n: v for n, v in losses.items() if math.isfinite(v)}
        return min(finite, key=finite.get) if finite else None

    def _draw_overfitting(self) -> None:
        """Mark the epoch of lowest validation loss and shade the epochs after it where
        validation loss has risen while training loss kept falling."""
        mlp = isinstance(self.session, FitSession) and not self.session.is_linear
        if self.best_val is None or not mlp:
            self.best_val_line.hide()
            self.overfit_region.hide()
            return
        best_epoch, best_loss = self.best_val
        self.best_val_line.setValue(best_epoch)
        self.best_val_line.show()
        current_epoch, current_val = self.epochs[-1], self.val_losses[-1]
        if current_val > OVERFIT_MARGIN * best_loss and current_epoch > best_epoch:
            self.overfit_region.setRegion((best_epoch, current_epoch))
            self.overfit_region.show()
        else:
            self.overfit_region.hide()

    def is_overfitting(self) -> bool:
        return self.overfit_region.isVisible()

    def _update_readout(self) -> None:
        update = self.last_update
        if not update:
            self.epoch_label.setText("0")
            for label in (self.loss_label, self.val_label, self.params_label, self.grads_label):
                label.setText("–")
            self.readout_note.setText("")
            return
        epoch = update["epoch"]
        diverged = update.get("kind") == "diverged"
        self.epoch_label.setText(f"{epoch:,}" + (" (diverged)" if diverged else ""))
        self.readout_note.setText(self._readout_note(epoch))
        if update.get("kind") == "race":
            self._update_race_readout()
            return
        train, val = update["train_loss"], update.get("val_loss")
        if self.end_losses is not None:
            train, val = self.end_losses[""]
        self.loss_label.setText(format_loss(train, ".6g"))
        self.val_label.setText(format_loss(val, ".6g"))
        if "w" in update:
            self.params_label.setText(f"w = {update['w']:.5g}, b = {update['b']:.5g}")
            # one per line: both side by side overflow the panel once they grow large
            self.grads_label.setText(f"∂L/∂w = {update['grad_w']:.4g}\n"
                                     f"∂L/∂b = {update['grad_b']:.4g}")
        elif self.last_snapshot is not None:
            snap = self.last_snapshot
            count = self.session.param_count if isinstance(self.session, FitSession) else 0
            self.params_label.setText(f"{count} parameters, ‖θ‖ = {snap['param_norm']:.4g}")
            self.grads_label.setText(f"‖∇θ‖ = {snap['grad_norm']:.4g}" if "grad_norm" in snap
                                     else "–")

    def _readout_note(self, epoch: int) -> str:
        """Which parameters the readout's numbers are measured at."""
        has_gradients = "grad_w" in self.last_update
        if self.end_losses is not None:
            gradients = "; gradients from before it" if has_gradients else ""
            return f"Losses at the parameters shown, after epoch {epoch:,}'s update{gradients}."
        train = "Train loss and gradients" if has_gradients else "Train loss"
        return (f"{train}: before epoch {epoch:,}'s update, as the book prints it; "
                "val loss and parameters: after it.")

    def _update_race_readout(self) -> None:
        losses, vals, params = [], [], []
        for name, history in self.race_history.items():
            if name in self.race_dropped:  # its last numbers are no fit
                losses.append(f"{name} diverged")
                vals.append(f"{name} diverged")
                params.append(f"{name}: diverged")
                continue
            if not len(history["loss"]):
                continue
            train = history["loss"][-1]
            val = history["val"][-1] if len(history["val"]) else None
            if self.end_losses is not None and name in self.end_losses:
                train, val = self.end_losses[name]
            losses.append(f"{name} {format_loss(train, '.4g')}")
            params.append(f"{name}: w {history['w'][-1]:.5g}, b {history['b'][-1]:.5g}")
            if val is not None:
                vals.append(f"{name} {format_loss(val, '.4g')}")
        # one line per racer: three numbers side by side do not fit the panel
        self.loss_label.setText("\n".join(losses) or "–")
        with_val = any(len(history["val"]) for history in self.race_history.values())
        self.val_label.setText("\n".join(vals) if with_val else "–")
        self.params_label.setText("\n".join(params) or "–")
        self.grads_label.setText("–")

    def _apply_log_scale(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        if not self._restoring:
            self.app.settings.setValue(SETTINGS_PREFIX + "log_scale", on)

    def _update_visibility(self) -> None:
        race = self.is_race()
        mlp = not race and self.model_combo.currentData() == "mlp"
        self.model_combo.setEnabled(not race)
        self.hidden_spin.setEnabled(mlp)
        self.activation_combo.setEnabled(mlp)
        self.optimizer_combo.setEnabled(not race)
        self.surface_view.setVisible(not mlp)
        self.train_curve.setVisible(not race)
        self.val_curve.setVisible(not race)
        self.path_curve.setVisible(not race)
        race_val = race and self.val_spin.value() > 0
        for name in RACERS:
            self.race_curves[name].setVisible(race)
            self.race_val_curves[name].setVisible(race_val)
            self.race_paths[name].setVisible(race)
        self._fill_legends(race, race_val)

    def _fill_legends(self, race: bool, race_val: bool) -> None:
        """Name the curves shown; only when that changes (rebuilding costs ~15 ms a click)."""
        if self._legend_entries == (race, race_val):
            return
        self._legend_entries = (race, race_val)
        self.loss_legend.clear()
        self.surface_legend.clear()
        if race:
            for name in RACERS:
                self.loss_legend.addItem(self.race_curves[name], name)
                self.surface_legend.addItem(self.race_paths[name], name)
            if race_val:
                self.loss_legend.addItem(self.race_val_key, "dashed: val")
        else:
            self.loss_legend.addItem(self.train_curve, "train")
            self.loss_legend.addItem(self.val_curve, "validation")
            self.surface_legend.addItem(self.path_curve, "path")
        self.surface_legend.addItem(self.start_marker, "start (1, 0)")
        self.surface_legend.addItem(self.optimum_marker, "minimum")
        self._fit_legends()

    def _fit_legends(self, *_: Any) -> None:
        """Show each legend only where it leaves its plot's data in view (see LEGEND_MAX_SHARE)."""
        for view, legend in self.legends:
            plot_size, size = view.getPlotItem().vb.boundingRect(), legend.boundingRect()
            fits = size.width() <= LEGEND_MAX_SHARE[0] * plot_size.width() and \
                size.height() <= LEGEND_MAX_SHARE[1] * plot_size.height()
            legend.setVisible(fits)
            names = ", ".join(label.text for _, label in legend.items)
            view.setToolTip("" if fits else
                            f"Legend hidden at this size (enlarge the window to see it): {names}")

    def _update_buttons(self) -> None:
        running = self.runner.is_running()
        busy = running or self.csv_runner.is_running()  # a run would train on the old data
        self.play_button.setEnabled(not busy)
        self.step_button.setEnabled(not busy)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.load_button.setEnabled(not busy)
        self.book_button.setEnabled(not busy)
        for widget in self.setting_widgets.values():
            widget.setEnabled(not running)
        if not running:
            self._update_visibility()

    # ---- contract -----------------------------------------------------------------------------
    def shutdown(self) -> bool:
        """Stop and join the training and CSV threads (window closing); False if one still runs."""
        loader_done = self.csv_runner.shutdown(5000)
        return self.runner.shutdown(5000) and loader_done

    def prepare_screenshot(self, wait: Callable[[Callable[[], bool], float], None]) -> None:
        """Run the book's chapter-5 fit (5000 epochs of gradient descent on t_un = 0.1 * t_u)."""
        self._restoring = True  # the screenshot's settings are not the user's
        try:
            self.data = book_data()
            self.race_check.setChecked(False)
            self.model_combo.setCurrentIndex(self.model_combo.findData("linear"))
            self.optimizer_combo.setCurrentIndex(self.optimizer_combo.findData("gd"))
            self.lr_spin.setValue(1e-2)
            self.epochs_spin.setValue(5000)
            self.scale_spin.setValue(0.1)
            self.val_spin.setValue(0.0)
            self.seed_spin.setValue(0)
            self.log_check.setChecked(True)
        finally:
            self._restoring = False
        self.reset()
        self.play()
        wait(lambda: not self.runner.is_running(), 120)


def read_csv_job(path: str, _ctx: Any) -> FitData:
    """The CSV's points, as a job for a :class:`JobRunner` (raises JobError on a bad file);
    their arrays are made here too, off the GUI thread (2M points: ~0.15 s)."""
    data = load_csv(path)
    data.arrays  # noqa: B018 (a cached property, made now)
    return data


def drawn_sample(n_points: int) -> np.ndarray:
    """The indices of the points to draw, ascending: all of them, or beyond MAX_DRAWN_POINTS a
    uniform random sample (the same for the same count, so reloading draws the same)."""
    if n_points <= MAX_DRAWN_POINTS:
        return np.arange(n_points)
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n_points, MAX_DRAWN_POINTS, replace=False))


def format_loss(value: float | None, spec: str) -> str:
    """A loss for the readout; "–" where there is none (no split, or not finite)."""
    return "–" if value is None else format(value, spec)


def first_session(session: FitSession | RaceSession) -> FitSession:
    """The session itself, or a race's first racer (they share data, split and ranges)."""
    return next(iter(session.sessions.values())) if isinstance(session, RaceSession) \
        else session


def session_val_indices(session: FitSession | RaceSession) -> np.ndarray:
    return first_session(session).val_indices
