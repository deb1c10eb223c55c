"""Does the GUI stay responsive while the Linear-fit tab trains at full speed?

A 10 ms QTimer heartbeat runs in the GUI thread; we record the gaps between its ticks, first with
the window idle (the baseline) and then during max-speed training runs (linear model and the MLP,
each reporting every epoch). Goal: no gap over 50 ms during training.
Offscreen unless DISPLAY is set.

    python benchmarks/gui_heartbeat.py [--epochs 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


class Heartbeat:
    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.ticks, self.ticks[1:], strict=False)]


def spin(app: QApplication, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def measure(app, tab, model: str, epochs: int) -> tuple[list[float], float, int]:
    """Gaps between heartbeat ticks from Play until the run has finished."""
    race = model == "race"
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("linear" if race else model))
    tab.race_check.setChecked(race)
    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("adam"))
    tab.lr_spin.setValue(0.01)
    tab.scale_spin.setValue(0.1)
    tab.epochs_spin.setValue(epochs)
    tab.reset()
    beat = Heartbeat()
    beat.timer.start()
    start = time.perf_counter()
    tab.play()
    while tab.is_running():
        app.processEvents()
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    beat.timer.stop()
    gaps = beat.gaps_ms()
    worst = sorted(range(len(gaps)), key=gaps.__getitem__)[-3:]
    print("  longest gaps at (s after Play):",
          ", ".join(f"{beat.ticks[i] - start:.2f}s: {gaps[i]:.0f} ms" for i in worst))
    drawn = len(tab.race_history['adam']['epoch']) if race else len(tab.epochs)
    return gaps, elapsed, drawn


def describe(name: str, gaps: list[float]) -> str:
    gaps_sorted = sorted(gaps)
    p99 = gaps_sorted[int(0.99 * (len(gaps_sorted) - 1))]
    return (f"{name:<22} ticks {len(gaps):6d}  median {statistics.median(gaps):5.1f} ms  "
            f"p99 {p99:5.1f} ms  max {max(gaps):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--models", default="linear,mlp",
                        help="comma-separated: linear, mlp, race")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="override sys.setswitchinterval (seconds) after the app sets it")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    import torch  # noqa: F401  (loaded before the window, as the app's loader thread does)

    from gui.app import tune_interpreter_for_gui
    from gui.app_state import AppState
    from gui.tabs.linear_fit import LinearFitTab

    tune_interpreter_for_gui()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"GIL switch interval {sys.getswitchinterval() * 1000:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        state = AppState(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        tab = LinearFitTab(state)
        tab.resize(1280, 800)
        tab.show()
        spin(app, 0.5)

        idle = Heartbeat()
        idle.timer.start()
        spin(app, 2.0)
        idle.timer.stop()
        print(describe("idle (baseline)", idle.gaps_ms()))

        worst = 0.0
        for model in args.models.split(","):
            gaps, elapsed, drawn = measure(app, tab, model, args.epochs)
            worst = max(worst, max(gaps))
            print(describe(f"training {model}", gaps) +
                  f"  ({args.epochs} epochs in {elapsed:.2f} s, {args.epochs / elapsed:,.0f}/s, "
                  f"{drawn} points plotted)")
        tab.shutdown()
    verdict = "OK" if worst <= 50 else "OVER"
    print(f"worst heartbeat gap while training: {worst:.1f} ms (goal <= 50 ms) {verdict}")


if __name__ == "__main__":
    main()
