"""Start TorchDesk: show the window first, then import PyTorch on a background thread.

``torchdesk [PATH ...]`` opens the window (and classifies the given photos);
``torchdesk --screenshots DIR`` renders every tab with real content to ``DIR/<tab>.png`` and exits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QSettings, QThread, QTimer, Signal
from PySide6.QtWidgets import QApplication

# Engine modules warmed on the loader thread so building the tabs later does not stall the GUI.
WARM_MODULES = (
    "torch",
    "torchvision",
    "torchvision.models",
    "pyqtgraph",
    "engine.devices",
    "engine.fit.trainer",
    "engine.fit.surface",
    "engine.classify.jobs",
    "engine.classify.zoo",
    "engine.classify.classifier",
    "engine.cifar.trainer",
    "engine.cifar.data",
)

_START = time.perf_counter()


class TorchLoader(QThread):
    """Imports torch, torchvision and the engine, then lists the devices."""

    loaded = Signal(list)
    failed = Signal(str)

    def run(self) -> None:
        try:
            from engine.imports import heavy_imports

            with heavy_imports():
                for name in WARM_MODULES:
                    importlib.import_module(name)
            from engine.devices import list_devices

            self.loaded.emit(list_devices())
        except Exception as exc:
            logging.getLogger(__name__).error("loading PyTorch failed:\n%s", traceback.format_exc())
            self.failed.emit(f"{type(exc).__name__}: {exc}")


GIL_SWITCH_INTERVAL_S = 0.0005


def tune_interpreter_for_gui() -> None:
    """Hand the GIL over sooner while a worker thread runs Python-heavy code.

    Each Python slot or pyqtgraph paint call in the GUI thread must retake the GIL from a busy
    worker; with CPython's default 5 ms switch interval a frame that makes twenty such calls
    waits ~100 ms. At 0.5 ms the window stays fluid and the worker loses little.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from engine import __version__

    parser = argparse.ArgumentParser(prog="torchdesk", description="PyTorch in a window.")
    parser.add_argument("--version", action="version", version=f"TorchDesk {__version__}")
    parser.add_argument("paths", nargs="*", help="photos or folders to classify")
    parser.add_argument("--screenshots", metavar="DIR", type=Path,
                        help="render every tab with real content to DIR/<tab>.png and exit")
    # for tests: print when the window shows and when torch is ready, then close (unless
    # --stay-open, so that only the user, or a signal, closes it)
    parser.add_argument("--startup-report", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stay-open", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settings", metavar="FILE", type=Path,
                        help="keep settings in this INI file instead of the user's settings")
    args = parser.parse_args(argv)
    if args.screenshots is not None:
        folder = args.screenshots.expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            parser.error(f"--screenshots needs a folder; {args.screenshots} is a file")
        # the folder itself, or the nearest existing folder above it, must take new files
        above = next(p for p in (folder, *folder.parents) if p.exists())
        if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
            where = "write into" if above == folder else "create a folder under"
            parser.error(f"--screenshots: cannot {where} {above}")
        args.screenshots = folder
    if args.settings is not None:
        args.settings = args.settings.expanduser().absolute()
        problem = _settings_file_problem(args.settings)
        if problem:
            parser.error(f"--settings: {problem}")
    return args


def _settings_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot keep the settings (None: it can). Qt would overwrite any file with
    its INI text, a photo given by mistake too, and says nothing when it cannot write."""
    if path.is_dir():
        return f"{path} is a folder; give a settings file (an .ini) in it"
    if path.exists():
        from PySide6.QtCore import QSettings

        existing = QSettings(str(path), QSettings.Format.IniFormat)
        existing.allKeys()  # reads the file
        if existing.status() != QSettings.Status.NoError:
            return f"{path} is not a settings file (INI text), so it is left as it is"
        if not os.access(path, os.W_OK):
            return f"cannot write {path}"
        return None
    above = next(p for p in path.parents if p.exists())
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        return f"cannot create {path} ({above} is not a folder this user can write in)"
    return None


def _install_excepthook(app_state) -> None:
    """Uncaught errors in slots get a dialog instead of vanishing or killing the app.

    PySide6 calls the hook on the thread that raised (a QThread's ``run`` too): the dialog is
    asked for through a signal, which Qt queues to the GUI thread.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        app_state.error_reported.emit("Unexpected error", f"{exc_type.__name__}: {exc}")

    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tune_interpreter_for_gui()
    qt_app = QApplication.instance() or QApplication([sys.argv[0]])
    qt_app.setApplicationName("TorchDesk")
    qt_app.setOrganizationName("TorchDesk")

    from gui.app_state import AppState
    from gui.main_window import MainWindow

    scratch = None
    if args.screenshots:
        # Screenshots start from fresh settings and never touch the user's (nor --settings).
        scratch = tempfile.TemporaryDirectory(prefix="torchdesk-screenshots-")
        settings = QSettings(str(Path(scratch.name) / "settings.ini"), QSettings.Format.IniFormat)
    elif args.settings:
        settings = QSettings(str(args.settings), QSettings.Format.IniFormat)
    else:
        settings = QSettings("TorchDesk", "TorchDesk")
    app_state = AppState(settings)
    _install_excepthook(app_state)
    window = MainWindow(app_state)
    window.show()
    # Ctrl-C in the terminal closes the window as its close button does (jobs stop, settings
    # are saved). Python runs signal handlers only between bytecodes, so a timer lets it in
    # while Qt waits for events.
    previous_sigint = signal.signal(signal.SIGINT, lambda *_: window.close())
    wake_for_signals = QTimer()
    wake_for_signals.timeout.connect(lambda: None)
    wake_for_signals.start(200)
    if args.paths:
        window.open_paths(args.paths)

    loader = TorchLoader()
    loader.loaded.connect(window.on_torch_ready)
    loader.failed.connect(window.on_torch_failed)
    exit_code = {"code": 0}

    def on_shown() -> None:
        if args.startup_report:
            print(f"window_shown {time.perf_counter() - _START:.3f}", flush=True)
            print(f"torch_imported_when_shown {int('torch' in sys.modules)}", flush=True)
        loader.start()

    if args.startup_report:
        def report_ready(_devices) -> None:
            print(f"torch_ready {time.perf_counter() - _START:.3f}", flush=True)
            if not args.stay_open:
                QTimer.singleShot(0, window.close)

        loader.loaded.connect(report_ready)

    if args.screenshots:
        def take_screenshots(_devices) -> None:
            try:
                for path in window.save_screenshots(args.screenshots):
                    print(path, flush=True)
            except OSError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                exit_code["code"] = 1
            except Exception:
                traceback.print_exc()
                exit_code["code"] = 1
            window.close()

        loader.loaded.connect(
            lambda devices: QTimer.singleShot(0, lambda: take_screenshots(devices)))
        loader.failed.connect(lambda _msg: (exit_code.update(code=1), window.close()))

    QTimer.singleShot(0, on_shown)
    code = qt_app.exec()
    signal.signal(signal.SIGINT, previous_sigint)
    loader.wait()
    if scratch is not None:
        scratch.cleanup()
    if window.jobs_left_running:
        # A worker thread that would not stop (a long torch.compile, say) would make Qt abort
        # the process as it tears the thread down; its checkpoints are written atomically.
        settings.sync()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code["code"] or code)
    return exit_code["code"] or code


if __name__ == "__main__":
    sys.exit(main())
