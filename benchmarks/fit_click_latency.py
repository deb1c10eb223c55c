"""Click a point among 200k in the Linear-fit tab: the click and its repaint, against a baseline.

Builds the real LinearFitTab (offscreen) with N random points (no validation split; beyond
MAX_DRAWN_POINTS it draws a sample of them, and the clicks remove drawn points), then
alternately (a) clicks a point, which removes it, and (b) adds a point in empty space, timing
each from the click until the data plot and the loss surface (new data, new contours) have
been painted. The baseline, timed in the same run and interleaved with the clicks, is what a
click used to cost at least: a plain ``pg.ScatterPlotItem`` given all N points again with
``setData`` and painted in a plot of the same size. The ratio click / baseline is printed with
the median and spread of each, and the loss surface's part of a click: its image and contours
drawn for the data and painted.

    python benchmarks/fit_click_latency.py [--points 200000] [--clicks 12]
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


def spread(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):.0f} ms (min {ms[0]:.0f}, max {ms[-1]:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--clicks", type=int, default=12)
    args = parser.parse_args()

    import numpy as np
    from PySide6.QtCore import QPointF

    from benchmarks.fit_tab_setup import fit_tab_and_plain_scatter

    app, tab, baseline_widget, baseline = fit_tab_and_plain_scatter()
    from engine.fit.data import FitData
    rng = np.random.default_rng(0)
    xs = rng.uniform(0.0, 100.0, args.points)
    ys = 0.5 * xs - 17.0 + rng.normal(0.0, 5.0, args.points)
    tab.set_data(FitData(tuple(xs.tolist()), tuple(ys.tolist()), "benchmark"))
    view = tab.data_plot.vb


    def painted(widget) -> None:
        widget.repaint()
        app.processEvents()

    def time_click(scene_pos: QPointF) -> float:
        started = time.perf_counter()
        tab.click_at_scene(scene_pos)
        painted(tab.data_view)
        painted(tab.surface_view)
        return time.perf_counter() - started

    def time_surface() -> float:
        started = time.perf_counter()
        tab._draw_surface()
        painted(tab.surface_view)
        return time.perf_counter() - started

    def time_baseline() -> float:
        x, y = tab.data.arrays
        started = time.perf_counter()
        baseline.setData(x, y)
        painted(baseline_widget)
        return time.perf_counter() - started

    painted(tab.data_view)
    time_baseline()  # warm-up: the symbol atlas, the first paint
    removes, adds, baselines, surfaces = [], [], [], []
    for i in range(args.clicks + 2):
        index = int(rng.choice(tab.drawn_indices))  # a point drawn (of large data, a sample)
        on_point = view.mapViewToScene(QPointF(tab.data.x[index], tab.data.y[index]))
        before = len(tab.data)
        remove_time = time_click(on_point)
        assert len(tab.data) == before - 1, "the click did not remove the point"
        # in empty space above the points, each addition apart from the last ones
        add_time = time_click(view.mapViewToScene(QPointF(5.0 + 6.0 * i, 150.0)))
        assert len(tab.data) == before, "the click did not add a point"
        baseline_time = time_baseline()
        surface_time = time_surface()
        if i >= 2:  # warm-ups
            removes.append(remove_time)
            adds.append(add_time)
            baselines.append(baseline_time)
            surfaces.append(surface_time)
    clicks = removes + adds
    ratio = statistics.median(clicks) / statistics.median(baselines)
    print(f"{args.points:,} points, {len(removes)} removals and {len(adds)} additions "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    print(f"  click → painted, removal: {spread(removes)}")
    print(f"  click → painted, addition: {spread(adds)}")
    print(f"  baseline, setData of every point → painted: {spread(baselines)}")
    print(f"  ratio click / baseline (medians): {ratio:.2f}")
    print(f"  of a click, the loss surface and its contours → painted: {spread(surfaces)}")
    tab.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
