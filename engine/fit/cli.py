"""``python -m engine fit``: fit a line (or the book's MLP) to x,y points, without the window."""

from __future__ import annotations

import argparse
import signal
import sys

from engine.fit.choices import ACTIVATION_NAMES, DEFAULT_HIDDEN, MODELS, OPTIMIZERS

RESULT_HELP = """\
which parameters each loss describes:
  progress lines  "epoch N: loss L" is measured at the start of epoch N, before its
                  update, as the book prints it; "val" after the update (at w, b shown)
  summary, JSON   at the final parameters (after the last epoch's update)

--json fields:
  status          done, stopped (Ctrl-C) or diverged (see message)
  message         why the run diverged ("" otherwise)
  epochs          epochs run
  params          the final parameters: {"w", "b"}, or the MLP's weight lists
  train_loss      training loss at the final parameters (null if not finite)
  val_loss        validation loss at the final parameters (null without --val-fraction)
  best_val_epoch  the epoch whose parameters had the lowest validation loss
  best_val_loss   that lowest validation loss
  n_train, n_val  points trained on and held out
  config, device  the settings used
  with --race: status, message, epochs, leader (lowest final train loss), config and
  racers: {name: the fields above for that optimizer}
"""


def register(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit w*x+b (or a small MLP) to x,y points: the book's thermometer data by default",
        description="Fit a model to x,y points by full-batch training, as in Deep Learning with "
        "PyTorch chapters 5-6. The defaults reproduce the book's gradient-descent run.",
        epilog=RESULT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="FILE.csv", help="CSV of x,y rows (header optional); "
                   "default: the book's 11 thermometer readings")
    p.add_argument("--model", choices=MODELS, default="linear")
    p.add_argument("--hidden", type=int, metavar="H",
                   help=f"MLP hidden units (default {DEFAULT_HIDDEN})")
    p.add_argument("--activation", choices=ACTIVATION_NAMES,
                   help="MLP activation (default tanh)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="gd = the book's hand-written gradient descent (default)")
    p.add_argument("--lr", type=float, default=1e-2, metavar="LR", help="learning rate (1e-2)")
    p.add_argument("--epochs", type=int, default=5000, metavar="N", help="epochs (5000)")
    p.add_argument("--input-scale", type=float, default=0.1, metavar="S",
                   help="multiply x by S before the model sees it (the book's 0.1)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="fraction of points held out for validation (0)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for the validation split and the MLP's initial weights")
    p.add_argument("--device", default="cpu", metavar="D",
                   help="cpu (default), cuda, cuda:1, mps, auto")
    p.add_argument("--race", action="store_true",
                   help="race gd, momentum and Adam on the linear model instead")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _format_progress(update: dict) -> str | None:
    if update.get("kind") == "epoch":
        line = f"epoch {update['epoch']}: loss {update['train_loss']:.6f}"
        if update.get("val_loss") is not None:
            line += f", val {update['val_loss']:.6f}"
        if "w" in update:
            line += f", w {update['w']:.4f}, b {update['b']:.4f}"
        return line
    if update.get("kind") == "race":
        parts = [f"{n} {r['train_loss']:.4f}" for n, r in update["racers"].items()]
        return f"epoch {update['epoch']}: " + ", ".join(parts)
    return None


def _print_summary(result: dict) -> None:
    if "racers" in result:
        for name, r in result["racers"].items():
            if r["status"] == "diverged":
                print(f"{name:9s} diverged at epoch {r['epochs']}")
            else:
                p = r["params"]
                line = f"{name:9s} w = {p['w']:.4f}, b = {p['b']:.4f}, loss {r['train_loss']:.6f}"
                if r["val_loss"] is not None:
                    line += f", val loss {r['val_loss']:.6f}"
                print(line)
        print(f"leader: {result['leader'] or 'none'}")
        return
    if result["status"] == "diverged":
        return  # its numbers are not a fit: the error says what happened (--json has them)
    params = result["params"]
    if "w" in params:
        print(f"w = {params['w']:.4f}, b = {params['b']:.4f}")
    else:
        print(f"{sum(_count(v) for v in params.values())} parameters")
    print(f"train loss {result['train_loss']:.6f} at the final parameters, after "
          f"{result['epochs']} epochs")
    if result["val_loss"] is not None:
        print(f"val loss {result['val_loss']:.6f} (lowest {result['best_val_loss']:.6f} at epoch "
              f"{result['best_val_epoch']})")


def _count(value) -> int:
    return sum(_count(v) for v in value) if isinstance(value, list) else 1


def run(args: argparse.Namespace) -> int:
    from engine.fit.data import book_data, load_csv
    from engine.jobs import JobError

    if args.race and args.model != "linear":
        raise JobError("--race compares gd, momentum and Adam on the linear model; "
                       "leave out --model (or train the MLP without --race)")
    if args.race and args.optimizer is not None:
        raise JobError("--race runs gd, momentum and Adam side by side; leave out --optimizer")
    if args.model == "linear" and (args.hidden is not None or args.activation is not None):
        raise JobError("--hidden and --activation shape the MLP; the linear model w*x+b has "
                       "neither (add --model mlp)")
    if args.epochs < 1:
        raise JobError(f"--epochs must be at least 1, not {args.epochs}")
    if not 0 <= args.seed < 2**63:
        raise JobError(f"--seed must be between 0 and 2**63 - 1, not {args.seed}")

    if args.data is not None and not args.data.strip():
        raise JobError("--data is empty: give a CSV file of x,y rows, or leave --data out for "
                       "the book's thermometer readings")
    data = load_csv(args.data) if args.data else book_data()  # bad input fails before torch loads

    from engine.cli import StderrProgress, print_json
    from engine.devices import resolve_device
    from engine.fit.surface import race_job
    from engine.fit.trainer import fit_job
    from engine.jobs import JobContext

    device = resolve_device(args.device)
    config = {  # options left out are None: FitConfig's defaults
        "data": data, "model": args.model, "hidden": args.hidden, "activation": args.activation,
        "optimizer": args.optimizer, "lr": args.lr, "epochs": args.epochs,
        "input_scale": args.input_scale, "val_fraction": args.val_fraction, "seed": args.seed,
    }
    ctx = JobContext(device=device, progress=StderrProgress(_format_progress, quiet=args.quiet))
    # Ctrl-C ends the run after the current epoch and still reports what it has.
    previous = signal.signal(signal.SIGINT, lambda *_: ctx.request_stop())
    try:
        result = race_job(config, ctx) if args.race else fit_job(config, ctx)
    finally:
        signal.signal(signal.SIGINT, previous)

    if args.json:
        print_json(result)
    else:
        _print_summary(result)
    if result["status"] == "diverged":
        raise JobError(result["message"])
    if result["status"] == "stopped":
        print("stopped", file=sys.stderr)
        return 130
    return 0
