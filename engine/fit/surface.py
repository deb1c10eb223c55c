"""The linear model's loss over a grid of (w, b), and a race of optimizers across it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.fit.data import FitData
from engine.fit.trainer import FitConfig, FitSession, Update, join_tips, run_session
from engine.jobs import JobContext, JobError

if TYPE_CHECKING:
    import torch

RACERS = ("gd", "momentum", "adam")
START = (1.0, 0.0)  # where LinearModel starts, as in the book


def _moments(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """The points' means and centred second moments ``(mx, my, mean(u²), mean(uv), mean(v²))``
    with ``x = mx + u``, ``y = my + v``, in float64: all the squared error of a line needs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    u, v = x - mx, y - my
    return float(mx), float(my), float(np.mean(u * u)), float(np.mean(u * v)), \
        float(np.mean(v * v))


def _line_through(moments: tuple[float, ...], constant_x: bool) -> tuple[float, float]:
    """The least-squares (w, b) from :func:`_moments`; where every x is the same, the smallest
    of the lines through the points' mean (numpy's ``lstsq`` answer)."""
    mx, my, uu, uv, _ = moments
    if constant_x:
        return mx * my / (mx * mx + 1), my / (mx * mx + 1)
    w = uv / uu
    return w, my - w * mx


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The (w, b) minimising the mean squared error of ``w * x + b``: from the data's moments,
    one pass over the points (``np.linalg.lstsq`` on 2M points took ~0.1 s)."""
    return _line_through(_moments(x, y), bool(np.ptp(x) == 0) if len(x) else True)


def _bounds_around(optimum: tuple[float, float], start: tuple[float, float],
                   margin: float) -> tuple[float, float, float, float]:
    bounds = []
    for a, c in zip(start, optimum, strict=True):
        lo, hi = min(a, c), max(a, c)
        pad = margin * (hi - lo) + 0.5
        bounds += [lo - pad, hi + pad]
    return bounds[0], bounds[1], bounds[2], bounds[3]


def surface_bounds(x: np.ndarray, y: np.ndarray, start: tuple[float, float] = START,
                   margin: float = 0.6) -> tuple[float, float, float, float]:
    """A (w_lo, w_hi, b_lo, b_hi) box holding the start, the optimum and room around them."""
    return _bounds_around(least_squares(x, y), start, margin)


def loss_surface(x: np.ndarray, y: np.ndarray,
                 bounds: tuple[float, float, float, float] | None = None,
                 resolution: int = 121) -> dict[str, Any]:
    """Mean squared error of ``w * x + b`` on a ``resolution``² grid; ``loss[i, j]`` is at
    ``(w[i], b[j])``, over ``bounds`` (by default :func:`surface_bounds`'). Plain numpy,
    float64; time and memory grow with the grid, not the data.

    With the data centred (``x = mx + u``, ``y = my + v``) the error is
    ``mean((w·u - v)²) + (w·mx + b - my)²`` and the first term is
    ``w²·mean(u²) - 2w·mean(uv) + mean(v²)``: five sums instead of a pass per grid point."""
    moments = _moments(x, y)
    mx, my, uu, uv, vv = moments
    w_opt, b_opt = _line_through(moments, bool(np.ptp(x) == 0) if len(x) else True)
    if bounds is None:
        bounds = _bounds_around((w_opt, b_opt), START, 0.6)
    w = np.linspace(bounds[0], bounds[1], resolution)
    b = np.linspace(bounds[2], bounds[3], resolution)

    def loss_at(w: np.ndarray, b: np.ndarray) -> np.ndarray:
        spread = np.maximum(w * w * uu - 2 * w * uv + vv, 0.0)  # rounding must not go below 0
        return spread[:, None] + (w[:, None] * mx + b[None, :] - my) ** 2

    best = float(loss_at(np.array([w_opt]), np.array([b_opt]))[0, 0])
    return {"w": w, "b": b, "loss": loss_at(w, b),
            "optimum": {"w": w_opt, "b": b_opt, "loss": best}}


def session_surface(session: FitSession, resolution: int = 121) -> dict[str, Any]:
    """The loss surface of a linear session's training data (in its scaled input units)."""
    if not session.is_linear:
        raise JobError("the loss surface is drawn for the linear model only")
    x = session.x_train.detach().cpu().numpy()
    y = session.y_train.detach().cpu().numpy()
    return loss_surface(x, y, None, resolution)


class RaceSession:
    """Gradient descent, momentum and Adam from the same start on the same data, epoch by epoch.

    Every racer uses the same learning rate; a racer that diverges drops out, the others go on.
    """

    def __init__(self, config: FitConfig, data: FitData | None = None, device: str = "cpu",
                 racers: tuple[str, ...] = RACERS) -> None:
        base = replace(config, model="linear")
        self.config = base
        self.sessions = {name: FitSession(replace(base, optimizer=name), data, device)
                         for name in racers}
        self.epoch = 0
        self.status = "ready"

    @property
    def remaining_epochs(self) -> int:
        return max(self.config.epochs - self.epoch, 0)

    @property
    def device(self) -> torch.device:
        """The device the race trains on (see :meth:`FitSession.move_to`)."""
        return next(iter(self.sessions.values())).device

    def move_to(self, device: str | None = None) -> None:
        for session in self.sessions.values():
            session.move_to(device)

    def surface(self, resolution: int = 121) -> dict[str, Any]:
        return session_surface(next(iter(self.sessions.values())), resolution)

    def step(self, n_epochs: int = 1, on_epoch: Callable[[Update], Any] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Update:
        """Advance every racer still in the race by up to ``n_epochs`` epochs.

        ``on_epoch`` gets ``{"kind": "race", "epoch", "racers": {name: {train_loss, w, b}}}``
        (and ``val_loss`` with a validation split) with only the racers that ran that epoch,
        plus ``diverged: {name: message}`` the epoch a racer drops out.
        """
        update: Update = {}
        self.status = "running"
        stopped = False
        for _ in range(n_epochs):
            if should_stop is not None and should_stop():
                stopped = True
                break
            alive = {n: s for n, s in self.sessions.items() if s.status != "diverged"}
            if not alive:
                break
            racers: dict[str, Update] = {}
            diverged: dict[str, str] = {}
            for name, session in alive.items():
                last = session.step(1)
                if session.status == "diverged":
                    diverged[name] = session.message
                else:
                    racers[name] = {"train_loss": last["train_loss"], "w": last["w"],
                                    "b": last["b"]}
                    if "val_loss" in last:
                        racers[name]["val_loss"] = last["val_loss"]
            self.epoch += 1
            update = {"kind": "race", "epoch": self.epoch, "racers": racers}
            if diverged:
                update["diverged"] = diverged
            if on_epoch is not None:
                on_epoch(update)
        if stopped:
            self.status = "stopped"
        elif all(s.status == "diverged" for s in self.sessions.values()):
            self.status = "diverged"
        else:
            self.status = "done" if self.epoch >= self.config.epochs else "paused"
        return update

    def result(self) -> dict[str, Any]:
        racers = {name: s.result() for name, s in self.sessions.items()}
        finished = {n: r["train_loss"] for n, r in racers.items() if r["train_loss"] is not None
                    and r["status"] != "diverged"}
        leader = min(finished, key=finished.get) if finished else None
        return {"status": self.status, "message": self._message(), "epochs": self.epoch,
                "racers": racers, "leader": leader, "config": self.config.to_dict()}

    def _message(self) -> str:
        """Why the race failed when every racer diverged; "" otherwise."""
        if self.status != "diverged":
            return ""
        first = next(iter(self.sessions.values()))
        if first.starts_non_finite:
            return first.message  # the data, the same for every racer
        return "Every optimizer in the race diverged." + \
            join_tips(first.step_size_tips(suggest_adam=False))


def race_job(config: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Race the optimizers; ``config`` as for :func:`engine.fit.trainer.fit_job` (``session`` is
    a RaceSession to continue, ``run_epochs`` limits this run)."""
    return run_session(config, ctx, RaceSession)


def log_loss(loss: np.ndarray) -> np.ndarray:
    """log10 of a loss grid, for contours that show the valley as well as the walls."""
    return np.log10(np.maximum(loss, np.finfo(np.float64).tiny))


def contour_segments(values: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                     levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lines where ``values`` (``values[i, j]`` at ``(xs[i], ys[j])``) crosses each level,
    by marching squares in numpy: x and y of segment ends, two points per segment (for a
    ``connect="pairs"`` curve). Crossings are linearly interpolated along the grid's edges."""
    values = np.asarray(values, dtype=np.float64)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64).ravel()
    above = values > levels[:, None, None]
    # a cell's corners: a (i, j), b (i+1, j), c (i+1, j+1), d (i, j+1)
    corners = (above[:, :-1, :-1], above[:, 1:, :-1], above[:, 1:, 1:], above[:, :-1, 1:])
    case = sum(corner.astype(np.uint8) << bit for bit, corner in enumerate(corners))
    k, i, j = np.nonzero((case != 0) & (case != 15))  # only the cells a contour crosses
    level = levels[k]
    va, vb, vc, vd = values[i, j], values[i + 1, j], values[i + 1, j + 1], values[i, j + 1]
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[j], ys[j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):  # edges not crossed are not used
        # the crossing on each edge: bottom (a-b), right (b-c), top (d-c), left (a-d)
        edge_x = np.stack([x0 + (level - va) / (vb - va) * (x1 - x0), x1,
                           x0 + (level - vd) / (vc - vd) * (x1 - x0), x0], axis=1)
        edge_y = np.stack([y0, y0 + (level - vb) / (vc - vb) * (y1 - y0), y1,
                           y0 + (level - va) / (vd - va) * (y1 - y0)], axis=1)
    a, b, c, d = (corner[k, i, j] for corner in corners)
    crossed = np.stack([a != b, b != c, d != c, a != d], axis=1)
    single = crossed.sum(axis=1) == 2  # one segment joins the cell's two crossed edges
    flags = crossed[single]
    ends = [(single, np.argmax(flags, axis=1), 3 - np.argmax(flags[:, ::-1], axis=1))]
    saddle = ~single  # four crossings: two segments, cutting off the corners unlike the centre
    if saddle.any():
        centre = (va + vb + vc + vd)[saddle] / 4 > level[saddle]
        joined = centre == a[saddle]  # a and c joined: cut off b and d
        ends += [(saddle, np.where(joined, 0, 3), np.where(joined, 1, 0)),
                 (saddle, np.where(joined, 2, 1), np.where(joined, 3, 2))]
    out_x, out_y = [], []
    for cells, start, end in ends:
        cell_x, cell_y, rows = edge_x[cells], edge_y[cells], np.arange(len(start))
        out_x.append(np.stack([cell_x[rows, start], cell_x[rows, end]], axis=1).ravel())
        out_y.append(np.stack([cell_y[rows, start], cell_y[rows, end]], axis=1).ravel())
    return np.concatenate(out_x), np.concatenate(out_y)
