"""Large data on the Linear-fit tab: new data, a validation split, a click and a run's frame,
each timed until painted, against drawing every point in a plain scatter.

Builds the real LinearFitTab (offscreen) and, for each size, times on the GUI thread:
``set_data`` of N random points, switching a validation split on (0.2) and off, a click that
removes a drawn point, and a run's frame of the data plot (the prediction moves, the points are
painted again).
The baseline, timed in the same run, is the plain approach: a ``pg.ScatterPlotItem`` given all N
points with ``setData`` and painted in a plot of the same size (what the tab used to draw).

    python benchmarks/fit_big_data.py [--points 100000,2000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="100000,2000000",
                        help="comma-separated sizes (default: 100000,2000000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from PySide6.QtCore import QPointF

    from benchmarks.fit_tab_setup import fit_tab_and_plain_scatter

    app, tab, baseline_widget, baseline = fit_tab_and_plain_scatter()
    from engine.fit.data import FitData

    def painted(*widgets) -> None:
        for widget in widgets:
            widget.repaint()
        app.processEvents()

    def timed(action) -> float:
        started = time.perf_counter()
        action()
        painted(tab.data_view, tab.surface_view)
        return time.perf_counter() - started

    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; medians of "
          f"{args.repeats}, each until painted")
    rng = np.random.default_rng(0)
    for n_points in (int(p) for p in args.points.split(",")):
        xs = rng.uniform(0.0, 100.0, n_points)
        ys = 0.5 * xs - 17.0 + rng.normal(0.0, 5.0, n_points)
        view = tab.data_plot.vb
        times: dict[str, list[float]] = {}

        def record(name: str, seconds: float, times=times) -> None:
            times.setdefault(name, []).append(seconds)

        for _ in range(args.repeats):
            data = FitData(tuple(xs.tolist()), tuple(ys.tolist()), "benchmark")
            data.arrays  # noqa: B018 (a CSV's are made on the loading thread)
            tab.val_spin.setValue(0.0)
            tab.set_data(FitData((0.0, 1.0), (0.0, 1.0)))  # from small data, as a load is
            painted(tab.data_view, tab.surface_view)
            record("new data", timed(lambda data=data: tab.set_data(data)))
            record("validation split on", timed(lambda: tab.val_spin.setValue(0.2)))
            record("validation split off", timed(lambda: tab.val_spin.setValue(0.0)))
            drawn = getattr(tab, "drawn_indices", range(len(tab.data)))  # before: every point
            index = int(drawn[len(drawn) // 2])
            on_point = view.mapViewToScene(QPointF(tab.data.x[index], tab.data.y[index]))
            before = len(tab.data)
            record("click on a point", timed(lambda p=on_point: tab.click_at_scene(p)))
            assert len(tab.data) == before - 1, "the click did not remove the point"
            started = time.perf_counter()  # a run's frame: the prediction moves
            tab.prediction_curve.setData([0.0, 100.0], [-17.0, 33.0 + started % 1])
            tab._paint_now([tab.data_view])
            record("run frame: data plot repaint", time.perf_counter() - started)

            x, y = tab.data.arrays
            started = time.perf_counter()
            baseline.setData(x, y)
            painted(baseline_widget)
            record("baseline: every point, setData", time.perf_counter() - started)
            started = time.perf_counter()
            baseline_widget.viewport().repaint()
            record("baseline: every point, repaint", time.perf_counter() - started)
            baseline.setData([], [])
        medians = {name: statistics.median(values) for name, values in times.items()}
        drawn = getattr(tab, "drawn_indices", range(len(tab.data)))
        print(f"{n_points:,} points (drawn: {len(drawn):,})")
        for name, seconds in medians.items():
            print(f"  {name}: {seconds * 1000:.0f} ms")
        ratio = medians["new data"] / medians["baseline: every point, setData"]
        frame_ratio = medians["run frame: data plot repaint"] / \
            medians["baseline: every point, repaint"]
        print(f"  ratio new data / baseline setData: {ratio:.2f}; "
              f"run frame / baseline repaint: {frame_ratio:.2f}")
    tab.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
