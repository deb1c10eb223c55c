"""``python -m engine classify PATH... [--model NAME] [--top K] [--json]`` and friends.

Exit 0 when at least one image was classified; 1 with a one-line ``error:`` when none was or the
model cannot be loaded (weights missing offline, bad weights file, unknown model).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from engine.downloads import MEGABYTE, megabytes

#: Endings of files people pass to --model by mistake (a file goes to --weights).
MODEL_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".onnx", ".safetensors")


def register(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify photos with a pretrained ImageNet network",
        description="Classify image files and folders with a pretrained ImageNet network. "
        "The default model, EfficientNet-Lite0, works offline.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default, offline), a torchvision model such as "
                   "resnet50, or arch.WEIGHTS such as resnet50.IMAGENET1K_V1")
    p.add_argument("--weights", metavar="FILE", help="load this .pth into the --model architecture")
    p.add_argument("--hub", metavar="REPO:ENTRY",
                   help="load from Torch Hub, e.g. pytorch/vision:resnet18 (REPO may be a folder)")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="predictions per image (5; more than the model's classes gives all)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (32)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoding (CPU: decode+classify) threads (default: one per core; "
                   "at most 4 per core)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="PyTorch intra-op CPU threads (default on the CPU: 1, with one "
                   "decode+classify stream per core)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (cpu)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto (default): fp16 autocast on CUDA GPUs, where it is faster with the "
                   "same top-1, and fp32 elsewhere; fp32 everywhere gives reference probabilities")
    p.add_argument("--decode", choices=("exact", "fast"), default="exact",
                   help="exact (default): full-size decode, then the weights' own resize, as "
                   "torchvision's transforms() does; fast: big JPEGs are decoded at 1/2-1/8 size "
                   "first (several times faster, pixels differ slightly)")
    p.add_argument("--list-models", action="store_true",
                   help="list the models with accuracy, size and whether they are on disk")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list: {path, top: [{label, index, prob}], error}")
    p.set_defaults(func=run, skip_teardown=True)  # nothing left to clean up at the end


OPTIMIZE_FROM_IMAGES = 64


def _format_progress(update: dict) -> str | None:
    event = update.get("event")
    if event == "download":
        total = update.get("total")
        done = update["bytes"] / MEGABYTE
        eta = update.get("eta")
        of = f" of {total / MEGABYTE:.1f}" if total else ""
        return (f"downloading {update['file']}: {done:.1f}{of} MB, "
                f"{update['speed'] / MEGABYTE:.1f} MB/s" + (f", {eta:.0f} s left" if eta else ""))
    if event == "verify":
        total = update["total"]
        percent = f"{100 * update['bytes'] / total:.0f}%" if total else "100%"
        what = (f"the downloaded weights {update['file']}" if update.get("downloaded")
                else f"the weights {update['file']} (once, at their first use)")
        return f"checking {what}: {percent} of {megabytes(total)}"
    if event == "model" and not update.get("cached"):
        return f"model: {update['model']['title']} ({update['load_seconds']:.1f} s)"
    if event == "result":
        return f"{update['index'] + 1}/{update['total']} images"
    return None


def _each_phase_at_once(progress):
    """``progress``, except that the first update of a download, of a check and the loaded
    model are printed however soon after the line before ('checking…' right after the
    download's last line, the model right after the check's)."""
    phase = None

    def report(update: dict) -> None:
        nonlocal phase
        event = update.get("event")
        first = event in ("download", "verify", "model") and event != phase
        phase = event
        progress({**update, "final": True} if first else update)

    return report


def _list_models(as_json: bool) -> int:
    from engine.classify.zoo import list_models
    from engine.cli import print_json

    infos = list_models()
    if as_json:
        print_json([info.to_dict() for info in infos])
    else:
        for info in infos:
            print(f"{info.id:28s} {info.summary}")
    return 0


def run(args) -> int:
    from engine.jobs import JobError

    if args.list_models:
        return _list_models(args.json)
    if not args.paths:
        raise JobError("no images given: python -m engine classify PATH... (files or folders)")
    if args.top < 1:
        raise JobError("--top must be at least 1")
    if args.batch_size < 1:
        raise JobError("--batch-size must be at least 1")
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise JobError(f"{flag} must be at least 1")
    if _looks_like_a_file(args.model):
        raise JobError(f"unknown model '{args.model}': --model takes a model name (see "
                       "--list-models); give a weights file with --weights FILE")
    config = {
        "paths": args.paths, "model": args.model, "weights_file": args.weights,
        "top_k": args.top, "batch_size": args.batch_size, "workers": args.workers,
        "precision": args.precision, "fast_decode": args.decode == "fast",
    }
    if args.hub:
        repo, sep, entry = args.hub.rpartition(":")
        if not sep or not repo or not entry:
            raise JobError("--hub takes REPO:ENTRY, e.g. pytorch/vision:resnet18")
        config["hub"] = {"repo": repo, "entry": entry}
    from engine.classify.images import find_images, skipped_note, start_prefetch
    from engine.classify.zoo import DEFAULT_MODEL, LITE0_PREPROCESS

    found = config["found"] = find_images(args.paths)  # the job takes this walk as it is
    if found.paths and found.skipped:  # none found: the job says where, and what it skipped
        note(skipped_note(len(found.skipped)))
    # the optimized CPU copy takes ~0.5 s to build and saves ~7 ms a photo
    config["optimize"] = len(found.paths) >= OPTIMIZE_FROM_IMAGES
    config["inference_only"] = True  # no Grad-CAM: the default model's cached copy will do
    prefetch = None
    if args.model == DEFAULT_MODEL and not (args.weights or args.hub) and args.device == "cpu":
        # decode the first photos on another core while torch imports and the model loads
        if len(found.paths) > 1:
            prefetch = config["prefetched"] = start_prefetch(
                found.paths, LITE0_PREPROCESS, config["fast_decode"])
    try:
        return _classify(args, config)
    finally:
        if prefetch is not None:
            prefetch.close()


@contextlib.contextmanager
def _first_interrupt_stops(ctx):
    """Ctrl-C stops the run after the images being classified, and the answers so far are
    printed; a second Ctrl-C interrupts at once (no answers)."""
    def stop(_signum, _frame) -> None:
        ctx.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread gets signals (and may set their handlers)
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def note(text: str) -> None:
    """A remark on stderr that does not change the exit status."""
    print(f"note: {text}", file=sys.stderr, flush=True)


def _looks_like_a_file(model: str) -> bool:
    return os.sep in model or "/" in model or model.lower().endswith(MODEL_FILE_SUFFIXES)


def _classify(args, config: dict) -> int:
    from engine.imports import heavy_imports

    with heavy_imports():
        import torch

        from engine.classify.classifier import WORKERS_PER_CORE, max_workers
        from engine.classify.jobs import classify_job
        from engine.cli import StderrProgress, print_json
        from engine.devices import resolve_device
        from engine.jobs import JobContext

    device = resolve_device(args.device)
    cores = os.cpu_count() or 1
    workers = args.workers
    if workers is not None and workers > max_workers():
        note(f"--workers {workers} is more than this machine's {cores} cores "
             f"can use ({WORKERS_PER_CORE} per core): using {max_workers()}")
        workers = max_workers()
    threads = args.threads
    if threads and threads > cores:  # intra-op threads beyond the cores wait on each other
        note(f"--threads {threads} is more than this machine's {cores} cores: using {cores}")
        threads = cores
    if threads:
        torch.set_num_threads(threads)
    elif device == "cpu":  # one single-threaded decode+classify stream per core (see Classifier)
        torch.set_num_threads(1)
    config["workers"] = workers
    progress = _each_phase_at_once(StderrProgress(_format_progress, interval=1.0, quiet=False))
    ctx = JobContext(device=device, progress=progress)
    with _first_interrupt_stops(ctx):
        outcome = classify_job(config, ctx)
    results = outcome["results"]  # names that are not UTF-8: engine.cli prints them escaped
    shown = max((len(entry["top"]) for entry in results), default=args.top)
    if 0 < shown < args.top:
        note(f"--top {args.top} is more than the model's {shown} classes: showing all {shown}")
    if args.json:
        print_json(results)
    else:
        for entry in results:
            if entry["error"]:
                print(f"{entry['path']}: error: {entry['error']}")
            else:
                best = ", ".join(f"{t['label']} {t['prob']:.1%}" for t in entry["top"])
                print(f"{entry['path']}: {best}")
    if outcome["status"] == "stopped" and outcome.get("reason"):  # while loading the model
        print(outcome["reason"], file=sys.stderr)
        return 130
    if outcome["status"] == "stopped":
        print(f"stopped after {len(results)} of {outcome.get('total', len(results))} images",
              file=sys.stderr)
        return 130
    if outcome["classified"] == 0:
        reasons = {entry["error"] for entry in results if entry["error"]}
        why = f" ({reasons.pop()})" if len(reasons) == 1 else ""
        print(f"error: none of the {len(results)} files could be classified{why}",
              file=sys.stderr)
        return 1
    return 0
