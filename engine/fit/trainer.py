"""Training for the Linear-fit tab and CLI: a steppable :class:`FitSession` and the job around it.

The GUI drives a session for Play/Pause/Step/Reset (it hands the session to :func:`fit_job` in
``config["session"]``); the CLI lets the job build one from plain settings. Per-epoch updates carry
plain floats only, and the hot loop reads each tensor it reports exactly once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.devices import resolve_device
from engine.fit.choices import INPUT_SCALE_RANGE, LR_RANGE, OPTIMIZERS
from engine.fit.data import FLOAT32_MAX, FitData, book_data, split_index_arrays
from engine.fit.models import ACTIVATIONS, DEFAULT_HIDDEN, MODELS, make_model
from engine.jobs import JobContext, JobError

MOMENTUM = 0.9
# A loss this many times the first epoch's loss (and above 1) means the run is exploding.
EXPLODE_FACTOR = 1e6
END_GROWTH_FACTOR = 10.0  # a run ending with its loss this many times the first epoch's diverged
SNAPSHOT_INTERVAL_S = 1 / 30
CURVE_POINTS = 200

Update = dict[str, Any]
Callback = Callable[[Update], Any]


@dataclass(frozen=True)
class FitConfig:
    """Plain settings of one fit; the defaults reproduce the book's gradient-descent run."""

    model: str = "linear"
    hidden: int = DEFAULT_HIDDEN
    activation: str = "tanh"
    optimizer: str = "gd"
    lr: float = 1e-2
    epochs: int = 5000
    input_scale: float = 0.1
    val_fraction: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        """Build from a dict (unknown keys ignored), checking every value; raises JobError."""
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known and v is not None}
        try:
            config = cls(**kwargs)
            config = cls(
                model=str(config.model), hidden=int(config.hidden),
                activation=str(config.activation), optimizer=str(config.optimizer),
                lr=float(config.lr), epochs=int(config.epochs),
                input_scale=float(config.input_scale), val_fraction=float(config.val_fraction),
                seed=int(config.seed),
            )
        except (TypeError, ValueError) as exc:
            raise JobError(f"bad fit settings: {exc}") from None
        config.validate()
        return config

    def validate(self) -> None:
        if self.model not in MODELS:
            raise JobError(f"unknown model '{self.model}'; choose one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise JobError(
                f"unknown optimizer '{self.optimizer}'; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.activation not in ACTIVATIONS:
            raise JobError(
                f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise JobError(f"learning rate must be a positive number, got {self.lr:g}")
        if self.epochs < 0:
            raise JobError(f"epochs must be 0 or more, got {self.epochs}")
        if not (math.isfinite(self.input_scale) and self.input_scale != 0):
            raise JobError(f"input scale must be a non-zero number, got {self.input_scale:g}")
        if self.model == "mlp" and not 1 <= self.hidden <= 4096:
            raise JobError(f"hidden size must be between 1 and 4096, got {self.hidden}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise JobError(f"validation fraction must be in [0, 1), got {self.val_fraction:g}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _within(value: float, bounds: tuple[float, float]) -> float | None:
    """``value`` rounded as a message shows it (``:g``), or None when its size lies outside
    ``bounds`` (the size: the CLI also takes negative input scales)."""
    shown = float(f"{value:g}")
    return shown if bounds[0] <= abs(shown) <= bounds[1] else None


def join_tips(tips: list[str]) -> str:
    """The tips as a sentence to append: ' Try: a; b; or c.' ('' without tips)."""
    if not tips:
        return ""
    if len(tips) > 1:
        tips = [*tips[:-1], "or " + tips[-1]]
    return " Try: " + "; ".join(tips) + "."


class FitSession:
    """One model, its optimizer state and data, advanced epoch by epoch with :meth:`step`.

    Each epoch is one full-batch step (the book's training loop). Not thread-safe: one thread at a
    time may use a session (the GUI hands it to the worker and leaves it alone while it runs).
    """

    def __init__(self, config: FitConfig, data: FitData | None = None, device: str = "cpu") -> None:
        config.validate()
        self.config = config
        self.data = data if data is not None else book_data()
        # where it trains; until a job moves it there (see move_to) everything is on the CPU
        self.device = torch.device(resolve_device(device))
        self.placed_on: torch.device | None = None  # where move_to put it; None: not yet
        # int64 arrays, each in data order
        self.train_indices, self.val_indices = split_index_arrays(
            len(self.data), config.val_fraction, config.seed
        )
        # numpy, not torch, prepares the points: this runs on the GUI thread, where torch's
        # thread pool costs tens of ms per op on 100k points when the CPU is busy
        x_raw, y_raw = self.data.arrays
        with np.errstate(over="ignore"):  # an overflow is the error below
            # float32 like torch's ``scale * tensor`` (the book's t_un = 0.1 * t_u), bit for bit
            x_scaled = np.float32(config.input_scale) * x_raw.astype(np.float32)
        if not np.isfinite(x_scaled).all():
            raise JobError(f"input scale {config.input_scale:g} makes the inputs too large for "
                           f"float32 (x up to {np.abs(x_raw).max():g}); use a smaller scale")
        y_all = y_raw.astype(np.float32)
        self.is_linear = config.model == "linear"
        if not self.is_linear:
            x_scaled, y_all = x_scaled[:, None], y_all[:, None]
        if len(self.val_indices):
            train, val = self.train_indices, self.val_indices
        else:  # every point trains, in data order
            train, val = slice(None), slice(0, 0)
        tensors = [torch.from_numpy(np.ascontiguousarray(part))
                   for part in (x_scaled[train], y_all[train], x_scaled[val], y_all[val])]
        self.x_train, self.y_train, self.x_val, self.y_val = tensors

        self.model = make_model(config.model, config.hidden, config.activation, config.seed)
        self.params = [p for p in self.model.parameters()]
        self.optimizer: torch.optim.Optimizer | None = None  # made by move_to

        self.epoch = 0
        self.status = "ready"
        self.message = ""
        self.initial_loss: float | None = None
        self.last_update: Update = {}
        self.best_val_epoch: int | None = None
        self.best_val_loss: float | None = None
        self.last_grad_norm: float | None = None
        lo, hi = float(x_raw.min()), float(x_raw.max())
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        # the x the prediction is drawn over: the data's range and a margin, in float64, kept
        # within float32's range (x near 3.4e38 would overflow when padded)
        self.curve_range = (max(lo - pad, -FLOAT32_MAX), min(hi + pad, FLOAT32_MAX))
        self.curve_x = torch.linspace(*self.curve_range, CURVE_POINTS,
                                      dtype=torch.float64).tolist()

    def move_to(self, device: str | torch.device | None = None) -> None:
        """Put the data, model and optimizer state on ``device`` (by default :attr:`device`),
        which becomes the session's device; the first call makes the optimizer.

        The constructor leaves everything on the CPU and makes no optimizer: the GUI builds
        sessions on its own thread, where a GPU's first use would create its CUDA context
        (0.3 s to seconds) and torch.optim's first optimizer imports torch._dynamo (~2 s). A job
        calls this on its worker thread; :meth:`step` does too when nobody has.
        """
        if device is not None and str(device) != str(self.device):
            self.device = torch.device(resolve_device(str(device)))
        if self.placed_on == self.device:
            return
        self.x_train, self.y_train, self.x_val, self.y_val = (
            t.to(self.device) for t in (self.x_train, self.y_train, self.x_val, self.y_val))
        self.model.to(self.device)
        # .to may give the model new Parameter objects (it does for some devices): a new
        # optimizer over them, loaded with the old one's state, which casts each state tensor
        # (momentum, Adam's averages) to its parameter's device
        state = self.optimizer.state_dict() if self.optimizer is not None else None
        self.params = list(self.model.parameters())
        self.optimizer = self._make_optimizer()
        if state is not None:
            self.optimizer.load_state_dict(state)
        self.placed_on = self.device

    def _make_optimizer(self) -> torch.optim.Optimizer | None:
        name, lr = self.config.optimizer, self.config.lr
        if name == "gd":
            return None  # written out in the loop, as the book does
        if name == "sgd":
            return torch.optim.SGD(self.params, lr=lr)
        if name == "momentum":
            return torch.optim.SGD(self.params, lr=lr, momentum=MOMENTUM)
        return torch.optim.Adam(self.params, lr=lr)

    @property
    def has_validation(self) -> bool:
        return len(self.val_indices) > 0

    @property
    def remaining_epochs(self) -> int:
        return max(self.config.epochs - self.epoch, 0)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.params)

    def step(
        self,
        n_epochs: int = 1,
        on_epoch: Callback | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_snapshot: Callback | None = None,
    ) -> Update:
        """Run up to ``n_epochs`` epochs and return the last epoch's update.

        ``on_epoch`` gets one dict of plain floats per epoch: ``epoch``, ``train_loss`` (at the
        parameters the epoch started from, as the book prints it), ``val_loss`` (only with a
        validation split; at the parameters after the update, so each parameter set is measured
        once, whether the run pauses or not, and the lowest names the epoch to stop after) and
        for the linear model ``w``, ``b`` (after the update) and ``grad_w``, ``grad_b``.
        Updates hold no None or bools: PySide6 6.12's ``Signal(list)`` drops a reference to
        those singletons each time it carries one, which crashes Python.
        ``on_snapshot`` (MLP) gets the prediction curve at most 30 times a second and at the end.
        ``should_stop`` is polled every epoch. Afterwards :attr:`status` is "done", "paused"
        (epochs remain), "stopped" (asked to stop) or "diverged" (see :attr:`message`).
        """
        if self.status == "diverged" or n_epochs <= 0:
            return self.last_update
        self.move_to()
        self.status = "running"
        stopped = diverged = False
        # Locals keep the hot loop free of attribute look-ups.
        model, params, optimizer = self.model, self.params, self.optimizer
        has_val, is_linear = self.has_validation, self.is_linear
        if is_linear:
            w, b = model.w, model.b  # plain locals: nn.Module attribute look-ups are slow

            def forward(x: torch.Tensor) -> torch.Tensor:
                return w * x + b
        else:
            forward = model
        x_train, y_train, x_val, y_val = self.x_train, self.y_train, self.x_val, self.y_val
        lr = self.config.lr
        mse, no_grad = F.mse_loss, torch.no_grad
        if is_linear:
            w_view, b_view = w.detach(), b.detach()
        limit = self._explode_limit()
        epoch = self.epoch
        update: Update = self.last_update
        next_snapshot = time.monotonic() + SNAPSHOT_INTERVAL_S
        try:
            for _ in range(n_epochs):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                loss = mse(forward(x_train), y_train)
                loss.backward()
                if optimizer is None:
                    with no_grad():
                        for p in params:
                            p -= lr * p.grad
                else:
                    optimizer.step()
                if has_val:  # after the update: the parameters this epoch leaves
                    with no_grad():
                        val_loss = float(mse(forward(x_val), y_val))
                epoch += 1
                loss_value = loss.item()
                if is_linear:
                    update = {
                        "kind": "epoch", "epoch": epoch, "train_loss": loss_value,
                        "w": float(w_view), "b": float(b_view),
                        "grad_w": float(w.grad), "grad_b": float(b.grad),
                    }
                else:
                    update = {"kind": "epoch", "epoch": epoch, "train_loss": loss_value}
                if has_val:
                    update["val_loss"] = val_loss
                if limit is None:
                    self.initial_loss = loss_value
                    limit = self._explode_limit()
                if not loss_value < limit:  # also catches NaN
                    diverged = True
                    self.epoch = epoch
                    self.message = self._divergence_message(epoch, loss_value)
                    break
                if has_val and (self.best_val_loss is None or val_loss < self.best_val_loss):
                    self.best_val_loss, self.best_val_epoch = val_loss, epoch
                if on_epoch is not None:
                    on_epoch(update)
                if on_snapshot is not None and not is_linear:
                    now = time.monotonic()
                    if now >= next_snapshot:
                        next_snapshot = now + SNAPSHOT_INTERVAL_S
                        on_snapshot(self.snapshot(epoch))
                if optimizer is None:
                    for p in params:
                        p.grad = None
                else:
                    optimizer.zero_grad()
        finally:
            self.epoch = epoch
            self.last_update = update
        if diverged:
            self.status = "diverged"
            if on_epoch is not None:
                on_epoch({**update, "kind": "diverged", "message": self.message})
        elif stopped:
            self.status = "stopped"
        else:
            self.status = "done" if self.epoch >= self.config.epochs else "paused"
            if self.status == "done":
                self._check_end_loss(on_epoch)
                diverged = self.status == "diverged"
        if on_snapshot is not None and not is_linear and not diverged:
            on_snapshot(self.snapshot(self.epoch))
        return update

    def _check_end_loss(self, on_epoch: Callback | None) -> None:
        """A run that ends far above where it started diverged, even if no single epoch
        crossed the explosion limit (the loss after the last update counts too)."""
        final, _ = self.losses()
        start = self.initial_loss
        # a first guess already on the line has a loss near 0: growth is measured from a
        # loss that matters for this data (a thousandth of the targets' mean square)
        floor = 1e-3 * float(self.y_train.square().mean()) if self.y_train.numel() else 0.0
        if start is None or (final is not None
                             and final <= END_GROWTH_FACTOR * max(start, floor, 1e-12)):
            return
        self.status = "diverged"
        self.message = self._divergence_message(self.epoch, math.inf if final is None else final,
                                                after_update=True)
        if on_epoch is not None:
            on_epoch({**self.last_update, "kind": "diverged", "message": self.message})

    def _explode_limit(self) -> float | None:
        if self.initial_loss is None:
            return None
        if not math.isfinite(self.initial_loss):
            return -math.inf  # already broken at the first epoch
        return EXPLODE_FACTOR * max(self.initial_loss, 1.0)

    @property
    def starts_non_finite(self) -> bool:
        """Whether the loss was already inf or NaN at the starting parameters (before any
        update): the data's size, not the step size, broke the run."""
        return self.initial_loss is not None and not math.isfinite(self.initial_loss)

    def _divergence_message(self, epoch: int, loss_value: float,
                            after_update: bool = False) -> str:
        """Why the run diverged at ``epoch``; ``loss_value`` is measured before that epoch's
        update (as its ``train_loss``), or after it with ``after_update``."""
        if self.starts_non_finite:
            return self._data_too_large_message()
        if math.isnan(loss_value):
            what = "became NaN (not a number)"
        elif math.isinf(loss_value):
            what = "overflowed to infinity"
        else:
            what = f"exploded from {self.initial_loss:.4g} to {loss_value:.4g}"
        when = "after its update" if after_update else "before its update"
        return (
            f"Training diverged at epoch {epoch}: the loss {when} {what}. Learning rate"
            f" {self.config.lr:g} makes steps too big for this data, so each update overshoots"
            " further." + join_tips(self.step_size_tips(self.config.optimizer != "adam"))
        )

    def step_size_tips(self, suggest_adam: bool = True) -> list[str]:
        """What to change when the steps are too big, each value one the tab can hold."""
        tips = []
        lower_lr = _within(min(self.config.lr / 10, LR_RANGE[1]), LR_RANGE)
        if lower_lr is not None:
            tips.append(f"lower the learning rate (try {lower_lr:g})")
        # Adam's steps do not grow with the inputs' size
        if self.config.optimizer != "adam":
            tips += self._smaller_inputs_tips(book_hint=True)
        if suggest_adam:
            tips.append("use Adam, which adapts its step size")
        return tips

    def _smaller_inputs_tips(self, book_hint: bool = False) -> list[str]:
        """How to bring the model's inputs to at most 10: a smaller input scale, or (past the
        smallest scale the tab holds) smaller x in the data; [] when they already are."""
        largest_input = float(self.x_train.abs().max()) if self.x_train.numel() else 0.0
        if not 10 < largest_input < math.inf:
            return []
        exponent = math.ceil(math.log10(largest_input))
        scale = _within(self.config.input_scale * 10.0 ** -exponent, INPUT_SCALE_RANGE)
        if scale is not None:
            hint = ", like the book's t_un = 0.1 * t_u" if book_hint else ""
            return [f"scale the inputs down (input scale {scale:g}{hint})"]
        raw_x = largest_input / abs(self.config.input_scale)
        divisor = 10.0 ** math.floor(math.log10(raw_x))
        same_scale = float(f"{self.config.input_scale / divisor:g}")
        # the CLI takes any scale; the tab's box stops at INPUT_SCALE_RANGE
        return [f"divide x by {divisor:g} in the data (on the command line, --input-scale "
                f"{same_scale:g} does the same; the tab's Input scale goes down to "
                f"{INPUT_SCALE_RANGE[0]:g} only)"]

    def _data_too_large_message(self) -> str:
        n_points = max(len(self.train_indices), 1)
        # errors this large square (and sum over the points) past float32's largest number
        overflowing_error = math.sqrt(FLOAT32_MAX / n_points)
        largest_x = float(self.x_train.abs().max())
        largest_y = float(self.y_train.abs().max())
        x_large = largest_x > overflowing_error / 2
        y_large = largest_y > overflowing_error / 2
        if not (x_large or y_large):  # neither alone, so both together
            x_large = y_large = True
        tips = []
        if y_large and largest_y > 10:
            tips.append(f"divide y by {10.0 ** math.floor(math.log10(largest_y)):g} in the data")
        if x_large:
            tips += self._smaller_inputs_tips()
        what = "NaN" if math.isnan(self.initial_loss) else "infinite"
        return (
            f"Training cannot start: the loss is {what} at the starting parameters, before any"
            " update. These data are too large for a float32 squared error (squares overflow"
            " past 3.4e38)." + join_tips(tips)
        )

    def snapshot(self, epoch: int | None = None) -> Update:
        """The model's prediction over the data's x range (raw units) and parameter/gradient
        sizes, for drawing. Costs a forward pass, so it is sent throttled."""
        with torch.no_grad():
            prediction = self.predict(self.curve_x)
            param_norm = float(torch.sqrt(sum((p * p).sum() for p in self.params)))
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads:
                self.last_grad_norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
            grad_norm = self.last_grad_norm  # after a run the gradients are already cleared
        snapshot = {
            "kind": "snapshot", "epoch": self.epoch if epoch is None else epoch,
            "curve_x": self.curve_x, "curve_y": prediction, "param_norm": param_norm,
        }
        if grad_norm is not None:
            snapshot["grad_norm"] = grad_norm
        return snapshot

    def predict(self, xs: list[float]) -> list[float]:
        """The model's outputs for raw (unscaled) inputs ``xs``."""
        x = self.config.input_scale * torch.tensor(xs, dtype=torch.float32, device=self.placed_on)
        if not self.is_linear:
            x = x.unsqueeze(1)
        with torch.no_grad():
            return self.model(x).reshape(-1).tolist()

    def losses(self) -> tuple[float | None, float | None]:
        """(train, val) loss at the current parameters; None where absent or not finite."""
        with torch.no_grad():
            train = float(F.mse_loss(self.model(self.x_train), self.y_train))
            val = float(F.mse_loss(self.model(self.x_val), self.y_val)) if self.has_validation \
                else None
        return _finite_or_none(train), _finite_or_none(val)

    def param_dict(self) -> dict[str, Any]:
        """Parameters as plain numbers: ``{"w", "b"}`` for the linear model, lists for the MLP."""
        if self.is_linear:
            return {"w": _finite_or_none(self.model.w.item()),
                    "b": _finite_or_none(self.model.b.item())}
        out = {}
        for name, p in self.model.named_parameters():
            values = p.detach().cpu().tolist()
            out[name] = values
        return out

    def result(self) -> dict[str, Any]:
        """The job's return value: plain numbers only."""
        train_loss, val_loss = self.losses()
        return {
            "status": self.status,
            "message": self.message,
            "epochs": self.epoch,
            "params": self.param_dict(),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "best_val_epoch": self.best_val_epoch,
            "best_val_loss": self.best_val_loss,
            "n_train": len(self.train_indices),
            "n_val": len(self.val_indices),
            "config": self.config.to_dict(),
            "device": str(self.device),
        }


def data_from_config(config: dict[str, Any]) -> FitData:
    """The data a job config names: ``data`` (FitData or {"x", "y"}) or else the book's."""
    data = config.get("data")
    if data is None:
        return book_data()
    if isinstance(data, FitData):
        return data
    try:
        return FitData.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise JobError(f"bad data: {exc}") from None


def fit_job(config: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Train a model on points, reporting every epoch; see :class:`FitSession` for the updates.

    ``config``: the :class:`FitConfig` fields and ``data``, or ``session`` (a FitSession to
    continue). ``run_epochs`` limits this run (the GUI's Step); by default it runs to ``epochs``.
    Returns :meth:`FitSession.result`; a diverged run returns ``status: "diverged"`` and
    ``message`` rather than raising, so the caller keeps the numbers.
    """
    return run_session(config, ctx, FitSession, on_snapshot=ctx.report)


def run_session(config: dict[str, Any], ctx: JobContext, session_class: type,
                **step_options: Any) -> dict[str, Any]:
    """Continue ``config["session"]`` or start a ``session_class`` from ``config``, for
    ``run_epochs`` epochs (by default the rest); its result."""
    session = config.get("session")
    if session is None:
        session = session_class(FitConfig.from_dict(config), data_from_config(config),
                                ctx.device)
    session.move_to(ctx.device)  # here, on the job's thread (see FitSession.move_to)
    n_epochs = config.get("run_epochs")
    if n_epochs is None:
        n_epochs = session.remaining_epochs
    session.step(int(n_epochs), on_epoch=ctx.report, should_stop=ctx.stopped, **step_options)
    return session.result()
