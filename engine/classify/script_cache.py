"""The optimized TorchScript copy of the default model, kept on disk so it is scripted only once.

Scripting EfficientNet-Lite0 takes ~0.5 s, a tenth of a 300-photo CLI run; loading the saved
script and freezing it takes ~0.25 s, and needs no Python model at all. A cache entry is keyed by
the torch version, the model's code and its weights file (path, size, modification time), and
carries the Python model's logits for a fixed probe batch: an entry is used only while the copy
loaded from it still gives those logits, so a stale or damaged file is dropped, never believed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from engine.files import in_memory, write_atomically
from engine.jobs import JobError

FORMAT = 1
PROBE_FILE = "probe_logits.json"
#: The optimized copy is used only when its logits match the Python model's this closely.
TOLERANCE = 1e-3


def cache_dir() -> Path:
    from engine.cache import cache_root

    return cache_root() / "scripted"


def cache_key(model_id: str, weights_file: str, code_files: tuple[str, ...] = ()) -> str | None:
    """A key that changes with torch, the model's code and its weights file (None: unreadable)."""
    try:
        stat = os.stat(weights_file)
        code = [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in code_files]
    except OSError:
        return None
    parts = {"format": FORMAT, "torch": torch.__version__, "model": model_id, "code": code,
             "weights": [os.path.abspath(weights_file), stat.st_size, stat.st_mtime_ns]}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return f"{model_id}-{digest}"


def probe_batch(crop_size: int) -> torch.Tensor:
    """A fixed, image-like (2, 3, size, size) channels_last batch for comparing model copies."""
    n = 2 * 3 * crop_size * crop_size
    values = torch.sin(torch.arange(n, dtype=torch.float32) * 0.0137) * 1.5
    return values.view(2, 3, crop_size, crop_size).contiguous(memory_format=torch.channels_last)


def script_and_optimize(module: torch.nn.Module) -> tuple[torch.jit.ScriptModule, torch.nn.Module]:
    """(scripted copy, frozen copy with oneDNN fusions) of an eval-mode CPU model."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices
        scripted = torch.jit.script(module.eval())
        return scripted, _optimize(scripted)


def _optimize(scripted: torch.jit.ScriptModule) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval()))


def first_output(out):
    return out[0] if isinstance(out, tuple | list) else out


def matches(expected: torch.Tensor, got: torch.Tensor) -> bool:
    return expected.shape == got.shape and bool((expected - got).abs().max() <= TOLERANCE)


def save(key: str, scripted: torch.jit.ScriptModule, probe_logits: torch.Tensor) -> Path | None:
    """Write the entry atomically (temporary file, then rename); None if the cache is not
    writable (it is only a shortcut)."""
    folder = cache_dir()
    target = folder / f"{key}.pt"
    extra = {PROBE_FILE: json.dumps(probe_logits.float().tolist())}

    def write(buffer) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            torch.jit.save(scripted, buffer, _extra_files=extra)

    try:
        # in memory first: torch.jit.save onto a full disk aborts the whole process
        data = in_memory(write)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(target, {target: data}, "the script cache")
    except (OSError, RuntimeError, JobError):
        return None
    model_id = key.rsplit("-", 1)[0]
    for old in folder.glob(f"{model_id}-*.pt"):  # entries of an older torch, code or weights
        if old != target:
            with contextlib.suppress(OSError):
                old.unlink()
    return target


def load(key: str, crop_size: int) -> torch.nn.Module | None:
    """The optimized copy from the cache, or None (absent, unreadable, or no longer giving the
    logits it was saved with: such a file is removed)."""
    path = cache_dir() / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        extra = {PROBE_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        expected = torch.tensor(json.loads(extra[PROBE_FILE]), dtype=torch.float32)
        optimized = _optimize(scripted)
        with torch.inference_mode():
            got = first_output(optimized(probe_batch(crop_size))).float()
        if matches(expected, got):
            return optimized
    except Exception:  # noqa: BLE001 - any damage means: rebuild it from the Python model
        pass
    with contextlib.suppress(OSError):
        path.unlink()
    return None
