"""One dropped photo, once the model is loaded: time from file path to top-5 (what the GUI shows).

Loads EfficientNet-Lite0 (the offline default) on the CPU, warms up once, then classifies the
book's bobby.jpg (1280×720) ``--repeats`` times through ``Classifier.classify_file`` (decode,
preprocess, thumbnail, inference, top-5) and prints the median and the worst time, plus Grad-CAM.
``python benchmarks/classify_latency.py [--repeats 20]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHOTO = ROOT.parent / "shared" / "data" / "images" / "bobby.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice, one per core)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from engine.classify.classifier import Classifier
    from engine.classify.zoo import load_model

    started = time.perf_counter()
    classifier = Classifier(load_model("efficientnet_lite0", "cpu"))
    print(f"model load {time.perf_counter() - started:.2f} s; torch threads "
          f"{torch.get_num_threads()}")
    classifier.classify_file(str(args.photo))  # warm-up (oneDNN picks its kernels)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        result = classifier.classify_file(str(args.photo))
        times.append(time.perf_counter() - t)
    print(f"{args.photo.name}: {result.top[0]['label']} {result.top[0]['prob']:.1%}; "
          f"median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
          f"over {args.repeats} runs (target: 150 ms)")
    crop = result.net_view
    classifier.grad_cam(crop, result.top[0]["index"])
    t = time.perf_counter()
    classifier.grad_cam(crop, result.top[0]["index"])
    print(f"Grad-CAM (after the result is shown): {(time.perf_counter() - t) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
