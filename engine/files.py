"""Files: written so that a crash or a full disk never leaves a broken one; told apart by kind."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

from engine.jobs import JobError


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it is there; one that cannot be deleted (a read-only folder,
    another user's file) is left alone."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def in_memory(save: Callable[[io.BytesIO], None]) -> bytes:
    """What ``save(buffer)`` writes, as bytes: torch's writers are given a buffer, never a file
    (see :func:`write_atomically`)."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def write_atomically(path: Path, files: dict[Path, bytes], what: str) -> None:
    """Write each ``{path: bytes}`` to a temporary file beside it, then rename them all into
    place; on any failure (a Ctrl-C too) the files are as they were (one already renamed into
    place gets its earlier contents back) and the temporary files are removed. The bytes are
    serialized by the caller in memory: torch's own file writers report a full disk as an
    opaque RuntimeError (or, for TorchScript, abort the process)."""
    temporaries = {target: temporary_name(target) for target in files}
    replaced: list[tuple[Path, bytes | None]] = []  # (target, its earlier contents, if any)
    try:
        for target, tmp in temporaries.items():
            with open(tmp, "wb") as f:
                f.write(files[target])
                f.flush()
                os.fsync(f.fileno())
        for target, tmp in temporaries.items():
            # several files (an ONNX model and its description): kept to put back, if a later
            # rename fails (they are small)
            earlier = target.read_bytes() if len(files) > 1 and target.is_file() else None
            os.replace(tmp, target)
            replaced.append((target, earlier))
    except BaseException as exc:  # also a Ctrl-C: no temporary file as large as a checkpoint
        _put_back(replaced)
        for tmp in temporaries.values():
            remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise JobError(f"cannot write {what} '{path}': {exc.strerror or exc}") from None
        raise


def _put_back(replaced: list[tuple[Path, bytes | None]]) -> None:
    """Undo renames already done: earlier contents written back, new files removed."""
    for target, earlier in reversed(replaced):
        try:
            if earlier is not None:
                target.write_bytes(earlier)
            else:
                target.unlink()
        except OSError:
            pass


def pytorch_file_kind(path: str | os.PathLike) -> str | None:
    """"torchscript", "torch.save" (a zip archive or the legacy pickle format), or None when
    the file is neither (an image, a text file, an empty file)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        names = None
    if names is not None:
        entries = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in entries:  # how torch.load itself tells TorchScript apart
            return "torchscript"
        return "torch.save" if "data.pkl" in entries else None
    try:
        with open(path, "rb") as f:
            start = f.read(1)
    except OSError:
        return None
    return "torch.save" if start == b"\x80" else None  # a pickle (protocol 2+) opcode
