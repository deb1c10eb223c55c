"""Shared test setup: Qt runs offscreen; settings and caches never touch the user's."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TORCHDESK_TEST", "1")

# Set before any fixture (module-scoped ones included) or child process can write a cache:
# torch hub, TorchDesk's data and model caches and Qt's settings go to one folder per run.
_SCRATCH_HOME = tempfile.mkdtemp(prefix="torchdesk-tests-")
atexit.register(shutil.rmtree, _SCRATCH_HOME, ignore_errors=True)
for _name, _sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                    ("XDG_DATA_HOME", "data"), ("TORCH_HOME", "cache/torch"),
                    ("TORCHDESK_CACHE_DIR", "cache/torchdesk")):
    os.environ[_name] = os.path.join(_SCRATCH_HOME, _sub)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

SHARED = ROOT.parent / "shared"
BOOK_IMAGES = SHARED / "data" / "images"
CIFAR_TARBALL = SHARED / "data" / "cifar10-jpeg.tar.gz"
# The book's photos and the JPEG CIFAR-10 lie beside the checkout (../shared/data), not in it.
needs_book_photos = pytest.mark.skipif(
    not BOOK_IMAGES.is_dir(), reason=f"the book's photos are not in {BOOK_IMAGES}")
needs_sample_data = pytest.mark.skipif(
    not (BOOK_IMAGES.is_dir() and CIFAR_TARBALL.is_file()),
    reason=f"the book's photos and the JPEG CIFAR-10 are not in {SHARED / 'data'}")


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
