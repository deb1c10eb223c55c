"""Shared test setup: Qt runs offscreen and settings never touch the user's."""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TORCHDESK_TEST", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

SHARED = ROOT.parent / "shared"
BOOK_IMAGES = SHARED / "data" / "images"
CIFAR_TARBALL = SHARED / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture
def qsettings(tmp_path):
    """A QSettings in a temporary INI file, so tests never read or write the user's settings."""
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def app_state(qapp, qsettings):
    from gui.app_state import AppState

    state = AppState(qsettings)
    yield state


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Caches (torch hub, TorchDesk's data cache) go to a per-session temp folder, not ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    yield
