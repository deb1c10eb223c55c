"""CIFAR-10 on the CPU: the Fast recipe (``python -m engine cifar train``) against the book's
plain training loop, on the same data in the same run.

The baseline is chapter 8's loop as the book writes it: the book's ``Net``, SGD lr 1e-2, batch
64, a ``DataLoader`` over normalized float tensors, 3 epochs, then the test accuracy. The Fast
recipe runs once per seed with its own defaults (``--precision``/``--epochs`` override them).
Printed: each run's test accuracy and training time, and the speed ratio: the time the plain
loop needs for its accuracy over the time the Fast recipe needs to pass that accuracy (read
from its per-epoch test accuracies).

    python benchmarks/cifar_cpu.py --data ../shared/data/cifar10-jpeg.tar.gz [--seeds 0,1,2]
        [--precision auto|fp32|bf16] [--epochs N] [--baseline-epochs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_book_loop(data_path: str, epochs: int) -> dict:
    """Chapter 8's training loop on all ten classes; timed from the first batch to the last."""
    import torch
    from torch import nn

    from engine.cifar.data import channel_stats, load_dataset
    from engine.cifar.models import Net

    data = load_dataset(data_path)
    mean, std = channel_stats(data.train_images)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def normalized(images):
        return (images.float() / 255 - mean_t) / std_t

    torch.manual_seed(0)
    train = torch.utils.data.TensorDataset(normalized(data.train_images), data.train_labels)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    model = Net(num_classes=data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _epoch in range(epochs):
        for imgs, labels in loader:
            loss = loss_fn(model(imgs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    train_time = time.perf_counter() - start
    with torch.no_grad():
        preds = torch.cat([model(x).argmax(1)
                           for x in normalized(data.test_images).split(1000)])
    return {"test_acc": float((preds == data.test_labels).double().mean()),
            "train_time_s": train_time, "epochs": epochs}


def fast_recipe(data_path: str, seed: int, precision: str | None, epochs: int | None) -> dict:
    args = [sys.executable, "-m", "engine", "cifar", "train", "--data", data_path,
            "--seed", str(seed), "--json", "--quiet"]
    if precision:
        args += ["--precision", precision]
    if epochs:
        args += ["--epochs", str(epochs)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the Fast recipe failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    return {key: result[key] for key in ("test_acc", "train_time_s", "epochs", "history",
                                         "precision", "params")}


def time_to_reach(history: list[dict], accuracy: float) -> float | None:
    """Training time at the end of the first epoch whose test accuracy passes ``accuracy``."""
    for row in history:
        if row.get("test_acc") is not None and row["test_acc"] >= accuracy:
            return row["time_s"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds for the Fast recipe")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--epochs", type=int, help="the Fast recipe's epochs (default: its own)")
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()
    data_path = str(Path(args.data).expanduser().resolve())

    import torch

    from engine.devices import cpu_has_native_bf16, list_devices

    machine = {"cpu": list_devices()[0].name, "arch": platform.machine(),
               "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
               "torch": torch.__version__}
    print(f"machine: {machine}", flush=True)
    baseline = plain_book_loop(data_path, args.baseline_epochs)
    print(f"plain book loop (Net, SGD 1e-2, batch 64): {baseline['test_acc']:.2%} after "
          f"{baseline['epochs']} epochs in {baseline['train_time_s']:.1f} s", flush=True)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run = fast_recipe(data_path, seed, args.precision, args.epochs)
        reach = time_to_reach(run["history"], baseline["test_acc"])
        run.update(seed=seed, time_to_baseline_acc_s=reach)
        runs.append(run)
        ratio = f"{baseline['train_time_s'] / reach:.1f}x" if reach else "never"
        print(f"Fast recipe seed {seed} ({run['precision']}, {run['epochs']} epochs): "
              f"{run['test_acc']:.2%} in {run['train_time_s']:.1f} s; passed the plain loop's "
              f"accuracy after {reach} s: speed ratio {ratio}", flush=True)
    accs = [r["test_acc"] for r in runs]
    times = [r["train_time_s"] for r in runs]
    print(f"Fast recipe over {len(runs)} seed(s): mean {statistics.mean(accs):.2%} "
          f"({min(accs):.2%}-{max(accs):.2%}), training {min(times):.1f}-{max(times):.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "baseline": baseline,
                                               "fast": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
