"""Linear fit speed: the engine (live update every epoch) vs the book's plain training loop.

Both run the book's 5000 epochs of gradient descent (lr 1e-2, t_un = 0.1 * t_u) in the same process,
interleaved, several times; the best time of each is compared (the fairest figure on a busy CPU).
The engine's progress callback does what the GUI bridge does: append each update under a lock.

    python benchmarks/fit_speed.py [--repeats 7] [--epochs 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.fit.data import BOOK_T_C, BOOK_T_U  # noqa: E402
from engine.fit.trainer import fit_job  # noqa: E402
from engine.jobs import JobContext  # noqa: E402


def book_model(t_u, w, b):
    return w * t_u + b


def book_loss_fn(t_p, t_c):
    squared_diffs = (t_p - t_c) ** 2
    return squared_diffs.mean()


def book_training_loop(n_epochs, learning_rate, params, t_u, t_c):
    """Chapter 5's loop, verbatim apart from the print every 500 epochs."""
    for epoch in range(1, n_epochs + 1):  # noqa: B007
        if params.grad is not None:
            params.grad.zero_()
        t_p = book_model(t_u, *params)
        loss = book_loss_fn(t_p, t_c)
        loss.backward()
        with torch.no_grad():
            params -= learning_rate * params.grad
    return params


def time_book(epochs: int) -> tuple[float, list[float]]:
    t_c = torch.tensor(BOOK_T_C)
    t_un = 0.1 * torch.tensor(BOOK_T_U)
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    start = time.perf_counter()
    book_training_loop(epochs, 1e-2, params, t_un, t_c)
    return time.perf_counter() - start, params.detach().tolist()


def time_engine(epochs: int) -> tuple[float, list[float], int]:
    lock = threading.Lock()
    updates: list[dict] = []

    def collect(update: dict) -> None:  # what gui.bridge.JobRunner does with each update
        with lock:
            updates.append(update)

    ctx = JobContext(device="cpu", progress=collect)
    config = {"model": "linear", "optimizer": "gd", "lr": 1e-2, "epochs": epochs,
              "input_scale": 0.1}
    start = time.perf_counter()
    result = fit_job(config, ctx)
    elapsed = time.perf_counter() - start
    return elapsed, [result["params"]["w"], result["params"]["b"]], len(updates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=5000)
    args = parser.parse_args()

    time_book(200), time_engine(200)  # warm up allocator and autograd
    book_times, engine_times = [], []
    for _ in range(args.repeats):
        t, book_params = time_book(args.epochs)
        book_times.append(t)
        t, engine_params, n_updates = time_engine(args.epochs)
        engine_times.append(t)
    book_best, engine_best = min(book_times), min(engine_times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.epochs} epochs, best of {args.repeats}")
    print(f"book loop:              {book_best:.3f} s (median {statistics.median(book_times):.3f})"
          f"  w, b = {book_params[0]:.4f}, {book_params[1]:.4f}")
    print(f"engine + live updates:  {engine_best:.3f} s (median "
          f"{statistics.median(engine_times):.3f})  w, b = {engine_params[0]:.4f}, "
          f"{engine_params[1]:.4f}  ({n_updates} updates)")
    ratio = engine_best / book_best
    print(f"engine / book: {ratio:.2f}  ({'as fast or faster' if ratio <= 1 else 'SLOWER'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
