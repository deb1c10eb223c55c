"""CIFAR training under ``torchrun`` in a child process, for "All GPUs" on the CIFAR-10 tab."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal


class TorchrunProcess(QObject):
    """Runs ``torchrun … -m engine cifar train --progress-json --json`` as a child process.

    Same signals as :class:`JobRunner` (progress batches at most ~30 per second, returned,
    errored, finished) so the tab shows a multi-GPU run exactly like a single-device one. A
    setting the trainer refuses is said by ``name_setting`` (given the trainer's SettingError),
    not as the command line names it (by its flag).
    """

    progress = Signal(object)  # a list, as is: Qt's conversion would drop non-UTF-8 names
    returned = Signal(object)
    errored = Signal(str)
    finished = Signal()

    def __init__(self, parent: QObject | None = None,
                 name_setting: Callable[[Any], str] = str) -> None:
        super().__init__(parent)
        self._name_setting = name_setting
        self._setting_error: dict | None = None  # what --progress-json said of a refused one
        self._process: QProcess | None = None
        self._pending: list[dict] = []
        self._stderr_tail: list[str] = []
        self._error_line: str | None = None  # the CLI's last, kept: torchrun's report fills
        # the tail after it
        self._buffer = b""
        self._timer = QTimer(self)
        self._timer.setInterval(33)
        self._timer.timeout.connect(self._deliver)

    @staticmethod
    def command(config: dict[str, Any], nproc: int) -> list[str]:
        """The argument list (after the Python executable) for a training config."""
        from engine.cifar.cli import train_arguments

        return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "engine", "cifar", "train", "--json", "--progress-json",
                *train_arguments({"device": "cuda", **config})]

    def is_running(self) -> bool:
        return self._process is not None

    def start(self, config: dict[str, Any], gpus: list[int]) -> None:
        """One rank per GPU in ``gpus`` (CUDA indices; the others are hidden from the ranks)."""
        from engine.cifar.cli import PROGRESS_PREFIX

        arguments = self.command(config, len(gpus))  # first: a setting it cannot pass raises
        self._prefix = PROGRESS_PREFIX.encode()
        self._pending, self._stderr_tail, self._buffer = [], [], b""
        self._error_line = None
        self._setting_error = None
        process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("CUDA_VISIBLE_DEVICES", self.visible_devices(gpus))
        process.setProcessEnvironment(environment)
        # the checkout's root, where "-m engine" finds this engine
        process.setWorkingDirectory(str(Path(__file__).resolve().parents[1]))
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._process = process
        self._timer.start()
        process.start(sys.executable, arguments)

    @staticmethod
    def visible_devices(gpus: list[int]) -> str:
        """CUDA_VISIBLE_DEVICES for these CUDA indices, which count within this process's own
        CUDA_VISIBLE_DEVICES when it has one."""
        own = os.environ.get("CUDA_VISIBLE_DEVICES")
        names = [n.strip() for n in own.split(",")] if own else None
        return ",".join(names[i] if names and i < len(names) else str(i) for i in gpus)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()  # torchrun passes SIGTERM on; ranks stop and checkpoint

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        if self._process is None:
            return True
        self.stop()
        ended = self._process.waitForFinished(timeout_ms)
        if not ended:
            self._process.kill()
            self._process.waitForFinished(1000)
        return ended

    def _read_stderr(self) -> None:
        self._buffer += bytes(self._process.readAllStandardError())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(self._prefix):
                try:
                    update = json.loads(line[len(self._prefix):])
                except ValueError:
                    continue
                if isinstance(update, dict) and update.get("phase") == "error":
                    self._setting_error = update.get("setting")
                elif isinstance(update, dict):
                    self._pending.append(_with_nans(update))
            elif line.strip():
                text = line.decode(errors="replace")
                self._stderr_tail = (self._stderr_tail + [text])[-20:]
                if text.startswith("error:"):
                    self._error_line = text

    def _deliver(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.progress.emit(batch)

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._finish(None, "could not start torchrun")

    def _on_finished(self, code: int, _status) -> None:
        self._read_stderr()
        out = bytes(self._process.readAllStandardOutput()).decode(errors="replace")
        documents = [line for line in out.splitlines() if line.startswith("{")]
        result = None
        if documents:
            try:
                result = json.loads(documents[-1])
            except ValueError:
                self._error_line = ("error: torchrun's result could not be read "
                                    f"({documents[-1][:80]}…)")
        if isinstance(result, dict):
            self._finish(result, None)
            return
        message = self._refused_setting()
        if message is None:
            message = (self._error_line[6:].strip() if self._error_line
                       else "\n".join(self._stderr_tail[-5:]))
        self._finish(None, message or f"torchrun exited with code {code}")

    def _refused_setting(self) -> str | None:
        """The refused setting --progress-json reported, said by ``name_setting``; None if none
        (or not in the form the CLI writes: its error line then says it)."""
        from engine.cifar.trainer import SettingError

        try:
            return self._name_setting(SettingError(**self._setting_error))
        except (TypeError, AttributeError):  # None, or not what SettingError takes
            return None

    def _finish(self, result, error) -> None:
        self._timer.stop()
        self._deliver()
        if self._process is not None:
            self._process.deleteLater()
        self._process = None
        if error is not None:
            self.errored.emit(error)
        else:
            self.returned.emit(result)
        self.finished.emit()


# Numbers that strict JSON sends as null when they are NaN or infinite (a diverging loss).
_MEASURES = frozenset({"loss", "train_loss", "train_acc", "test_acc", "images_per_s", "eta_s",
                       "lr"})


def _with_nans(update: dict) -> dict:
    """A progress update from torchrun's JSON lines with its null measures back as NaN."""
    def restore(row: dict) -> dict:
        return {k: math.nan if v is None and k in _MEASURES else v for k, v in row.items()}

    update = restore(update)
    if isinstance(update.get("history"), list):
        update["history"] = [restore(row) if isinstance(row, dict) else row
                             for row in update["history"]]
    return update

