"""CIFAR checkpoints: atomic save, checked load, and export to TorchScript / ONNX.

A checkpoint is one ``torch.save`` file holding plain data and tensors only (so it loads with
``weights_only=True``): model, optimizer, scheduler and grad-scaler state, position (completed
epochs + step inside the next one), random-number states, the resolved config, normalization,
class names and the history so far.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.files import in_memory, temporary_name, write_atomically
from engine.jobs import JobError

CHECKPOINT_FORMAT = "torchdesk-cifar"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model_name", "model_state", "class_names", "mean", "std", "config", "epoch")
METADATA_FILE = "torchdesk.json"
EXPORT_SUFFIXES = {".pt": "torchscript", ".pth": "torchscript", ".onnx": "onnx"}
FORMAT_SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}  # what a name without one is given


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"cannot create the checkpoint folder '{folder}': {exc}") from None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint (if any) untouched. A symbolic link is
    followed: the file it points to is replaced, and the link stays.
    """
    path = _resolved_target(Path(path).expanduser())
    blob = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    _make_folder(path.parent)
    write_atomically(path, {path: in_memory(lambda f: torch.save(blob, f))}, "the checkpoint")
    return path


def _resolved_target(path: Path) -> Path:
    """Where a write to ``path`` should land: through a symbolic link to its target (renaming
    over the link would replace the link with a file and leave the target behind)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _refuse_special_file(path: Path, what: str) -> None:
    if path.exists() and not path.is_file() and not path.is_dir():
        raise JobError(f"'{path}' is a device, pipe or socket, not a file; give {what} a "
                       "file name")


def check_writable(path: str | os.PathLike, data: str | os.PathLike | None = None) -> None:
    """Fail now, with a clear message, if a checkpoint could not be written to ``path`` (so a
    run does not train first and lose its work at the first save), or would overwrite
    something that is not a checkpoint (``data``, the dataset, above all)."""
    path = _resolved_target(Path(path).expanduser())
    if path.is_dir():
        raise JobError(f"cannot write the checkpoint '{path}': it is a folder; give a file name")
    _refuse_special_file(path, "the checkpoint")
    if data is not None and path.exists() and path.resolve() == Path(data).expanduser().resolve():
        raise JobError(f"the checkpoint file '{path}' is the dataset itself; choose another name")
    if path.is_file() and path.stat().st_size and not is_checkpoint_file(path):
        raise JobError(f"'{path}' exists and is not a TorchDesk checkpoint, so it is not "
                       "overwritten; choose another file name for the checkpoint")
    _make_folder(path.parent)
    probe = temporary_name(path)
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise JobError(f"cannot write the checkpoint '{path}': {exc.strerror or exc}") from None


def is_checkpoint_file(path: Path) -> bool:
    """Whether ``path`` holds a TorchDesk checkpoint (read lazily: tensors are not loaded)."""
    if not zipfile.is_zipfile(path) or _is_torchscript_archive(path):
        return False
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint; any problem becomes a JobError that names the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise JobError(f"'{path}' is a folder; give the checkpoint file that training wrote")
    if not path.is_file():
        raise JobError(f"checkpoint '{path}' does not exist")
    if _is_torchscript_archive(path):
        raise JobError(
            f"'{path.name}' is a TorchScript export, not a training checkpoint; resuming and "
            "exporting need the checkpoint file that training wrote"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; text, images, …
        raise JobError(f"'{path.name}' is not a readable checkpoint: not a file that training "
                       "(PyTorch's torch.save) wrote")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickles with foreign classes …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects that a TorchDesk checkpoint never contains"
        raise JobError(
            f"'{path.name}' is not a readable checkpoint (corrupt or not a TorchDesk file: "
            f"{reason[:160]})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise JobError(f"'{path.name}' is not a TorchDesk CIFAR checkpoint")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise JobError(
            f"'{path.name}' is a version {blob.get('version')} checkpoint; this TorchDesk reads "
            f"version {CHECKPOINT_VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in blob]
    if missing:
        raise JobError(f"'{path.name}' is incomplete (missing {', '.join(missing)})")
    problem = _inconsistency(blob)
    if problem:
        raise JobError(f"'{path.name}' is inconsistent ({problem}); was it edited by hand?")
    return blob


def _inconsistency(blob: dict) -> str | None:
    """What is wrong with a checkpoint's plain fields, if anything."""
    from engine.cifar.models import MODELS

    def numbers(value, count):
        return (isinstance(value, (list, tuple)) and len(value) == count
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))

    def whole(value, low=0):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    names = blob["class_names"]
    if not isinstance(names, (list, tuple)) or len(names) < 2 or not all(
            isinstance(n, str) for n in names):
        return "class_names must list at least two names"
    if not numbers(blob["mean"], 3) or not numbers(blob["std"], 3):
        return "mean and std must be three numbers each"
    if not all(math.isfinite(v) for v in (*blob["mean"], *blob["std"])) or min(blob["std"]) <= 0:
        return "mean and std must be finite, and std above 0"
    if not isinstance(blob["config"], dict):
        return "config must be a dictionary"
    planned = blob["config"].get("epochs")
    if planned is not None and not whole(planned, low=1):  # older checkpoints lack it
        return "config's epochs must be a whole number of at least 1"
    if not whole(blob.get("step", 0)):
        return "step must be a whole number"
    if not isinstance(blob.get("history") or [], list):
        return "history must be a list of epochs"
    name = blob["model_name"]
    if not isinstance(name, str) or name not in MODELS or blob["config"].get("model", name) != name:
        return f"unknown or mismatched model {blob['model_name']!r}"
    if not whole(blob["epoch"]):
        return "epoch must be a whole number"
    if not isinstance(blob["model_state"], dict):
        return "model_state must be a state dict"
    return None


def _zip_names(path: Path) -> list[str]:
    """The entries of a zip archive (torch.save and TorchScript both write one); [] otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


def _is_torchscript_archive(path: Path) -> bool:
    return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl"))
               for name in _zip_names(path))


def load_model_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict`` with a clear message when the shapes or names do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise JobError(
            f"the weights in '{source}' do not fit this model ({detail[:240]})"
        ) from None


def model_from_checkpoint(blob: dict, source: str = "checkpoint") -> torch.nn.Module:
    """Rebuild the trained model (eval mode, CPU, float32) from a loaded checkpoint."""
    from engine.cifar.models import build_model

    try:
        options = dict(blob["config"].get("model_options") or {})
        model = build_model(blob["model_name"], len(blob["class_names"]), **options)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise JobError(f"the model described in '{source}' cannot be built ({exc})") from None
    load_model_state(model, blob["model_state"], source)
    return model.eval()


def describe(blob: dict) -> dict[str, Any]:
    """What a checkpoint holds, in plain data (for the GUI and ``--json``)."""
    history = blob.get("history") or []
    return {
        "model": blob["model_name"],
        "class_names": list(blob["class_names"]),
        "mean": list(blob["mean"]),
        "std": list(blob["std"]),
        "epoch": int(blob["epoch"]),
        "step": int(blob.get("step", 0)),
        "epochs": int(blob["config"].get("epochs") or 0),
        "test_acc": history[-1].get("test_acc") if history else None,
    }


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike,
                 fmt: str | None = None) -> dict[str, Any]:
    """Export a checkpoint's model, normalization included, as TorchScript (.pt) or ONNX (.onnx).

    The exported model takes float RGB in [0, 1], shape N×3×32×32, and returns N×K logits.
    TorchScript files carry ``torchdesk.json`` (class names, mean, std) as an extra file; ONNX
    files get a ``.json`` sidecar with the same. Returns the description written.
    """
    from engine.cifar.models import NormalizedClassifier

    out = _resolved_target(Path(out).expanduser())
    if out.is_dir():
        raise JobError(f"'{out}' is a folder; give the export a file name ending in .pt or .onnx")
    _refuse_special_file(out, "the export")
    fmt = export_format(out, fmt)
    out, *description_file = export_targets(out, fmt)
    source = Path(checkpoint).expanduser().resolve()
    if any(target.resolve() == source for target in (out, *description_file)):
        raise JobError("the export would overwrite the checkpoint it is made from; "
                       "choose another file name")
    for sidecar in description_file:
        if sidecar.is_dir():
            raise JobError(f"the ONNX export's description '{sidecar}' would replace a "
                           "folder; choose another file name")
        _refuse_special_file(sidecar, "the export")
    _check_export_target(out, fmt, description_file)
    blob = load_checkpoint(checkpoint)
    wrapper = NormalizedClassifier(model_from_checkpoint(blob, Path(checkpoint).name),
                                   list(blob["mean"]), list(blob["std"])).eval()
    meta = {
        "format": fmt,
        "path": str(out),
        "model": blob["model_name"],
        "class_names": list(blob["class_names"]),
        "mean": list(blob["mean"]),
        "std": list(blob["std"]),
        "input_size": 32,
        "input": "float RGB in [0, 1], N×3×32×32; normalization is inside the model",
    }
    example = torch.rand(2, 3, 32, 32)
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:  # before making any folder
        raise JobError("ONNX export needs the 'onnx' package (pip install onnx)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"cannot create the export folder '{out.parent}': {exc}") from None
    if fmt == "torchscript":
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated
                traced = torch.jit.trace(wrapper, example, check_trace=False)
                model_bytes = in_memory(lambda f: torch.jit.save(
                    traced, f, _extra_files={METADATA_FILE: json.dumps(meta)}))
        except RuntimeError as exc:
            raise JobError(f"TorchScript export failed: {_first_line(exc)}") from None
        write_atomically(out, {out: model_bytes}, "the export")
    elif fmt == "onnx":
        # the TorchScript-based exporter: the default before torch 2.9, which has no `dynamo`
        # argument before 2.5
        legacy = ({"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters
                  else {})
        try:
            model_bytes = in_memory(lambda f: torch.onnx.export(
                wrapper, (example,), f, input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}}, **legacy))
        except Exception as exc:
            raise JobError(f"ONNX export failed: {_first_line(exc)}") from None
        description = json.dumps(meta, indent=2).encode("utf-8")
        write_atomically(out, {out: model_bytes, description_file[0]: description},
                         "the export")
    return meta


def export_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The format an export to ``out`` is written in: ``fmt`` if given, else the one its
    suffix names (.pt or .pth: TorchScript; .onnx: ONNX)."""
    fmt = fmt or EXPORT_SUFFIXES.get(Path(out).suffix.lower())
    if fmt is None:
        raise JobError(f"give the export a name ending in .pt (TorchScript) or .onnx (ONNX), "
                       f"not '{Path(out).name}'")
    if fmt.lower() not in FORMAT_SUFFIXES:
        raise JobError(f"unknown export format '{fmt}'; use torchscript or onnx")
    return fmt.lower()


def export_name(path: str, fmt: str) -> str:
    """``path`` as given when its suffix names an export format (it then says the format, as
    on the command line), else with ``fmt``'s suffix added (.pt or .onnx)."""
    if Path(path).suffix.lower() in EXPORT_SUFFIXES:
        return path
    return path + FORMAT_SUFFIXES[export_format(path, fmt)]


def export_targets(out: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The files an export to ``out`` writes, symbolic links followed: the model, and for ONNX
    its description ``<name>.json`` beside it."""
    out = _resolved_target(Path(out).expanduser())
    if export_format(out, fmt) == "onnx":
        return [out, _resolved_target(out.with_suffix(".json"))]
    return [out]


def export_job(config: dict[str, Any], _ctx) -> dict[str, Any]:
    """Job: export ``config["checkpoint"]`` to ``config["out"]`` (in ``config["format"]``, or
    the one its suffix names); returns the description written."""
    return export_model(config["checkpoint"], config["out"], config.get("format"))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _check_export_target(out: Path, fmt: str, description_file: list[Path]) -> None:
    """Refuse to replace a file that is not an earlier export (a checkpoint, notes, ...);
    each file the export writes is judged on its own."""
    targets = [(out, _is_torchscript_export if fmt == "torchscript" else _is_onnx_model)]
    targets += [(sidecar, _is_onnx_description) for sidecar in description_file]
    for path, replaceable in targets:
        if path.is_file() and path.stat().st_size > 0 and not replaceable(path):
            raise JobError(f"'{path}' exists and is not a TorchDesk export, so it is not "
                           "overwritten; choose another file name")


def handover_path(checkpoint: str | os.PathLike) -> Path:
    """Where "Use in Classify" exports ``checkpoint``'s model: ``NAME.torchscript.pt`` beside
    it, or where another file of the user's has that name, ``NAME.torchscript-2.pt`` (-3, …):
    the first name that is free or holds an earlier TorchDesk export."""
    base = Path(checkpoint).expanduser()
    for n in range(1, 100):
        path = base.with_suffix(".torchscript.pt" if n == 1 else f".torchscript-{n}.pt")
        if not path.exists() or (path.is_file() and (path.stat().st_size == 0
                                                     or _is_torchscript_export(path))):
            return path
    return base.with_suffix(".torchscript.pt")  # the export then says why it cannot write


def _is_torchscript_export(path: Path) -> bool:
    return any(name.endswith(f"extra/{METADATA_FILE}") for name in _zip_names(path))


def _is_onnx_model(path: Path) -> bool:
    """An ONNX file (a ModelProto: its first field, ir_version, starts with byte 0x08), not
    a zip (checkpoints, TorchScript) or text."""
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x08" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _is_onnx_description(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == "onnx" and "class_names" in meta


def read_exported_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The TorchDesk description (class names, mean, std) stored inside a TorchScript export."""
    files = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    except Exception as exc:
        raise JobError(f"'{path}' is not a TorchScript model: {exc}") from None
    if not files[METADATA_FILE]:
        raise JobError(f"'{path}' carries no TorchDesk metadata")
    return json.loads(files[METADATA_FILE])
