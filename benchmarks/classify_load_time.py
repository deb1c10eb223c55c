"""A torchvision model's load, stage by stage: what the Classify tab's panel shows while it loads.

Saves random weights for ``--arch`` (default ViT-B/16; ViT-L/16's 1.2 GB is the slow case)
under torchvision's file name in a temporary ``TORCH_HOME`` (marked as checked, so no download
or hash), then loads it ``--repeats`` times as a Classify job does (each stage, then the warm-up)
and prints each stage's seconds, best of the repeats. No network needed.
``python benchmarks/classify_load_time.py [--arch vit_l_16] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _stage_marker(marks: list[tuple[str, float]]):
    def mark(update: dict) -> None:
        if update["event"] == "loading":
            marks.append((update["stage"], time.perf_counter()))
    return mark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b_16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["TORCH_HOME"] = str(Path(home) / "torch-home")
        os.environ["TORCHDESK_CACHE_DIR"] = str(Path(home) / "cache")
        import torch
        from torchvision import models

        from engine.classify import jobs, weights
        from engine.jobs import JobContext

        url = models.get_model_weights(args.arch).DEFAULT.url
        copy = weights.checkpoint_dir() / weights.file_name(url)
        copy.parent.mkdir(parents=True)
        torch.save(models.get_model(args.arch, weights=None).state_dict(), copy)
        weights._remember_verified(copy)
        print(f"{args.arch}: {copy.stat().st_size / 1024 / 1024:.1f} MB of random weights")

        best: dict[str, float] = {}
        for _ in range(args.repeats):
            jobs.forget_cached_model()
            marks: list[tuple[str, float]] = []  # (stage, when it began)
            ctx = JobContext()
            ctx._progress = _stage_marker(marks)
            started = time.perf_counter()
            jobs.load_model_job({"model": args.arch}, ctx)
            marks.append(("end", time.perf_counter()))
            times = {stage: after - at
                     for (stage, at), (_, after) in zip(marks, marks[1:], strict=False)}
            times["total"] = marks[-1][1] - started
            for stage, seconds in times.items():
                best[stage] = min(best.get(stage, seconds), seconds)
        print("best of", args.repeats, "·", " · ".join(f"{s} {t:.2f} s" for s, t in best.items()))


if __name__ == "__main__":
    main()
