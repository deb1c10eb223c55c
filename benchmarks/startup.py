"""How soon the window appears, against how long ``import torch, torchvision`` takes.

Both are timed from the parent process, as whole processes (interpreter start included), in the
same run, alternating, and the medians are compared. Goal: window visible in under half the import
time. Runs offscreen unless DISPLAY is set.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision"], check=True, cwd=ROOT)
    return time.perf_counter() - start


def time_window(settings: Path) -> tuple[float, float]:
    """Seconds until the window is shown, and until torch is ready in the app."""
    env = dict(os.environ)
    if not env.get("DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--startup-report", "--settings", str(settings)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    shown = ready = float("nan")
    for line in proc.stdout:
        if line.startswith("window_shown"):
            shown = time.perf_counter() - start
        elif line.startswith("torch_ready"):
            ready = time.perf_counter() - start
    proc.wait(timeout=120)
    return shown, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    time_import()  # warm the file cache once so neither side pays for a cold disk
    imports, shown, ready = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            imports.append(time_import())
            s, r = time_window(Path(tmp) / "settings.ini")
            shown.append(s)
            ready.append(r)
    t_import, t_shown, t_ready = (statistics.median(x) for x in (imports, shown, ready))
    print(f"import torch, torchvision (process): median {t_import:.3f} s  {imports}")
    print(f"TorchDesk window shown:              median {t_shown:.3f} s")
    print(f"TorchDesk torch ready in the app:    median {t_ready:.3f} s")
    print(f"ratio window / import = {t_shown / t_import:.2f}  (goal < 0.50)")


if __name__ == "__main__":
    main()
