"""Sample inputs for ``torchdesk --screenshots``: the book's photo and the JPEG CIFAR-10.

They are looked for in ``$TORCHDESK_SAMPLE_DATA``, else in ``../shared/data`` beside a source
checkout (where the project's data lives); a tab whose sample is missing is shot as it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def sample_data_dir() -> Path:
    env = os.environ.get("TORCHDESK_SAMPLE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def book_photo() -> Path:
    return sample_data_dir() / "images" / "bobby.jpg"


def cifar_archive() -> Path:
    return sample_data_dir() / "cifar10-jpeg.tar.gz"
