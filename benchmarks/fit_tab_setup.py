"""What the Linear-fit benchmarks share: the real tab, shown offscreen, and the plain baseline."""

from __future__ import annotations

import tempfile
from pathlib import Path


def fit_tab_and_plain_scatter():
    """(app, tab, baseline_widget, baseline): a shown LinearFitTab with settings of its own, and
    a plain ``pg.ScatterPlotItem`` in a plot the size of the tab's data view (what the tab
    used to draw)."""
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from gui.app_state import AppState
    from gui.tabs.linear_fit import TRAIN_COLOR, LinearFitTab

    settings = QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"),
                         QSettings.Format.IniFormat)
    tab = LinearFitTab(AppState(settings))
    tab.resize(1300, 850)
    tab.show()
    baseline_widget = pg.PlotWidget()
    baseline_widget.resize(tab.data_view.size())
    baseline_widget.show()
    baseline = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(*TRAIN_COLOR), pen=pg.mkPen("w"))
    baseline_widget.addItem(baseline)
    return app, tab, baseline_widget, baseline
