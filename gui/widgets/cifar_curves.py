"""The CIFAR-10 tab's live curves: training loss per step, train and test accuracy per epoch."""

from __future__ import annotations

import pyqtgraph as pg


class TrainingCurves:
    """The loss and accuracy plots (two widgets, which the tab lays out) and the points they
    show. Points added are drawn by :meth:`redraw`, once per batch of progress: the curves are
    persistent ``PlotDataItem``s given all their points at once."""

    def __init__(self) -> None:
        self.loss_plot = pg.PlotWidget(title="Training loss (smoothed)")
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
        self._steps: list[float] = []  # in epochs
        self._losses: list[float] = []
        self._epochs: list[float] = []
        self._train_acc: list[float] = []
        self._test_epochs: list[float] = []
        self._test_acc: list[float] = []
        self._loss_added = self._acc_added = False  # points not drawn yet

    def clear(self) -> None:
        for values in (self._steps, self._losses, self._epochs, self._train_acc,
                       self._test_epochs, self._test_acc):
            values.clear()
        self.loss_curve.setData([], [])
        self.train_acc_curve.setData([], [])
        self.test_acc_curve.setData([], [])

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
            self.loss_curve.setData(self._steps, self._losses)
        if self._acc_added:
            self.train_acc_curve.setData(self._epochs, self._train_acc)
            self.test_acc_curve.setData(self._test_epochs, self._test_acc)
        self._loss_added = self._acc_added = False

    def show_history(self, history: list[dict], losses: bool = True) -> None:
        """Draw a run's per-epoch rows: accuracies, and (``losses``) each epoch's mean training
        loss where the live curve has no steps yet (a resumed run's earlier epochs)."""
        self._epochs[:] = [row["epoch"] for row in history]
        self._train_acc[:] = [row["train_acc"] for row in history]
        self._test_epochs[:] = [row["epoch"] for row in history if "test_acc" in row]
        self._test_acc[:] = [row["test_acc"] for row in history if "test_acc" in row]
        self.train_acc_curve.setData(self._epochs, self._train_acc)
        self.test_acc_curve.setData(self._test_epochs, self._test_acc)
        if losses and not self._steps:
            self._steps[:] = [float(row["epoch"]) for row in history]
            self._losses[:] = [row["train_loss"] for row in history]
            self.loss_curve.setData(self._steps, self._losses)
