"""``python -m engine cifar ...``: train, inspect data, download, export.

``train`` works the same under ``torchrun --nproc_per_node=N -m engine cifar train ...``
(DistributedDataParallel); only rank 0 prints. Ctrl-C (or SIGTERM) stops cleanly after the
current step, keeps the checkpoint and prints the results so far; before training begins (while
the data decodes) it ends the run with nothing trained or written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from engine.cli import StderrProgress, format_duration, json_text, print_json
from engine.downloads import MEGABYTE, megabytes

PROGRESS_PREFIX = "@progress "
EVERY_RANK_GRACE_S = 20.0  # how long a rank waits for rank 0 to report a settings error


def train_arguments(config: dict[str, Any]) -> list[str]:
    """The ``cifar train`` arguments for a trainer config (what the window passes to torchrun),
    from the flags defined here; None leaves a setting to its default. A key with no flag is
    refused, so that no setting is dropped on the way."""
    from engine.cli import build_parser

    settings = build_parser().parse_args(["cifar", "train"]).train_settings
    args: list[str] = []
    for key, value in config.items():
        if key == "device":  # the job's device, not a setting of its config
            args += ["--device", str(value)]
            continue
        action = settings.get(key)
        if action is None:
            raise ValueError(f"cifar train has no flag for the setting {key!r}")
        flag = action.option_strings[0]
        if value is None:
            continue
        if action.nargs == 0:  # a switch: --flip / --no-flip
            if value:
                args.append(flag)
            elif len(action.option_strings) > 1:
                args.append(action.option_strings[1])
            else:
                raise ValueError(f"cifar train cannot turn {flag} off")
        elif key == "classes":
            if any("," in name for name in value):
                raise ValueError("a class name with a comma cannot be passed to torchrun's "
                                 f"--classes: {', '.join(repr(n) for n in value if ',' in n)}")
            args += [flag, ",".join(value)]
        else:
            args += [flag, str(value)]
    return args


def register(subparsers) -> None:
    parser = subparsers.add_parser("cifar", help="CIFAR-10: train a CNN, inspect data, export")
    sub = parser.add_subparsers(dest="cifar_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    flags: dict[str, str] = {}  # each config key's flag (tta_level: --tta), for its errors
    settings: dict[str, argparse.Action] = {}  # the trainer config's keys and their arguments

    def flagged(group, flag: str, setting: bool = True, **options) -> None:
        action = group.add_argument(flag, **options)
        flags[action.dest] = flag
        if setting:
            settings[action.dest] = action

    train = sub.add_parser(
        "train", help="train a model (also under torchrun for DDP)",
        description="Train a CIFAR model. Under torchrun (DistributedDataParallel) each "
        "process trains on its share of every batch, on the CPU or with --device cuda on the "
        "GPU of its local rank (choose the GPUs with CUDA_VISIBLE_DEVICES); BatchNorm layers "
        "normalize over each process's share, so the results differ a little from one "
        "process's.")
    flagged(train, "--data", help="dataset folder or .tar.gz (optional with --resume)")
    flagged(train, "--model", help="fast, net, netwidth, netdropout, netbatchnorm, "
                   "netdepth, netres, netresdeep (default: fast)")
    flagged(train, "--classes", help="comma-separated class names, or cifar2")
    flagged(train, "--epochs", type=int)
    flagged(train, "--batch-size", type=int)
    flagged(train, "--lr", type=float)
    flagged(train, "--device", setting=False, default="cpu",
            help="cpu (default), cuda, cuda:1, mps, auto; under torchrun: cpu or cuda")
    flagged(train, "--seed", type=int)
    flagged(train, "--checkpoint", help="write checkpoints here (each epoch, and on stop)")
    flagged(train, "--resume", help="continue from this checkpoint")
    flagged(train, "--json", setting=False, action="store_true",
            help="print the results as one JSON object")
    tuning = train.add_argument_group("recipe (defaults depend on the model)")
    flagged(tuning, "--optimizer", choices=["sgd", "nesterov", "adam", "adamw", "muon"],
                help="muon: Muon for the conv filters, Nesterov SGD for the rest")
    flagged(tuning, "--momentum", type=float)
    flagged(tuning, "--muon-lr", type=float, help="Muon's learning rate for the filters")
    flagged(tuning, "--muon-momentum", type=float, help="Muon's momentum for the filters")
    flagged(tuning, "--weight-decay", type=float)
    flagged(tuning, "--label-smoothing", type=float)
    flagged(tuning, "--schedule", choices=["constant", "warmup_linear", "warmup_cosine"])
    flagged(tuning, "--warmup", type=float, help="fraction of steps spent warming up")
    flagged(tuning, "--flip", action=argparse.BooleanOptionalAction, default=None)
    flagged(tuning, "--translate", type=int, help="random shift in pixels (0 = off)")
    flagged(tuning, "--tta", type=int, dest="tta_level", help="test-time augmentation level")
    flagged(tuning, "--eval-every", type=int, help="epochs between test evaluations (0: end)")
    run_opts = train.add_argument_group("running")
    flagged(run_opts, "--precision", choices=["auto", "fp32", "bf16", "fp16"])
    flagged(run_opts, "--channels-last", action=argparse.BooleanOptionalAction, default=None)
    flagged(run_opts, "--compile", action=argparse.BooleanOptionalAction, default=None,
            help="torch.compile the model (--no-compile: not, also when resuming one that was)")
    flagged(run_opts, "--max-train", type=int, help="use at most N training images")
    flagged(run_opts, "--max-test", type=int, help="use at most N test images")
    flagged(run_opts, "--cache-dir", help="where decoded data is cached")
    flagged(run_opts, "--quiet", setting=False, action="store_true", help="no progress lines")
    flagged(run_opts, "--progress-json", setting=False, action="store_true",
                  help=f"progress as '{PROGRESS_PREFIX}{{json}}' lines on stderr (a "
                  "refused setting too: phase 'error', its 'setting' by config key)")
    train.set_defaults(func=run_train, setting_flags=flags, train_settings=settings)

    info = sub.add_parser("info", help="load a dataset (decoding it once) and describe it")
    info.add_argument("--data", required=True)
    info.add_argument("--classes")
    info.add_argument("--cache-dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)

    download = sub.add_parser("download", help="download torchvision's CIFAR-10 into a folder")
    download.add_argument("folder")
    download.set_defaults(func=run_download)

    export = sub.add_parser("export", help="export a checkpoint to TorchScript (.pt) or ONNX")
    export.add_argument("checkpoint")
    export.add_argument("out", help="output file: .pt for TorchScript, .onnx for ONNX")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=run_export)


def _setting_message(exc, flags: dict[str, str]) -> str:
    """A refused setting's message, named by its flag; a key without one (only a checkpoint
    holds it: whiten_bias_epochs, lr_start) is named in words."""
    if exc.key in flags:
        return exc.naming(flags[exc.key])
    return exc.naming(exc.key.replace("_", " "),
                      advice={"checkpoint": " (the checkpoint's value, which no flag replaces)"})


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def format_update(update: dict[str, Any]) -> str | None:
    """One human line for a progress update (None: nothing worth printing)."""
    phase = update.get("phase")
    if phase == "load" and update.get("message"):  # a note (the cache cannot be written)
        return update["message"]
    if phase == "load":
        total = update.get("total") or 0
        what = {"decode": "decoding images", "download": "downloading",
                "cache": "reading cache"}.get(update.get("step_name"), "loading")
        return f"{what} {update.get('done', 0)}/{total}" if total else what
    if phase == "start":
        params = update["params"]["trainable"]
        return (f"training {update['model']} ({params:,} parameters) on {update['device']}"
                f" ×{update['world_size']}, {update['precision']}, "
                f"{update['epochs']} epochs of {update['steps_per_epoch']} steps")
    if phase == "train":
        return (f"epoch {update['epoch']}/{update['epochs']} step {update['step']}/"
                f"{update['steps_per_epoch']}  loss {update['loss']:.4f}  "
                f"{update['images_per_s']:.0f} img/s  ETA {format_duration(update['eta_s'])}")
    if phase == "epoch":
        test = f"  test acc {update['test_acc']:.2%}" if "test_acc" in update else ""
        took = (f"{update['epoch_time_s']:.1f} s, {update['time_s']:.1f} s in all"
                if "epoch_time_s" in update else f"{update['time_s']:.1f} s in all")
        return (f"epoch {update['epoch']} done: loss {update['train_loss']:.4f}  "
                f"train acc {update['train_acc']:.2%}{test}  ({took})")
    if phase == "resume":
        return update.get("message")
    if phase == "evaluate":
        what = (f"testing after epoch {update.get('epoch')}" if update.get("between_epochs")
                else "evaluating on the test set")
        total = update.get("total")
        if not total:
            return what
        eta = update.get("eta_s")
        left = f", ~{short_duration(eta)} left" if eta is not None else ""
        return f"{what}: {update.get('done', 0):,}/{total:,} images{left}"
    if phase == "warm-up":
        return "warming up (a few untimed steps; the weights are put back)"
    if phase == "done":
        acc = update.get("test_acc")
        return f"{update['status']}: test acc {acc:.2%}" if acc is not None else update["status"]
    return None


def short_duration(seconds: float) -> str:
    """'6 s' under a minute, else as :func:`format_duration` writes it ('1:05')."""
    return f"{max(0, round(seconds))} s" if seconds < 59.5 else format_duration(seconds)


class _CliProgress:
    """Milestones always print; step lines (training, loading, evaluations' progress) at
    most once a second, the last of a load and the first of the final evaluation always."""

    def __init__(self, quiet: bool, as_json: bool) -> None:
        self._steps = StderrProgress(format_update, interval=1.0, quiet=quiet)
        self._quiet = quiet
        self._as_json = as_json
        self.phase: str | None = None  # the last update's: what a Ctrl-C now would stop
        self.between_epochs = False  # the last update's: an evaluation between epochs

    def __call__(self, update: dict[str, Any]) -> None:
        self.phase = update.get("phase", self.phase)
        self.between_epochs = bool(update.get("between_epochs"))
        if self._as_json:
            sys.stderr.write(PROGRESS_PREFIX + json_text(update) + "\n")
            sys.stderr.flush()
            return
        if update.get("message") and update.get("phase") == "load":  # a note: shown even quiet
            print(format_update(update), file=sys.stderr, flush=True)
        elif update.get("phase") in ("train", "load", "evaluate"):
            total = update.get("total")
            # the final evaluation's first update (or one without counts) and the last load
            # update always show, however soon after the one before; an evaluation between
            # epochs shows only where it lasts (throttled like the steps)
            starts = (update.get("phase") == "evaluate" and not update.get("done")
                      and not update.get("between_epochs"))
            ends = update.get("phase") == "load" and total and update.get("done") == total
            self._steps({**update, "final": True} if starts or ends else update)
        elif not self._quiet:
            line = format_update(update)
            if line:
                print(line, file=sys.stderr, flush=True)


def stop_notice(phase: str | None, between_epochs: bool = False) -> str:
    """What a first Ctrl-C does, said when it arrives in ``phase`` (the last progress update's;
    ``between_epochs``: it was an evaluation between epochs)."""
    if phase in ("start", "train", "epoch"):
        return "stopping after this step (Ctrl-C again to abort)"
    if phase == "evaluate" and between_epochs:
        return "stopping at this epoch's end: its test is given up (Ctrl-C again to abort)"
    if phase == "evaluate":
        return "stopping: the final evaluation is given up (Ctrl-C again to abort)"
    if phase == "done":
        return "stopping (Ctrl-C again to abort)"
    # the data loads (a decode stops within 256 images, its cache unwritten), or the warm-up
    return ("stopping before training begins: nothing is trained and no checkpoint is written "
            "(Ctrl-C again to abort)")


def _install_stop_handlers(stop_event: threading.Event, progress: _CliProgress) -> dict:
    """First Ctrl-C/SIGTERM asks the job to stop (checkpoint kept); a second one interrupts.

    Returns the previous handlers, for :func:`_restore_handlers`."""

    def handler(signum, frame):
        if stop_event.is_set():
            raise KeyboardInterrupt
        stop_event.set()
        if _is_main_rank():
            _say_from_a_signal_handler(stop_notice(progress.phase, progress.between_epochs))

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    return previous


def _say_from_a_signal_handler(line: str) -> None:
    """Write a line to stderr's file descriptor: the signal may have landed while stderr was
    writing a progress line, and print would then fail ("reentrant call inside
    BufferedWriter"). A stream without one (captured in memory) is printed to."""
    stream = sys.stderr
    if stream is None:  # started with stderr closed
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: in memory
        print(line, file=stream, flush=True)
        return
    try:
        os.write(fd, (line + "\n").encode(stream.encoding or "utf-8", errors="replace"))
    except OSError:  # a closed descriptor, a reader gone: the notice is not worth a crash
        pass


def _restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_train(args) -> int:
    # Ctrl-C from the very start (PyTorch takes a second to import) stops cleanly, so --json
    # still prints its object.
    stop_event = threading.Event()
    main_rank = _is_main_rank()
    # Under torchrun, the interpreter's teardown after the results sometimes ends a rank with
    # "terminate called without an active exception" (SIGABRT from gloo's threads, pytorch
    # #179291) and torchrun then reports the run as failed: the process ends once its output
    # is flushed instead (the checkpoint and the process group are closed by then).
    args.skip_teardown = int(os.environ.get("WORLD_SIZE", "1")) > 1
    progress = _CliProgress(quiet=args.quiet or not main_rank,
                            as_json=args.progress_json and main_rank)
    previous = _install_stop_handlers(stop_event, progress)
    try:
        return _run_train(args, stop_event, progress)
    finally:
        _restore_handlers(previous)


def _run_train(args, stop_event: threading.Event, progress: _CliProgress) -> int:
    from engine.imports import heavy_imports

    with heavy_imports():
        from engine.cifar.data import parse_classes
        from engine.cifar.trainer import SettingError, on_every_rank, train_job
    from engine.devices import resolve_device
    from engine.jobs import JobContext, JobError, JobStopped

    config = {key: getattr(args, key) for key in args.train_settings}
    config.update({
        "model": args.model.lower() if args.model else None,
        "classes": parse_classes(args.classes),
        # progress lines print at most once a second; fewer reports also mean fewer GPU syncs
        # (each reads the loss back). A GUI reading --progress-json keeps the live rate.
        "report_interval_s": None if args.progress_json else 1.0,
    })
    main_rank = _is_main_rank()
    # a checkpoint file changed since is this run's (its writes rename a new file into place)
    checkpoint_before = _file_signature(args.checkpoint or args.resume)
    try:
        try:  # every rank checks these alike: rank 0 alone says what is wrong
            if not args.data and not args.resume:
                raise JobError("pass --data PATH (the dataset folder or .tar.gz), or --resume "
                               "FILE")
            device = args.device.strip().lower()
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.startswith("cuda:"):
                raise JobError(_torchrun_gpu_index_message(device))
            # under torchrun each rank takes cuda:LOCAL_RANK: this checks that CUDA is there
            device = resolve_device(device)
        except JobError as exc:
            raise on_every_rank(exc) from None
        ctx = JobContext(device=device, progress=progress, stop_event=stop_event)
        if stop_event.is_set():
            raise JobStopped()
        try:
            result = train_job(config, ctx)
        except SettingError as exc:  # named as typed: --batch-size, not batch_size
            if args.progress_json:  # for a front end that names the setting its own way
                progress({"phase": "error", "setting": exc.as_dict()})
            flagged = JobError(_setting_message(exc, args.setting_flags))
            flagged.every_rank = getattr(exc, "every_rank", False)
            raise flagged from None
    except JobStopped:  # stopped before training began (while the data was decoded)
        result = {"status": "stopped", "test_acc": None, "train_time_s": 0.0, "epochs": 0,
                  "history": [], "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                  "checkpoint": None}
    except Exception as exc:
        if main_rank:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _peer_failed(exc):
                raise JobError(_peer_gone_message(args.checkpoint or args.resume,
                                                  resumed=args.resume,
                                                  before=checkpoint_before)) from None
            raise
        if getattr(exc, "every_rank", False) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Rank 0 checks the same settings and says what is wrong; when it exits, torchrun
            # ends this rank (SIGTERM sets the stop event). Leaving first would have torchrun
            # end rank 0 before it can say it. Still here after a while: only this rank met
            # the problem (a file missing on its machine, say).
            if stop_event.wait(EVERY_RANK_GRACE_S):
                return 1
        elif _peer_failed(exc):
            return 1
        if isinstance(exc, JobError):  # this rank's own problem (its machine's files, say)
            print(f"error (rank {os.environ.get('RANK')}): {exc}", file=sys.stderr)
            return 1
        raise
    if main_rank:
        if args.json:
            print_json(result)
        else:
            _print_summary(result)
    return 0 if result.get("status") == "completed" else 130


def _torchrun_gpu_index_message(device: str) -> str:
    """Why ``--device cuda:N`` is refused under torchrun, and how to choose the GPUs."""
    return (f"under torchrun each process trains on the GPU of its local rank "
            f"(cuda:LOCAL_RANK), so --device {device} cannot choose one: pass --device cuda, "
            "and choose the GPUs with CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=1,2 "
            "torchrun --nproc_per_node=2 ...)")


def _file_signature(path: str | None) -> tuple[int, int, int] | None:
    """Inode, modification time and size of ``path``, or None where there is no such file."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        return None
    return None if stat is None else (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _peer_gone_message(checkpoint: str | None, resumed: str | None,
                       before: tuple[int, int, int] | None) -> str:
    """Rank 0's word when another rank has gone (killed, out of memory): not gloo's or NCCL's
    socket error, but what happened and what the checkpoint file holds (``before``: its
    :func:`_file_signature` when this run began; a file changed since is this run's)."""
    message = "another process of this torchrun run stopped unexpectedly, so training stopped"
    if not checkpoint:
        return message
    now = _file_signature(checkpoint)
    written = now is not None and now != before
    if written:
        return (f"{message}; the checkpoint '{checkpoint}' holds the last epoch it saved "
                f"(continue with --resume {checkpoint})")
    if resumed:  # the file it resumed is as it found it
        return f"{message} before it saved a checkpoint (continue with --resume {resumed})"
    return f"{message} before it saved a checkpoint"


# How a process group says that another rank has gone: gloo's socket errors, NCCL's
# ncclRemoteError. Not every DistError: rank 0's own NCCL failures and store timeouts are not.
PEER_GONE = ("connection reset by peer", "connection closed by peer",
             "remote process exiting prematurely")
# gloo's write to a peer that has gone: "[.../gloo/transport/tcp/pair.cc:N] writev
# [127.0.0.1]:PORT: Broken pipe" (its format in the library; killed peers on a 2-core VM were
# always noticed on the read side first). A store's broken pipe is not a peer's.
GLOO_TRANSPORT = "gloo/transport/tcp/"
GLOO_WRITE_FAILED = ("writev", "broken pipe")


def _peer_failed(exc: BaseException) -> bool:
    """Whether the process group broke because a peer (another rank, with its own message, or
    killed) has gone."""
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(words in text for words in PEER_GONE) or (
        GLOO_TRANSPORT in text and all(words in text for words in GLOO_WRITE_FAILED))


def _print_summary(result: dict[str, Any]) -> None:
    print(f"status      {result['status']}")
    if result.get("test_acc") is not None:
        print(f"test acc    {result['test_acc']:.2%}")
    warm_up = result.get("warmup_time_s") or 0
    print(f"train time  {result['train_time_s']:.1f} s ({result['epochs']} epochs, "
          f"world size {result['world_size']}"
          + (f"; after a {warm_up:.1f} s warm-up)" if warm_up else ")"))
    for name, acc in result.get("per_class_acc", {}).items():
        print(f"  {name:<12} {'n/a (no test images)' if acc is None else f'{acc:.2%}'}")
    if result.get("checkpoint"):
        print(f"checkpoint  {result['checkpoint']}")
    if result.get("warning"):
        print(f"warning     {result['warning']}")


def run_info(args) -> int:
    from engine.cifar.data import channel_stats, load_dataset, parse_classes, select_classes

    progress = _CliProgress(quiet=False, as_json=False)
    data = load_dataset(args.data, report=lambda u: progress({**u, "phase": "load",
                                                              "step_name": u.get("phase")}),
                        cache_dir=args.cache_dir)
    data = select_classes(data, parse_classes(args.classes))
    mean, std = channel_stats(data.train_images)
    info = {"source": data.source, "class_names": data.class_names, "counts": data.counts(),
            "mean": mean, "std": std}
    if args.json:
        print_json(info)
    else:
        print(f"source  {info['source']}")
        print(f"mean    {mean}\nstd     {std}")
        for name in data.class_names:
            print(f"  {name:<12} train {info['counts']['train'][name]:>6}  "
                  f"test {info['counts']['test'][name]:>6}")
    return 0


def run_download(args) -> int:
    from engine.cifar.data import download_cifar10

    def show(update):
        total = update.get("total") or 0
        if update["phase"] == "download" and total:
            return f"downloading {update['done'] / MEGABYTE:.1f}/{megabytes(total)}"
        return f"{update['phase']} {update.get('done', '')}"

    progress = StderrProgress(show, interval=1.0)
    folder = download_cifar10(args.folder, report=progress)
    print(folder)
    return 0


def run_export(args) -> int:
    from engine.cifar.checkpoint import export_job, export_targets

    meta = export_job({"checkpoint": args.checkpoint, "out": args.out}, None)
    if args.json:
        print_json(meta)
    else:
        written = " and ".join(map(str, export_targets(meta["path"], meta["format"])))
        print(f"wrote {written} ({meta['format']}; classes: {', '.join(meta['class_names'])})")
    return 0
