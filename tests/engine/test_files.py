"""engine.files: atomic writes leave the old files, and no temporary file, whatever stops them."""

from __future__ import annotations

import os

import pytest

from engine import files
from engine.jobs import JobError


def _interrupt_after_renames(monkeypatch, count: int, exc: BaseException) -> None:
    real_replace = os.replace
    done = []

    def replace(src, dst):
        if len(done) == count:
            raise exc
        done.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_an_interrupted_write_leaves_the_old_files_and_no_temporary(tmp_path, monkeypatch, exc):
    model, sidecar = tmp_path / "model.onnx", tmp_path / "model.json"
    model.write_bytes(b"old model")
    _interrupt_after_renames(monkeypatch, 1, exc)
    expected = JobError if isinstance(exc, OSError) else KeyboardInterrupt

    with pytest.raises(expected):
        files.write_atomically(model, {model: b"new model", sidecar: b"{}"}, "the export")

    assert model.read_bytes() == b"old model"
    assert not sidecar.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_disk_full_error_names_the_file_and_the_reason(tmp_path, monkeypatch):
    target = tmp_path / "run.pt"
    _interrupt_after_renames(monkeypatch, 0, OSError(28, "No space left on device"))

    with pytest.raises(JobError, match=r"cannot write the checkpoint '.*run\.pt': No space left"):
        files.write_atomically(target, {target: b"x"}, "the checkpoint")
    assert list(tmp_path.iterdir()) == []


def test_a_write_replaces_every_file(tmp_path):
    model, sidecar = tmp_path / "m.onnx", tmp_path / "m.json"
    model.write_bytes(b"old")
    files.write_atomically(model, {model: b"new", sidecar: b"{}"}, "the export")
    assert (model.read_bytes(), sidecar.read_bytes()) == (b"new", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
