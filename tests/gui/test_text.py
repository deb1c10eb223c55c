"""Words for counts in the GUI's messages."""

from gui.text import plural


def test_plural():
    assert (plural(1, "epoch"), plural(2, "epoch"), plural(0, "class")) == (
        "1 epoch", "2 epochs", "0 classes")
