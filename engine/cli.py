"""Headless entry point: ``python -m engine <command> ...``.

Each command lives in its own module exposing ``register(subparsers)``; the parser it adds sets
``func(args) -> int``. Commands import torch lazily, so ``--help`` stays fast.
Users never see a traceback: a :class:`JobError` prints ``error: <message>`` and exits 1.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import json
import math
import os
import select
import sys
import time
from typing import Any

from engine.jobs import JobError, JobStopped

COMMAND_MODULES = (
    "engine.devices_cli",
    "engine.fit.cli",
    "engine.classify.cli",
    "engine.cifar.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="TorchDesk's PyTorch jobs, without the window.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def print_json(obj: Any) -> None:
    """One JSON document on stdout. Encoded whole before writing, so a failure prints
    nothing."""
    sys.stdout.write(json_text(obj) + "\n")
    sys.stdout.flush()


def json_text(obj: Any) -> str:
    """Strict JSON on one line: NaN and infinities (a diverged loss) become null, and file
    names that are not UTF-8 are shown with ``\\xff`` escapes (see :func:`printable`)."""
    return json.dumps(_finite(obj), indent=None, allow_nan=False, default=_json_default)


def printable(text: str) -> str:
    """``text`` as valid Unicode: the bytes of a file name that is not UTF-8 (which Python holds
    as lone surrogates) become ``\\xff`` escapes, so strict UTF-8 output and JSON can carry it."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


PRINTABLE_ERRORS = "torchdesk-printable"


def _escape_undecodable(error: UnicodeEncodeError) -> tuple[str, int]:
    """An encoding error handler that writes what :func:`printable` shows, in ASCII: the
    stream's encoding (cp1252, ascii) may lack the characters themselves."""
    shown = printable(error.object[error.start:error.end])
    return shown.encode("ascii", "backslashreplace").decode("ascii"), error.end


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(key) if isinstance(key, str) else key: _finite(value)
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    if hasattr(obj, "tolist") or hasattr(obj, "item"):
        return _finite(_json_default(obj))
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def format_duration(seconds: float) -> str:
    """'4:05' under an hour, '1:02:03' from an hour on."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StderrProgress:
    """Progress callback for the CLI: one line on stderr at most every ``interval`` seconds."""

    def __init__(self, format_update, interval: float = 1.0, quiet: bool = False) -> None:
        self._format = format_update
        self._interval = interval
        self._last = 0.0
        self._quiet = quiet

    def __call__(self, update: dict[str, Any]) -> None:
        if self._quiet:
            return
        now = time.monotonic()
        if now - self._last < self._interval and not update.get("final"):
            return
        self._last = now
        line = self._format(update)
        if line:
            print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, process_exit: bool = False) -> int:
    """Run one command; its exit code.

    ``process_exit`` (only for ``python -m engine``): commands that ask for it end the process
    right after their output is flushed. Tearing down an interpreter that has imported torch
    takes about half a second, a tenth of classifying a folder of 300 photos.
    """
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # started with the stream closed (>&-): print nowhere
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    parser = build_parser()
    args = parser.parse_args(argv)
    codecs.register_error(PRINTABLE_ERRORS, _escape_undecodable)
    for stream in (sys.stdout, sys.stderr):  # a name that is not UTF-8 must not end the run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=PRINTABLE_ERRORS)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code = _run(args)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_gone()
    if process_exit and getattr(args, "skip_teardown", False):
        sys.stderr.flush()
        os._exit(code)
    return code


#: The exit status of a command whose reader went away (``| head``), as if SIGPIPE had ended it.
BROKEN_PIPE_EXIT = 128 + 13


def _reader_gone() -> int:
    """Stop writing to a pipe nobody reads any more (``| head -1``): no message, as other
    command-line tools do. stdout is pointed at /dev/null so the interpreter's last flush
    does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return BROKEN_PIPE_EXIT


def _run(args) -> int:
    try:
        return int(args.func(args) or 0)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except JobStopped:
        print("stopped", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if _stdout_reader_gone():
            return _reader_gone()
        return _report_unexpected(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: one line, the traceback only on request
        return _report_unexpected(exc)


def _report_unexpected(exc: Exception) -> int:
    if os.environ.get("TORCHDESK_DEBUG"):
        raise exc
    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 2


def _stdout_reader_gone() -> bool:
    """Whether stdout itself is the broken pipe, not a socket or worker pipe of the job: its
    flush fails the same way, or (stdout already flushed) the pipe reports that it has no
    reader."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    if not hasattr(select, "poll"):  # Windows: a flush that works is all we can know
        return False
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
