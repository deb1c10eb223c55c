"""Folder classification speed: ``python -m engine classify`` vs. a plain one-image-at-a-time loop.

Both use EfficientNet-Lite0 (the offline default) on the same folder of ~300 photos, on the same
machine, in the same run, one after the other. ``--photos derived`` (default): JPEGs derived from
the book's 5 images (random crops, flips, long side 500-2000 px; see classify_photos.py);
``--photos book``: the book's 5 images themselves, repeated (small photos: 0.07-1.8 MP).

* plain loop: PIL open → Resize(256) → CenterCrop(224) → ToTensor → Normalize → model(x[None])
  under ``torch.no_grad()`` with torch's default threads (one per core), timed over the loop only
  (its imports and model load are not counted: the strict comparison) and as a whole process;
* CLI: the whole process (interpreter start, imports, model load, all images, JSON output), with
  default settings (exact decoding) and with ``--decode fast``. One untimed CLI run first: the
  first run on a machine also scripts the model and caches it (~0.6 s more, once).

``python benchmarks/classify_speed.py [--photos derived|book] [--count N] [--rounds N] [--dir D]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from classify_photos import copy_book_photos, make_photos  # noqa: E402

PLAIN_LOOP = r"""
import json, sys, time
from pathlib import Path
import torch
from PIL import Image
from torchvision import transforms
from engine.classify.lite0 import load_lite0

paths = sorted(Path(sys.argv[1]).glob("*.jpg"))
model = load_lite0()
preprocess = transforms.Compose([
    transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
    transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
])
top1 = []
start = time.perf_counter()
cpu_start = time.process_time()
with torch.no_grad():
    for path in paths:
        x = preprocess(Image.open(path).convert("RGB"))
        top1.append(int(model(x.unsqueeze(0)).argmax()))
loop_seconds = time.perf_counter() - start
loop_cpu = time.process_time() - cpu_start
print(json.dumps({"loop_seconds": loop_seconds, "loop_cpu": loop_cpu, "count": len(paths),
                  "top1": top1,
                  "threads": torch.get_num_threads()}))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_plain_loop(folder: Path) -> dict:
    started, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run([sys.executable, "-c", PLAIN_LOOP, str(folder)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["process_seconds"] = time.perf_counter() - started
    result["process_cpu"] = _children_cpu() - cpu
    return result


def run_cli(folder: Path, extra: list[str]) -> dict:
    started, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run([sys.executable, "-m", "engine", "classify", str(folder), "--json",
                          "--top", "1", *extra], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"CLI failed: {out.stderr.strip()}")
    entries = json.loads(out.stdout)
    top1 = [e["top"][0]["index"] for e in entries if e["top"]]
    return {"process_seconds": seconds, "process_cpu": _children_cpu() - cpu,
            "count": len(entries), "top1": top1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--photos", choices=("derived", "book"), default="derived")
    parser.add_argument("--dir", type=Path, help="where the photos are made (a temp folder)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.gettempdir()) / f"torchdesk-classify-{args.photos}"
    if args.photos == "book":
        photos, what = copy_book_photos(folder, args.count), "the book's 5 images, repeated"
    else:
        photos, what = make_photos(folder, args.count), "derived from the book's 5 images"
    args.dir = folder
    sizes = sorted(p.stat().st_size for p in photos)
    print(f"{len(photos)} photos in {args.dir} ({what}; "
          f"median file {sizes[len(sizes) // 2] / 1e3:.0f} KB); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} before the run")
    first = run_cli(args.dir, [])
    print(f"untimed first CLI run (fills the script cache if empty): "
          f"{first['process_seconds']:.1f} s")
    ratios: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        plain = run_plain_loop(args.dir)
        cli = run_cli(args.dir, [])
        fast = run_cli(args.dir, ["--decode", "fast"])
        n = plain["count"]
        plain_rate = n / plain["loop_seconds"]
        print(f"round {round_index + 1}:")
        print(f"  plain loop        {plain_rate:6.1f} img/s  (loop only "
              f"{plain['loop_seconds']:.1f} s, {plain['loop_cpu']:.1f} s CPU; whole process "
              f"{plain['process_seconds']:.1f} s, {plain['process_cpu']:.1f} s CPU; "
              f"{plain['threads']} torch threads)")
        for name, res in (("CLI (default)", cli), ("CLI --decode fast", fast)):
            rate = res["count"] / res["process_seconds"]
            agree = sum(a == b for a, b in zip(plain["top1"], res["top1"], strict=False)) / n
            ratios.setdefault(name, []).append(plain["loop_seconds"] / res["process_seconds"])
            print(f"  {name:18s}{rate:6.1f} img/s  (whole process {res['process_seconds']:.1f} s, "
                  f"{res['process_cpu']:.1f} s CPU)  → "
                  f"{plain['loop_seconds'] / res['process_seconds']:.2f}x the plain loop alone, "
                  f"{plain['process_seconds'] / res['process_seconds']:.2f}x its whole process;"
                  f" same top-1 as the loop on {agree:.1%}")

    for name, values in ratios.items():
        values.sort()
        print(f"{name}: median {values[len(values) // 2]:.2f}x the plain loop alone "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)}; goal 2x)")


if __name__ == "__main__":
    main()
