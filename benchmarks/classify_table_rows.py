"""Adding result rows to the Classify tab's table: the cost of a row must not grow with the table.

Fills the real ClassifyTab's table (offscreen) through ``_add_row`` to 4000 rows, unsorted and
sorted by probability, and times the rows added near 500 and near 4000. A plain QTableWidget that
only appends the same cells (no lookup, no sorting) is timed in the same run as the baseline; the
ratios say how much the tab's row costs over it, and how much a row at 4000 costs over one at 500
(about 1 when the cost does not grow). ``python benchmarks/classify_table_rows.py``
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SIZES = (500, 4000)
TIMED_ROWS = 200  # rows timed at each size


def _result(i: int) -> dict:
    prob = (i * 7919 % 1000) / 1000  # scattered, so a sorted table moves every new row
    return {"path": f"/photos/{i:05d}.jpg", "error": None, "seconds": 0.01, "thumbnail": None,
            "top": [{"label": "tabby", "index": 281, "prob": prob},
                    {"label": "tiger cat", "index": 282, "prob": prob / 2}]}


def _time_rows(add, start: int) -> float:
    """Seconds per row for TIMED_ROWS rows added from index ``start``."""
    began = time.perf_counter()
    for i in range(start, start + TIMED_ROWS):
        add(_result(i))
    return (time.perf_counter() - began) / TIMED_ROWS


def _fill_and_time(clear, add) -> dict[int, float]:
    clear()
    per_row, filled = {}, 0
    for size in SIZES:
        for i in range(filled, size - TIMED_ROWS):
            add(_result(i))
        per_row[size] = _time_rows(add, size - TIMED_ROWS)
        filled = size
    return per_row


def main() -> None:
    from PySide6.QtCore import QSettings, Qt
    from PySide6.QtWidgets import QApplication, QTableWidget

    app = QApplication([])  # noqa: F841 (kept alive for the widgets)
    from engine.classify import jobs as classify_jobs
    from gui.app_state import AppState
    from gui.tabs.classify import COLUMNS, PROB_COLUMN, ClassifyTab

    # no model is needed to add rows; loading one would compete for the CPU while timing
    classify_jobs.load_model_job = lambda config, ctx: {"status": "done"}
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"),
                         QSettings.Format.IniFormat)
    tab = ClassifyTab(AppState(settings))
    tab.resize(1280, 780)
    tab.show()

    plain = QTableWidget(0, len(COLUMNS))
    plain.resize(600, 700)
    plain.show()

    def plain_clear() -> None:
        plain.setRowCount(0)

    def plain_add(result: dict) -> None:
        row = plain.rowCount()
        plain.insertRow(row)
        for column, item in enumerate(ClassifyTab._row_cells(result)):
            plain.setItem(row, column, item)

    baseline = _fill_and_time(plain_clear, plain_add)
    unsorted = _fill_and_time(tab.clear_results, tab._add_row)
    tab.table.sortItems(PROB_COLUMN, Qt.SortOrder.DescendingOrder)
    ordered = _fill_and_time(tab.clear_results, tab._add_row)

    small, large = SIZES
    print(f"ms per row      at {small:>5} rows  at {large:>5} rows  growth ({large} / {small})")
    for name, timing in (("plain baseline", baseline), ("tab, unsorted", unsorted),
                         ("tab, sorted", ordered)):
        print(f"{name:15s} {1000 * timing[small]:13.3f}  {1000 * timing[large]:13.3f}  "
              f"{timing[large] / timing[small]:6.2f}x")
    print(f"tab over baseline at {large} rows: unsorted {unsorted[large] / baseline[large]:.2f}x, "
          f"sorted {ordered[large] / baseline[large]:.2f}x")
    tab.shutdown()


if __name__ == "__main__":
    main()
