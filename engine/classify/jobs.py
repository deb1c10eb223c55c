"""Classify jobs for the CLI and the GUI's JobRunner (``job(config, ctx) -> dict``).

* :func:`classify_job` — classify files/folders, one ``{"event": "result"}`` report per image.
* :func:`gradcam_job` — Grad-CAM heatmap for one image and class.
* :func:`catalog_job` — the model list for the picker (what is on disk, sizes, accuracy).
* :func:`load_model_job` — load (download if needed) a model and keep it for the next jobs.

Loaded models are kept in a one-slot cache keyed by (model, weights file with its size and
time, hub entry, device, precision), so the GUI loads a model once and every later drop only
decodes and runs it.

Reports (plain data): ``{"event": "download", "file", "bytes", "total", "speed", "eta"}``,
``{"event": "verify", ...}`` (the same keys and ``downloaded``: the weights' SHA-256 check),
``{"event": "loading", "model": title, "stage", "text"}`` (a stage of a model's load begins),
``{"event": "model", "model": info dict, "load_seconds"}``,
``{"event": "result", "index", "total", "result": ImageResult.to_dict()}``,
``{"event": "gradcam", "path", "class_index", "label", "cam": float32 HxW}``,
``{"event": "note", "text"}`` (e.g. Grad-CAM not available for this model).

Model config keys (any job): ``model`` (zoo id), ``weights_file``, ``hub`` ({"repo", "entry"}),
``torchscript`` ({"path", "class_names", "input_size", "title"}), ``precision``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from engine.jobs import JobContext, JobError, JobStopped

_cache_lock = threading.Lock()
_cached: tuple[tuple, Any] | None = None  # (key, Classifier)


def _file_stamp(path: str | None) -> tuple | None:
    """(path, size, mtime, inode) so a file rewritten in place, or replaced by a new one under
    its name (a retrained export), is a new model."""
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None, None, None)
    return (path, stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _model_key(config: dict, device: str) -> tuple:
    hub = config.get("hub")
    script = config.get("torchscript")
    return (
        config.get("model") or "efficientnet_lite0",
        _file_stamp(config.get("weights_file")),
        (hub.get("repo"), hub.get("entry")) if hub else (
            ("torchscript", _file_stamp(script.get("path")), tuple(script.get("class_names") or ()),
             script.get("title")) if script else None),
        device,
        config.get("precision", "auto"),
    )


def get_classifier(config: dict, ctx: JobContext):
    """The :class:`Classifier` for ``config`` on ``ctx.device``: cached, or loaded now.

    Reports ``{"event": "model", ...}`` either way, plus, when it loads, download progress and
    each stage of the load (``{"event": "loading", ...}``); a stop is obeyed between stages
    (:class:`JobStopped` saying so), and a model whose load was stopped is not kept.
    """
    global _cached
    from engine.classify.classifier import Classifier
    from engine.classify.load_stages import LoadStages
    from engine.classify.zoo import (
        load_cached_default_model,
        load_hub_model,
        load_model,
        load_torchscript_model,
    )

    key = _model_key(config, ctx.device)
    with _cache_lock:
        reusable = _cached is not None and _cached[0] == key and (
            config.get("inference_only") or not _cached[1].loaded.optimized)  # Grad-CAM: Python
        if reusable:
            classifier = _cached[1]
            if config.get("optimize", True):
                classifier.optimize_for_cpu()  # no-op once done
            ctx.report({"event": "model", "model": classifier.loaded.info.to_dict(),
                        "load_seconds": 0.0, "cached": True})
            return classifier
        if _cached is not None and not _room_for_two_models(_cached[1].loaded.device, ctx.device):
            _cached = None
        # otherwise the previous model is kept until this one is ready: a load that is stopped
        # or fails leaves it in use, so going back to it costs nothing
        hub = config.get("hub")
        script = config.get("torchscript")
        if script:
            loaded = load_torchscript_model(
                script.get("path", ""), ctx.device, class_names=script.get("class_names"),
                input_size=int(script.get("input_size", 224)), title=script.get("title"),
                progress=ctx.report, should_stop=ctx.stopped)
        elif _cached_copy_will_do(config, key):
            loaded = load_cached_default_model(ctx.device) or load_model(
                key[0], ctx.device, progress=ctx.report, should_stop=ctx.stopped)
        elif hub:
            loaded = load_hub_model(hub.get("repo", ""), hub.get("entry", ""), ctx.device,
                                    progress=ctx.report, should_stop=ctx.stopped)
        else:
            loaded = load_model(key[0], ctx.device, weights_file=config.get("weights_file") or None,
                                progress=ctx.report, should_stop=ctx.stopped)
        classifier = Classifier(loaded, precision=key[4])
        # a stop during the warm-up is obeyed once it ends: the model is then dropped, not kept
        classifier.warm_up(optimize=config.get("optimize", True),
                           stages=LoadStages(loaded.info.title, ctx.report, ctx.stopped))
        _cached = (key, classifier)
    ctx.report({"event": "model", "model": loaded.info.to_dict(),
                "load_seconds": loaded.load_seconds, "cached": False})
    return classifier


#: Free memory a GPU needs to hold a new model beside the kept one: ViT-H/14, the largest
#: torchvision model, has 2.5 GB of weights, and its warm-up needs room too.
GPU_ROOM_FOR_A_SECOND_MODEL = 4 * 1024**3


def _room_for_two_models(kept_on: str, loading_on: str) -> bool:
    """Whether the kept model can stay while another loads. In the computer's memory it can
    (the largest pair, two ViT-H/14, is 5 GB); on the same GPU only with room to spare."""
    if not (kept_on.startswith("cuda") and loading_on.startswith("cuda")):
        return True
    import torch

    if torch.device(kept_on) != torch.device(loading_on):
        return True
    free_bytes, _total = torch.cuda.mem_get_info(torch.device(loading_on))
    return free_bytes >= GPU_ROOM_FOR_A_SECOND_MODEL


def _cached_copy_will_do(config: dict, key: tuple) -> bool:
    """Whether the default model's cached TorchScript copy can serve ``config``: CPU fp32
    inference that wants the optimized copy and never asks for Grad-CAM or views."""
    from engine.classify.classifier import resolve_precision
    from engine.classify.zoo import DEFAULT_MODEL

    model_id, weights_file, other_source, device, precision = key
    return (bool(config.get("inference_only")) and config.get("optimize", True)
            and model_id == DEFAULT_MODEL and not weights_file and other_source is None
            and device == "cpu" and resolve_precision(precision, device) is None)


@contextlib.contextmanager
def cpu_threads(setting: int | str | None, device: str) -> Iterator[None]:
    """Run the body with ``setting`` torch CPU threads, restored afterwards.

    ``None`` leaves torch alone; ``"idle"`` takes the cores the load average leaves idle. On a
    busy 2-core machine one dropped photo took 44 ms with 1 thread and 239 ms (median) with 2,
    whose threads wait on each other. torch keeps the count per thread, and new threads copy the
    last value set, so it is put back at once.
    """
    if setting is None or not device.startswith("cpu"):
        yield
        return
    import torch

    from engine.classify.classifier import idle_cpu_threads

    wanted = idle_cpu_threads() if setting == "idle" else max(1, int(setting))
    before = torch.get_num_threads()
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def forget_cached_model() -> None:
    """Drop the kept model (frees its memory; the next job loads again)."""
    global _cached
    with _cache_lock:
        _cached = None


def classify_job(config: dict, ctx: JobContext) -> dict:
    """Classify ``config["paths"]`` (files and folders).

    Config: ``paths``, ``model`` ("efficientnet_lite0"), ``weights_file``, ``hub`` ({"repo",
    "entry"}), ``top_k`` (5), ``batch_size`` (32), ``workers``, ``precision`` ("auto"),
    ``threads`` (None: torch's setting; N or "idle": CPU threads for this job only),
    ``optimize`` (True: build the faster CPU copy of the model, ~0.5 s, repaid after ~70 photos),
    ``fast_decode`` (False: JPEG draft decoding), ``views`` (False: include thumbnail and the net's
    view in each result), ``thumbnail_size`` (256), ``gradcam_limit`` (0: Grad-CAM of the top class
    for up to this many images, reported as ``gradcam`` events), ``found`` (None: the
    :func:`~engine.classify.images.find_images` of ``paths`` when a caller walked them already,
    as the CLI does to prefetch; the job walks them otherwise).

    Returns ``{"status": "done" | "stopped", "model", "results": [ImageResult.to_json()],
    "classified", "failed", "skipped" (files in the folders that are not images), "total",
    "seconds", "images_per_second"}``, and ``reason`` when stopped while the model loaded
    (its weights downloaded or checked, or a stage of its load). Bad files never stop the batch.
    """
    with cpu_threads(config.get("threads"), ctx.device):
        return _classify(config, ctx)


def _classify(config: dict, ctx: JobContext) -> dict:
    from engine.classify.images import find_images, skipped_note

    started = time.perf_counter()
    raw_paths = config.get("paths") or []
    if not raw_paths:
        raise JobError("no images given: pass image files or folders")
    found = config.get("found")
    if found is None:
        found = find_images(raw_paths)
    paths, skipped = found.paths, len(found.skipped)
    if not paths:
        raise JobError("no image files found in " + ", ".join(str(p) for p in raw_paths)
                       + (f": {skipped_note(skipped)}" if skipped else ""))
    try:
        classifier = get_classifier(config, ctx)
    except JobStopped as exc:
        return {"status": "stopped", "reason": str(exc) or None, "results": [], "classified": 0,
                "failed": 0, "skipped": skipped, "total": len(paths),
                "seconds": time.perf_counter() - started}
    views = bool(config.get("views", False))
    gradcam_limit = int(config.get("gradcam_limit", 0))
    top_k = int(config.get("top_k", 5))
    results: list[dict] = []
    classified = failed = 0
    total = len(paths)
    if total == 1 and not config.get("fast_decode"):  # a single drop: no pool, no batching
        thumbnail = int(config.get("thumbnail_size", 256)) if views else None
        stream = iter([classifier.classify_file(paths[0], top_k, thumbnail)])
    else:
        stream = classifier.classify_files(
            paths, top_k=top_k, batch_size=int(config.get("batch_size", 32)),
            workers=config.get("workers"), fast_decode=bool(config.get("fast_decode", False)),
            thumbnail_size=int(config.get("thumbnail_size", 256)) if views else None,
            with_views=views, should_stop=ctx.stopped, prefetched=config.get("prefetched"),
        )
    for index, result in enumerate(stream):
        if result.error:
            failed += 1
        else:
            classified += 1
        results.append(result.to_json())
        ctx.report({"event": "result", "index": index, "total": total,
                    "result": result.to_dict() if views else result.to_json()})
        wants_gradcam = gradcam_limit and index < gradcam_limit and not ctx.stopped()
        if wants_gradcam and result.net_view is not None and result.top:
            cls = result.top[0]["index"]
            try:
                cam = classifier.grad_cam(result.net_view, cls)
            except JobError as exc:
                ctx.report({"event": "note", "text": str(exc)})
            else:
                ctx.report({"event": "gradcam", "path": result.path, "class_index": cls,
                            "label": result.top[0]["label"], "cam": cam})
        # no break on a stop: the stream ends itself, after the images it had in hand (their
        # answers are kept; their Grad-CAMs, a backward pass each, are not made)
    seconds = time.perf_counter() - started
    stopped = ctx.stopped() and len(results) < total
    return {
        "status": "stopped" if stopped else "done",
        "model": classifier.loaded.info.to_dict(),
        "results": results,
        "classified": classified,
        "failed": failed,
        "skipped": skipped,
        "total": total,
        "seconds": seconds,
        "images_per_second": len(results) / seconds if seconds > 0 else 0.0,
    }


def gradcam_job(config: dict, ctx: JobContext) -> dict:
    """Grad-CAM for ``config["path"]`` and ``config["class_index"]`` (default: the top class).

    Uses the same model config keys as :func:`classify_job`. Returns ``{"path", "class_index",
    "label", "cam"}`` with ``cam`` a float32 HxW array in [0, 1] over the net's view.
    """
    with cpu_threads(config.get("threads"), ctx.device):
        return _grad_cam(config, ctx)


def _grad_cam(config: dict, ctx: JobContext) -> dict:
    from engine.classify.images import ImageProblem

    classifier = get_classifier(config, ctx)
    path = config.get("path")
    if not path:
        raise JobError("Grad-CAM needs an image path")
    try:
        prepared = classifier.prepare(path)
    except ImageProblem as exc:
        raise JobError(f"{path}: {exc}") from None
    class_index = config.get("class_index")
    if class_index is None:
        class_index = classifier.top_k(classifier.probabilities([prepared.crop]), 1)[0][0]["index"]
    class_index = int(class_index)
    cam = classifier.grad_cam(prepared.crop, class_index)
    label = classifier.categories[class_index]
    update = {"event": "gradcam", "path": path, "class_index": class_index, "label": label,
              "cam": cam}
    ctx.report(update)
    return {k: v for k, v in update.items() if k != "event"}


def load_model_job(config: dict, ctx: JobContext) -> dict:
    """Load (downloading if needed) the model in ``config`` and keep it; returns its info, or
    ``{"status": "stopped", "reason"}`` (what was stopped: the download, the check or a stage)."""
    try:
        classifier = get_classifier(config, ctx)
    except JobStopped as exc:
        return {"status": "stopped", "reason": str(exc) or None}
    return {"status": "done", "model": classifier.loaded.info.to_dict()}


def catalog_job(config: dict | None, ctx: JobContext) -> dict:
    """``{"models": [ModelInfo.to_dict()]}``: the offline default, then every torchvision model."""
    from engine.classify.zoo import list_models

    return {"models": [info.to_dict() for info in list_models()]}
