"""The CIFAR-10 tab's live curves: training loss per step, train and test accuracy per epoch."""

from __future__ import annotations

import pyqtgraph as pg

from gui.plotting import GrowingArray, keep_text_whole, make_fast


class TrainingCurves:
    """The loss and accuracy plots (two widgets, which the tab lays out) and the points they
    show. Points added are drawn by :meth:`redraw`, once per batch of progress: the curves are
    persistent ``PlotDataItem``s given their histories (``GrowingArray``s) at once, and draw
    only what fits their pixels."""

    def __init__(self) -> None:
        self.loss_plot = pg.PlotWidget(title="Loss (smoothed)")
        self.loss_plot.setLabel("bottom", "epoch")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#3b82f6", width=2))
        self.acc_plot = pg.PlotWidget(title="Accuracy")
        self.acc_plot.setLabel("bottom", "epoch")
        self.acc_plot.setYRange(0, 1)
        self.acc_plot.showGrid(x=True, y=True, alpha=0.3)
        self.acc_plot.addLegend(offset=(-10, -10))
        self.train_acc_curve = self.acc_plot.plot([], [], pen=pg.mkPen("#f97316", width=2),
                                                  symbol="o", symbolSize=6, name="train")
        self.test_acc_curve = self.acc_plot.plot([], [], pen=pg.mkPen("#16a34a", width=2),
                                                 symbol="s", symbolSize=6, name="test")
        for plot in (self.loss_plot, self.acc_plot):
            keep_text_whole(plot)  # in a small window: narrower plots, never a title cut
        make_fast(self.loss_curve, all_finite=False)  # a diverging run's loss is NaN or inf
        for curve in (self.train_acc_curve, self.test_acc_curve):
            make_fast(curve)
        self._steps = GrowingArray()  # in epochs
        self._losses = GrowingArray()
        self._epochs = GrowingArray()
        self._train_acc = GrowingArray()
        self._test_epochs = GrowingArray()
        self._test_acc = GrowingArray()
        self._loss_added = self._acc_added = False  # points not drawn yet

    def clear(self) -> None:
        """Forget every point (a new run starts)."""
        for values in (self._steps, self._losses, self._epochs, self._train_acc,
                       self._test_epochs, self._test_acc):
            values.clear()
        self._redraw_loss()
        self._redraw_accuracy()
        self._loss_added = self._acc_added = False
        for plot in (self.loss_plot, self.acc_plot):
            # The downsampling is sized for the x range shown: a new run's first points in
            # the last run's range (hundreds of epochs) would thin out to none, leaving
            # auto-range nothing to frame. A new run starts in its first epoch.
            plot.setXRange(0, 1, padding=0)
            plot.enableAutoRange(x=True)
        self._fit_axes_to_their_labels()

    def _fit_axes_to_their_labels(self) -> None:
        """Let the y axes take the width of the tick labels they show next.

        An axis keeps the widest labels it has shown until its labels are over 10 px
        narrower (pyqtgraph's guard against a rapidly auto-scaling axis changing size every
        frame): a loss range first seen with three decimals ("2.275") would keep its width
        after the range had grown ("0.5"), by how the reports fell. ``textWidth`` is that
        remembered width; ``setWidth(None)`` sizes the axis from it."""
        for plot in (self.loss_plot, self.acc_plot):
            axis = plot.getAxis("left")
            axis.textWidth = 0
            axis.setWidth(None)

    def add_step(self, epochs: float, loss: float) -> None:
        """A training step's loss, ``epochs`` into the run."""
        self._steps.append(epochs)
        self._losses.append(loss)
        self._loss_added = True

    def add_epoch(self, row: dict) -> None:
        """An epoch's ``train_acc`` (and ``test_acc`` when it was evaluated)."""
        self._epochs.append(row["epoch"])
        self._train_acc.append(row["train_acc"])
        if "test_acc" in row:
            self._test_epochs.append(row["epoch"])
            self._test_acc.append(row["test_acc"])
        self._acc_added = True

    def redraw(self) -> None:
        """Draw the points added since the last redraw."""
        if self._loss_added:
            self._redraw_loss()
        if self._acc_added:
            self._redraw_accuracy()
        self._loss_added = self._acc_added = False

    def _redraw_loss(self) -> None:
        self.loss_curve.setData(self._steps.values, self._losses.values)

    def _redraw_accuracy(self) -> None:
        self.train_acc_curve.setData(self._epochs.values, self._train_acc.values)
        self.test_acc_curve.setData(self._test_epochs.values, self._test_acc.values)

    def show_history(self, history: list[dict], losses: bool = True) -> None:
        """Draw a run's per-epoch rows: accuracies, and (``losses``) each epoch's mean training
        loss where the live curve has no steps yet (a resumed run's earlier epochs). A run's
        rows come at its start and its end: its axes then fit the labels they show."""
        self._fit_axes_to_their_labels()
        for values in (self._epochs, self._train_acc, self._test_epochs, self._test_acc):
            values.clear()
        self._epochs.extend(row["epoch"] for row in history)
        self._train_acc.extend(row["train_acc"] for row in history)
        tested = [row for row in history if "test_acc" in row]
        self._test_epochs.extend(row["epoch"] for row in tested)
        self._test_acc.extend(row["test_acc"] for row in tested)
        self._redraw_accuracy()
        self._acc_added = False
        if losses and not len(self._steps):
            self._steps.extend(float(row["epoch"]) for row in history)
            self._losses.extend(row["train_loss"] for row in history)
            self._redraw_loss()
            self._loss_added = False
