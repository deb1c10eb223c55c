"""A GPU recipe's accuracy, measured on the CPU (its time needs the GPU).

    python benchmarks/cifar_gpu_recipe_on_cpu.py [--sweep benchmarks/cifar_gpu_sweep4.json
        --label "airbench94_muon replica 8ep"] [--seed 0] [--data PATH]

Trains the GPU-sized Fast net with the GPU recipe (plus one sweep entry's settings, if named),
in fp32 on the CPU, and prints one JSON line per epoch and one with the result. The GPU runs
bf16, so its accuracy may differ a little (the GPU default: 90.21% here, 90.34-90.38% on an
H100); this is for choosing what to time when a GPU is lent. About an hour per 8-epoch run on
the 2-core VM. Needs no Qt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def sweep_entry(path: Path, label: str) -> dict:
    entries = json.loads(path.read_text())
    for entry in entries:
        if entry["label"] == label:
            return entry["set"]
    labels = ", ".join(repr(entry["label"]) for entry in entries)
    raise SystemExit(f"error: no entry {label!r} in {path}; it has {labels}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, help="JSON list of {label, set}; without it, the "
                        "GPU default recipe as it is")
    parser.add_argument("--label", help="the sweep entry to add to the GPU recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if (args.sweep is None) != (args.label is None):
        parser.error("--sweep and --label go together")
    settings = sweep_entry(args.sweep, args.label) if args.sweep else {}
    label = args.label or "GPU default"

    from engine.imports import heavy_imports

    with heavy_imports():
        from engine.cifar.data import load_dataset
        from engine.cifar.fast import fast_defaults
        from engine.cifar.trainer import train_job
        from engine.jobs import JobContext

    config = {**fast_defaults("cuda"), **settings, "model": "fast", "precision": "fp32",
              "seed": args.seed, "dataset": load_dataset(str(args.data)), "data": str(args.data),
              "eval_every": 0}
    config["model_options"] = {"variant": "gpu", **settings.get("model_options", {})}

    def progress(update: dict) -> None:
        if update.get("phase") == "epoch":
            print(json.dumps({key: update.get(key) for key in
                              ("epoch", "train_loss", "train_acc", "test_acc", "time_s")}),
                  flush=True)

    result = train_job(config, JobContext("cpu", progress=progress))
    print(json.dumps({"label": label, "seed": args.seed, "test_acc": result["test_acc"],
                      "train_time_s": result["train_time_s"], "set": settings}), flush=True)


if __name__ == "__main__":
    main()
