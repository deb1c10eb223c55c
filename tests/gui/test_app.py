"""The app as a user starts it: `python main.py` (the `torchdesk` script runs the same main)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from tests.conftest import needs_sample_data

ROOT = Path(__file__).resolve().parents[2]


def run_app(*args, timeout):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_window_shows_before_torch_has_loaded(tmp_path):
    result = run_app("--startup-report", "--settings", str(tmp_path / "s.ini"), timeout=300)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    assert lines["torch_imported_when_shown"] == "0"
    assert float(lines["window_shown"]) < float(lines["torch_ready"])


# Loads a model, runs the book's fit, decodes all of CIFAR-10 and trains a little: on a busy
# 2-core machine that can take longer than the suite's default 300 s limit.
@pytest.mark.timeout(900)
@needs_sample_data
def test_screenshots_render_every_tab_with_real_content(tmp_path):
    out = tmp_path / "shots"
    result = run_app("--screenshots", str(out), "--settings", str(tmp_path / "s.ini"), timeout=840)
    assert result.returncode == 0, result.stderr[-2000:]
    for stem in ("classify", "linear-fit", "cifar-10"):
        image = QImage(str(out / f"{stem}.png"))
        # the window's own size, not the screen's (offscreen's screen is 800×600)
        assert not image.isNull() and (image.width(), image.height()) == (1280, 820), stem
        # a real screen has many colours; a blank or placeholder tab has a handful
        colours = {image.pixel(x, y) for x in range(0, image.width(), 7)
                   for y in range(0, image.height(), 7)}
        assert len(colours) > 200, stem


def test_ctrl_c_in_the_terminal_closes_the_window(tmp_path):
    import signal

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    # --startup-report prints when the window is up and when PyTorch is loaded; --stay-open
    # leaves closing the window to the signal
    proc = subprocess.Popen([sys.executable, "main.py", "--startup-report", "--stay-open",
                             "--settings", str(tmp_path / "s.ini")], cwd=ROOT, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith("window_shown")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "KeyboardInterrupt" not in err, err[-2000:]


def test_screenshots_that_cannot_be_written_fail_clearly(tmp_path):
    result = run_app("--screenshots", "/etc/passwd/shots", timeout=120)
    assert result.returncode == 2 and "cannot create a folder under /etc/passwd" in result.stderr
    from gui.app import parse_args

    assert str(parse_args(["--screenshots", "/"]).screenshots) == "/"  # no parent to look at


def test_a_settings_file_that_is_not_one_is_refused_and_left_as_it_is(tmp_path, capsys):
    import shutil

    import pytest

    from gui.app import parse_args
    from tests.conftest import BOOK_IMAGES

    photo = tmp_path / "photo.jpg"  # a typo: the photo must not become an INI file
    if (BOOK_IMAGES / "bobby.jpg").is_file():
        shutil.copy(BOOK_IMAGES / "bobby.jpg", photo)
    else:
        photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    before = photo.read_bytes()
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    for given, problem in ((photo, "is not a settings file"), (tmp_path / "folder", "is a folder"),
                           (tmp_path / "a-file" / "s.ini", "cannot create")):
        with pytest.raises(SystemExit):
            parse_args(["--settings", str(given)])
        assert problem in capsys.readouterr().err
    assert photo.read_bytes() == before
    fresh = tmp_path / "new" / "s.ini"  # a new file, in a folder to be made: fine
    assert parse_args(["--settings", str(fresh)]).settings == fresh
    existing = tmp_path / "s.ini"
    existing.write_text("[window]\ntab=1\n")
    assert parse_args(["--settings", str(existing)]).settings == existing


def test_version():
    from engine import __version__

    result = run_app("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"TorchDesk {__version__}"


def test_an_error_raised_on_a_worker_thread_is_shown_from_the_gui_thread(qtbot, app_state,
                                                                         monkeypatch):
    """PySide6 calls sys.excepthook on the thread that raised: the dialog must still be built
    on the GUI thread (widgets made elsewhere crash Qt)."""
    import threading

    from PySide6.QtCore import QThread

    from gui.app import _install_excepthook

    shown = []
    monkeypatch.setattr(app_state, "show_error", lambda title, text: shown.append(
        (title, text, threading.current_thread() is threading.main_thread())))
    monkeypatch.setattr(sys, "excepthook", lambda *exc: None)  # the hook calls the previous one
    _install_excepthook(app_state)

    class Failing(QThread):
        def run(self):
            raise ValueError("bad thing")

    thread = Failing()
    thread.start()
    assert thread.wait(5_000)
    qtbot.waitUntil(lambda: bool(shown), timeout=5_000)
    assert shown == [("Unexpected error", "ValueError: bad thing", True)]
