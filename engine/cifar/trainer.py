"""The CIFAR training job: ``train_job(config, ctx) -> dict`` (see docs/ARCHITECTURE.md).

The hot path has no per-sample Python: the selected images live on the device as one uint8 tensor,
each batch is gathered, flipped and translated there with a single indexing op, then normalized.
Randomness is derived from (seed, epoch, rank), so a run resumed at an epoch boundary matches a
straight run bit for bit on the CPU; a mid-epoch checkpoint also stores the live RNG states.
Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel: every rank takes its
share of each epoch's permutation, the global batch size stays ``batch_size``, rank 0 evaluates,
reports and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.cifar import checkpoint as ckpt
from engine.cifar.data import (
    CifarData,
    all_one_colour,
    channel_sums,
    limit_split,
    load_dataset,
    load_reporter,
    select_classes,
    stats_from_sums,
)
from engine.cifar.fast import tta_views
from engine.cifar.models import MODELS, build_model, count_parameters
from engine.cifar.optim import MuonSGD
from engine.cifar.paths import same_path
from engine.devices import (
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    keep_freed_memory_for_reuse,
    resolve_device,
)
from engine.jobs import JobContext, JobError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "muon")
SCHEDULES = ("constant", "warmup_linear", "warmup_cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_TTA_LEVEL = 3  # see engine.cifar.fast.predict_with_tta
RUNAWAY_LOSS_FACTOR = 10.0  # an epoch's mean loss this many times a uniform guess's diverged
# Before any evaluation has been timed, one image's forward pass is taken to cost this share of
# a training step's time per image (forward, backward, update): measured 0.14 against 0.27 ms
# for the Fast CPU net in fp32 on a 2-core VM (a backward twice the forward would say a third).
FORWARD_SHARE_OF_A_STEP = 0.5

GENERIC_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 1e-2,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "schedule": "constant",
    "warmup": 0.1,
    "lr_start": 0.0,  # warm-up starts at this fraction of the peak lr ...
    "lr_end": 0.0,  # ... and the decay ends at this one
    "flip": False,
    "alternate_flip": False,
    "translate": 0,
    "tta_level": 0,
    "eval_every": 1,
    "lookahead": False,
    "whiten_bias_epochs": 0,
    # Fast net: the whitening bias learns at the BatchNorm biases' rate, fading linearly to 0
    # over whiten_bias_epochs (airbench94_muon); False: at lr, under the main schedule.
    "whiten_bias_fade": False,
    # optimizer "muon": the convolution filters' learning rate and momentum (the other
    # parameters use lr and momentum). 0.02 suits filters that keep their scale (the book's
    # nets); the Fast recipes, whose filters are renormalized every step, set their own.
    "muon_lr": 0.02,
    "muon_momentum": 0.6,
}

# Settings that are not hyperparameters: defaults here, never taken from FAST_DEFAULTS.
RUN_DEFAULTS: dict[str, Any] = {
    "data": None,
    "classes": None,
    "model": "fast",
    "seed": 0,
    "precision": "auto",
    "channels_last": None,  # None: on for GPUs, off for the CPU
    "compile": False,
    "checkpoint": None,
    "resume": None,
    "max_train": None,
    "max_test": None,
    "cache_dir": None,
    "check_md5": True,
    "eval_batch_size": 1000,
    "report_interval_s": 1 / 30,
    "warm_up": None,  # None: on GPUs/MPS, off on the CPU (see _warm_up)
    "augment_per": None,  # "batch" or "epoch"; None: epoch on GPUs/MPS, batch on the CPU
}

# Run settings the Fast recipe may also choose (its FAST_DEFAULTS wins over RUN_DEFAULTS).
RECIPE_RUN_KEYS = ("precision", "channels_last", "eval_batch_size")

# Keys whose checkpoint value must match what the user asks for when resuming.
RESUME_MUST_MATCH = ("model", "classes", "optimizer")

# Each optimizer's hyperparameters, which a resumed run may change (the checkpoint's optimizer
# state would otherwise bring back the old values: they live in its param groups).
_SGD_SETTINGS = ("lr", "momentum", "weight_decay")
OPTIMIZER_SETTINGS = {"sgd": _SGD_SETTINGS, "nesterov": _SGD_SETTINGS,
                      "adam": ("lr", "weight_decay"), "adamw": ("lr", "weight_decay"),
                      "muon": (*_SGD_SETTINGS, "muon_lr", "muon_momentum")}

# The learning-rate schedule's settings, which a resumed run may change too.
SCHEDULE_SETTINGS = ("schedule", "warmup", "lr_start", "lr_end")

# What a mid-epoch checkpoint's remaining steps depend on (see _check_mid_epoch_resume).
MID_EPOCH_KEYS = ("batch_size", "max_train", "seed")


class SettingError(JobError):
    """A setting the checks refuse. The message names it by its config ``key``; a front end
    that calls it otherwise (a CLI flag, a form label) shows ``naming(its name)``.

    ``whose`` says whose value it is, for the advice that ends the message: None (the value
    asked for), ``"checkpoint"`` (the resumed checkpoint's, not asked for: hand-edited) or
    ``"differs"`` (asked for, but a resume keeps the checkpoint's). Each front end may word
    that advice its own way (``naming``'s ``advice``); the default is the command line's."""

    CLI_ADVICE = {"checkpoint": " (the checkpoint's value; set {name} to replace it)",
                  "differs": "; leave {name} unset to resume it"}

    def __init__(self, key: str, problem: str, whose: str | None = None) -> None:
        self.key = key
        self.problem = problem  # "{name}" where the setting is named
        self.whose = whose
        super().__init__(self.naming(key))

    def naming(self, name: str, advice: dict[str, str] | None = None) -> str:
        """The message with the setting called ``name``, ending in ``advice[whose]``."""
        tail = (self.CLI_ADVICE if advice is None else advice).get(self.whose, "")
        return (self.problem + tail).replace("{name}", name)

    def as_dict(self) -> dict[str, str | None]:
        """Plain data (for another process), made back into the error by ``SettingError(**it)``."""
        return {"key": self.key, "problem": self.problem, "whose": self.whose}


def model_defaults(model: str, device_type: str = "cpu") -> dict[str, Any]:
    """Hyperparameter defaults for ``model`` on ``device_type``: the Fast recipe's own (its CPU or
    GPU recipe), else the generic ones. Includes ``model_options`` (e.g. Fast's variant)."""
    from engine.cifar.models import model_options

    defaults = dict(GENERIC_DEFAULTS)
    defaults["model_options"] = model_options(model, device_type) if model in MODELS else {}
    if model == "fast":
        from engine.cifar import fast

        fast_defaults = fast.fast_defaults(device_type)
        for key, value in fast_defaults.items():
            if key in defaults or key in RECIPE_RUN_KEYS:
                defaults[key] = value
        if fast_defaults.get("nesterov") and "optimizer" not in fast_defaults:
            defaults["optimizer"] = "nesterov"
    return defaults


def resolve_config(config: dict[str, Any], base: dict[str, Any] | None = None,
                   device_type: str = "cpu") -> dict[str, Any]:
    """Fill unset (None/missing) keys: from ``base`` (a checkpoint's config) when resuming, else
    from the model's defaults for ``device_type``; then check every value (JobError if bad)."""
    user = {k: v for k, v in config.items() if v is not None and k != "dataset"}
    if base is not None:
        for key in RESUME_MUST_MATCH:
            if key in user and _norm(user[key]) != _norm(base.get(key)):
                raise SettingError(key, (
                    f"the checkpoint was trained with {_shown(key, base.get(key))}, not "
                    f"{_shown(key, user[key], named=False)}"), whose="differs")
            # the checkpoint's spelling: a dataset may hold both "Cat" and "cat"
            user.pop(key, None)
        base = dict(base)
        for key in ("max_train", "max_test"):
            if base.get(key) == 0:  # older checkpoints stored 0 for "all"
                base[key] = None
        resolved = {**RUN_DEFAULTS, **base, **user}
        # A resumed run writes to the file it resumes (or the one asked for), never to the
        # path the first run happened to use.
        resolved["checkpoint"] = user.get("checkpoint") or config.get("resume")
    else:
        model = str(user.get("model", RUN_DEFAULTS["model"])).lower()
        if model not in MODELS:
            raise JobError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
        resolved = {**RUN_DEFAULTS, **model_defaults(model, device_type), **user, "model": model}
    resolved["resume"] = config.get("resume")
    try:
        _validate(resolved, has_dataset=config.get("dataset") is not None)
    except SettingError as exc:
        if base is not None and exc.key not in user:  # a hand-edited checkpoint
            raise SettingError(exc.key, exc.problem, whose="checkpoint") from None
        raise
    if user.get("warmup") and resolved["schedule"] == "constant":
        raise SettingError("warmup", "{name} applies to the warm-up schedules (warmup_linear, "
                           "warmup_cosine); the schedule here is constant: choose one of those, "
                           "or leave {name} unset")
    return resolved


def _shown(key: str, value, named: bool = True) -> str:
    if key == "classes":
        return "all classes" if not value else "classes " + ", ".join(map(str, value))
    return f"{key} {value!r}" if named else repr(value)


def _norm(value):
    if isinstance(value, (list, tuple)):
        return [str(v).lower() for v in value]
    return str(value).lower() if value is not None else None


def _between(low: float, high: float, low_open: bool = False) -> str:
    """A range in words: "from 0 to 1", "above 0 and at most 100"."""
    return f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"


def _brief(value) -> str:
    """``repr(value)``, but a huge int as "about 10**N" (its repr can be thousands of digits,
    and past 4300 Python refuses to write it)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"{'-' if value < 0 else ''}about 10**{int(math.log10(abs(value)))}"
    return repr(value)


def _validate(cfg: dict[str, Any], has_dataset: bool = False) -> None:
    def whole(key, low=1, high=None, allowed=None):
        """An int in [low, high]; ``allowed`` says the range in words (default: from it)."""
        allowed = allowed or (f"a whole number of at least {low}" if high is None
                              else f"a whole number {_between(low, high)}")
        raw = cfg[key]
        try:
            value = int(raw)
            if isinstance(raw, float) and raw != value:  # int(2.7) would quietly train 2
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise SettingError(key, f"{{name}} must be {allowed}, not {_brief(raw)}") from None
        if value < low or (high is not None and value > high):
            raise SettingError(key, f"{{name}} must be {allowed}, not {_brief(value)}")
        cfg[key] = value

    def number(key, low=0.0, high=math.inf, low_open=False):
        allowed = f"a number {_between(low, high, low_open)}"
        try:
            value = float(cfg[key])
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int like 10**400
            raise SettingError(key, f"{{name}} must be {allowed}, not {_brief(cfg[key])}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            raise SettingError(key, f"{{name}} must be {allowed}, not {value:g}")
        cfg[key] = value

    def one_of(key, allowed):
        cfg[key] = str(cfg[key]).lower()
        if cfg[key] not in allowed:
            raise SettingError(key, f"unknown {{name}} '{cfg[key]}'; choose one of: "
                                    f"{', '.join(allowed)}")

    for key in ("epochs", "batch_size", "eval_batch_size"):
        whole(key)
    number("lr", low_open=True, high=100)
    number("momentum", high=0.9999)
    number("weight_decay", high=10)
    number("label_smoothing", high=0.99)
    number("warmup", high=1.0)
    for key in ("muon_lr", "muon_momentum"):  # older checkpoints lack them
        cfg[key] = GENERIC_DEFAULTS[key] if cfg.get(key) is None else cfg[key]
    number("muon_lr", low_open=True, high=100)
    number("muon_momentum", low_open=True, high=0.9999)
    for key in ("lr_start", "lr_end"):  # older checkpoints lack them
        cfg[key] = cfg.get(key) or 0.0
        number(key, high=1.0)
    if cfg.get("augment_per") is not None:
        one_of("augment_per", ("batch", "epoch"))
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                         ("precision", PRECISIONS)):
        one_of(key, allowed)
    # checked with the rest (not when the optimizer is built, after the data has loaded)
    if cfg["optimizer"] == "nesterov" and cfg["momentum"] == 0:
        raise SettingError("momentum", "Nesterov SGD needs {name} above 0 (and at most 0.9999)")
    if cfg["optimizer"] == "muon" and not 0 < cfg["momentum"] < 1:
        raise SettingError("momentum", "the Muon optimizer needs {name} above 0 and below 1 "
                                       "for its SGD part")
    whole("translate", low=0, high=8, allowed="a whole number of pixels from 0 to 8")
    cfg["flip"] = bool(cfg["flip"])
    cfg["alternate_flip"] = bool(cfg.get("alternate_flip", False))  # older checkpoints lack it
    cfg["lookahead"] = bool(cfg.get("lookahead", False))
    cfg["whiten_bias_epochs"] = cfg.get("whiten_bias_epochs") or 0
    whole("whiten_bias_epochs", low=0, allowed="0 (always train it) or more")
    cfg["whiten_bias_fade"] = bool(cfg.get("whiten_bias_fade", False))  # older checkpoints lack it
    if cfg["whiten_bias_fade"] and cfg["whiten_bias_epochs"] == 0:
        raise JobError("whiten_bias_fade needs whiten_bias_epochs (the epochs to fade over)")
    for key in ("max_train", "max_test"):
        if cfg.get(key) is not None:
            whole(key)
    whole("seed", low=0, high=2**63 - 1, allowed="a whole number from 0 to 2**63 - 1")
    whole("tta_level", low=0, high=MAX_TTA_LEVEL,
          allowed=f"a whole number from 0 (off) to {MAX_TTA_LEVEL}")
    whole("eval_every", low=0, allowed="a whole number, 0 (only at the end) or more")
    if not cfg.get("data") and not has_dataset:
        raise JobError("no data given: pass the dataset folder or archive (--data PATH)")
    if cfg.get("classes") == [] and cfg.get("resume"):  # older checkpoints: [] meant all
        cfg["classes"] = None
    if isinstance(cfg.get("classes"), str):
        from engine.cifar.data import parse_classes

        cfg["classes"] = parse_classes(cfg["classes"])


# ----------------------------------------------------------------------------- device helpers


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that the clock read next covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain float32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        native_bf16 = cuda_has_native_bf16(device)
        if precision == "auto":
            return torch.bfloat16 if native_bf16 else torch.float16
        if precision == "bf16" and not native_bf16:
            major, minor = torch.cuda.get_device_capability(device)
            raise on_every_rank(JobError(
                f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has "
                "no bfloat16 arithmetic; use fp16 or fp32"))
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu":
        if precision == "fp16":
            raise JobError("fp16 is for GPUs; on the CPU use bf16 or fp32")
        if precision == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type == "mps":
        return None if precision == "auto" else (
            torch.bfloat16 if precision == "bf16" else torch.float16)
    return None


def _dist_env() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from torchrun's environment; (1, 0, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group (NCCL on GPUs, gloo on the CPU); returns
    (world_size, rank, device for this rank)."""
    world, rank, local_rank = _dist_env()
    if world <= 1:
        return 1, 0, resolve_device(device)  # a GPU gone since the menu listed it: a clear error
    import torch.distributed as dist

    if device.startswith("cuda"):
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if local_world > torch.cuda.device_count():  # the same message from every rank
            raise JobError(f"torchrun started {local_world} processes on this machine but only "
                           f"{torch.cuda.device_count()} GPUs are visible")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    else:
        raise JobError(f"multi-process training runs on CUDA GPUs or the CPU, not '{device}'")
    if not dist.is_initialized():
        # Rank 0 decodes the data while the others wait at a barrier: the first load of a
        # large image folder can take longer than the default 10-minute collective timeout.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return world, rank, device


# ----------------------------------------------------------------------------- augmentation


def augment_batch(images: torch.Tensor, rows_idx: torch.Tensor, flip: bool, translate: int,
                  generator: torch.Generator | None, flips: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Gather ``images[rows_idx]`` with random horizontal flips and ±``translate`` pixel shifts
    (reflect padding), all in one batched indexing op on the images' device. ``flips`` (bool, one
    per row) says which rows to mirror instead of drawing it at random."""
    if not flip and translate == 0:
        return images[rows_idx]
    device = images.device
    n = rows_idx.shape[0]
    size = images.shape[-1]
    ar = torch.arange(size, device=device)
    if translate:
        shifts = torch.randint(-translate, translate + 1, (2, n), device=device,
                               generator=generator)
        rows = ar[None, :] + shifts[0][:, None]
        cols = ar[None, :] + shifts[1][:, None]
        rows = rows.abs()
        rows = torch.where(rows >= size, 2 * (size - 1) - rows, rows)
        cols = cols.abs()
        cols = torch.where(cols >= size, 2 * (size - 1) - cols, cols)
    else:
        rows = ar.expand(n, size)
        cols = ar.expand(n, size)
    if flip:
        if flips is None:
            flips = torch.rand(n, device=device, generator=generator) < 0.5
        cols = torch.where(flips[:, None], size - 1 - cols, cols)
    channels = torch.arange(images.shape[1], device=device)
    return images[rows_idx[:, None, None, None], channels[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def alternating_flips(count: int, seed: int, device: torch.device) -> torch.Tensor:
    """One random bit per training image: epoch ``e`` mirrors image ``i`` when
    ``bits[i] ^ (e is odd)``, so every image is seen both ways round in any two epochs in a row
    (less repetition than flipping at random, which helps short runs)."""
    generator = torch.Generator().manual_seed(_epoch_seed(seed, 0, 0, salt=4))
    return (torch.rand(count, generator=generator) < 0.5).to(device)


class Lookahead:
    """Weight averaging that pulls the live weights back to the average every few steps.

    Every ``every`` steps the average moves towards the live weights by ``1 - decay`` and the
    live weights are set to it; ``decay`` grows from 0 to ``0.95**every`` as the cube of training
    progress, so early training is untouched and the last epochs are smoothed. BatchNorm running
    statistics are averaged too. At the end the model keeps the average.

    The first sync starts the average from the live weights (not from the untrained ones it was
    made with), and a run too short to sync at all keeps its live weights: short runs keep
    what they learned.
    """

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5) -> None:
        self.model, self.total_steps, self.every = model, max(1, total_steps), every
        self.average = {name: value.detach().clone()
                        for name, value in self._floating_state().items()}

    def _floating_state(self) -> dict[str, torch.Tensor]:
        return {name: value for name, value in self.model.state_dict().items()
                if value.is_floating_point()}

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        """Call after optimizer step number ``global_step`` (1-based, counted over all epochs)."""
        if global_step % self.every:
            return
        decay = 0.0 if global_step == self.every else (
            0.95**self.every * (global_step / self.total_steps) ** 3)
        self._sync(decay)

    @torch.no_grad()
    def finish(self) -> None:
        """Give the model the averaged weights (end of training)."""
        self._sync(0.0 if self.total_steps < self.every else 1.0)

    def _sync(self, decay: float) -> None:
        live = self._floating_state()
        averages = list(self.average.values())
        targets = [live[name] for name in self.average]
        # Multi-tensor ops: two kernel launches per sync on a GPU instead of two per tensor.
        torch._foreach_lerp_(averages, targets, 1.0 - decay)
        torch._foreach_copy_(targets, averages)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu() for name, value in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.average):
            raise JobError("the checkpoint's weight average does not fit this model")
        for name, value in state.items():
            self.average[name].copy_(value)


# ----------------------------------------------------------------------------- the job


class _Normalizer:
    def __init__(self, mean, std, device, channels_last):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = (images_uint8.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _warm_up(model, raw_model, optimizer, scaler, criterion, autocast, images, labels,
             steps: int = 3) -> None:
    """A few throwaway training steps, then every state put back exactly as it was.

    A GPU pays one-time costs on its first steps (kernel loading, cuDNN algorithm search,
    allocator growth, torch.compile), a large share of a training run that lasts seconds. Paying
    them before the clock starts makes ``train_time_s`` measure training, as airbench's timed runs
    do; the time spent is reported as ``warmup_time_s``.
    """
    device = images.device
    saved_model = copy.deepcopy(raw_model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_scaler = scaler.state_dict() if scaler.is_enabled() else None
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    model.train()
    for _ in range(steps):
        with autocast():
            loss = criterion(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    raw_model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)
    if saved_scaler is not None:
        scaler.load_state_dict(saved_scaler)
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    _synchronize(device)


def _set_whiten_bias_training(model: nn.Module, epochs: int, epoch: int,
                              distributed: bool) -> None:
    """Freeze the whitening layer's bias (Fast net) from epoch ``epochs`` on (0: never), as
    airbench does: after that the first block needs no input gradient (~10 ms of a ~180 ms step
    of the CPU net).
    Not under DistributedDataParallel, which expects the same trainable parameters throughout."""
    whiten = getattr(model, "whiten", None)
    if epochs <= 0 or distributed or whiten is None or whiten.bias is None:
        return
    whiten.bias.requires_grad_(epoch < epochs)


def _epoch_seed(seed: int, epoch: int, rank: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729 + salt) % (2**62)


def _make_schedule(optimizer, schedule: str, warmup: float, total_steps: int,
                   start: float = 0.0, end: float = 0.0, fade_steps: int = 0):
    """LambdaLR: ``constant``, or a linear warm-up from ``start`` (fraction of the peak lr) over
    the first ``warmup`` of the steps, then a linear or cosine decay to ``end``. Groups flagged
    ``"fade"`` instead go linearly from their lr to 0 over ``fade_steps``."""
    warmup_steps = int(round(warmup * total_steps)) if schedule != "constant" else 0

    def fade(step: int) -> float:
        return max(0.0, 1.0 - step / max(1, fade_steps))

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup_steps:
            return start + (1.0 - start) * ((step + 1) / warmup_steps)
        rest = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / rest)
        if schedule == "warmup_linear":
            return end + (1.0 - end) * (1.0 - t)
        return end + (1.0 - end) * (0.5 * (1.0 + math.cos(math.pi * t)))

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [fade if group.get("fade") else factor for group in optimizer.param_groups])


def _make_optimizer(model: nn.Module, cfg: dict[str, Any], device: torch.device
                    ) -> torch.optim.Optimizer:
    lr, wd = cfg["lr"], cfg["weight_decay"]
    hook = getattr(model, "optimizer_param_groups", None)
    options = {"whiten_bias_fade": True} if cfg.get("whiten_bias_fade") else {}
    params = hook(lr, wd, **options) if callable(hook) else model.parameters()
    name = cfg["optimizer"]
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd,
                               nesterov=name == "nesterov",
                               # CUDA: one fused kernel per step; with fp16 GradScaler then hands
                               # its overflow check to that kernel instead of reading it back
                               # every step (which would stall the CPU's run-ahead).
                               **({"fused": True} if device.type == "cuda" else {}))
    if name == "muon":
        return _make_muon(model, params, cfg)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _make_muon(model: nn.Module, params, cfg: dict[str, Any]) -> MuonSGD:
    """Muon for every trainable convolution filter bank (4-D weight), Nesterov SGD with ``lr``
    and ``momentum`` for the rest (keeping the model's own groups, e.g. Fast's bias groups).
    A model whose filters all feed BatchNorm (``scale_invariant_filters``) gets them rescaled to
    a fixed norm each step instead of weight decay, as airbench94_muon does."""
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    normalize = bool(getattr(model, "scale_invariant_filters", False))
    filters: list[torch.Tensor] = []
    others = []
    for group in groups:
        rest = [p for p in group["params"] if p.requires_grad and p.dim() != 4]
        filters += [p for p in group["params"] if p.requires_grad and p.dim() == 4]
        if rest:
            others.append({**group, "params": rest})
    muon_group = {"params": filters, "lr": cfg["muon_lr"], "momentum": cfg["muon_momentum"],
                  "orthogonalize": True, "normalize": normalize, "ns_steps": 3,
                  "weight_decay": 0.0 if normalize else cfg["weight_decay"]}
    # The filters' group goes last: progress reports show the first group's (``lr``) rate.
    return MuonSGD(others + ([muon_group] if filters else []), lr=cfg["lr"],
                   momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


def prepare_data(cfg: dict[str, Any], ctx: JobContext, dataset: CifarData | None = None
                 ) -> CifarData:
    """Load (or take) the dataset, then apply the class subset and size limits of ``cfg``."""

    if dataset is None:
        dataset = load_dataset(cfg["data"], report=load_reporter(ctx), stopped=ctx.stopped,
                               cache_dir=cfg.get("cache_dir"), check_md5=cfg["check_md5"])
    data = select_classes(dataset, cfg.get("classes"))
    data = limit_split(data, cfg.get("max_train"), cfg.get("max_test"), seed=cfg["seed"])
    if len(data.train_labels) < 2 or len(data.test_labels) < 1:
        raise JobError("the selected data has too few images to train and test on")
    return data


def train_job(config: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Train a CIFAR model; see the module docstring. Returns results as plain data."""
    wall_start = time.perf_counter()
    resume_blob, cfg = _checked_settings(config, ctx)
    world, rank, device_id = _init_distributed(ctx.device)
    # Only rank 0 writes. Checked once the ranks have met, so that when it fails the others
    # see it go at their next collective call instead of waiting for it to join.
    if cfg.get("checkpoint") and rank == 0:
        try:
            ckpt.check_writable(cfg["checkpoint"], data=cfg.get("data"))
        except JobError as exc:
            _leave_process_group(world)
            if config.get("resume") and not config.get("checkpoint"):
                raise JobError(f"{exc} (a resumed run writes to the checkpoint it resumes; to "
                               "write another file, headless: --checkpoint FILE)") from None
            raise
    # Every training batch has the same shape: let cuDNN time its algorithms once (during the
    # warm-up) and keep the fastest. Process-wide, so put back afterwards (Classify's batches vary).
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = autotune or device_id.startswith("cuda")
    try:
        return _train(cfg, ctx, config.get("dataset"), resume_blob, world, rank, device_id,
                      wall_start)
    finally:
        torch.backends.cudnn.benchmark = autotune
        _leave_process_group(world)


def _what_the_file_keeps(saved_at: tuple[int, int] | None) -> str:
    """Where the checkpoint file stands after a failed write (None: nothing of this run)."""
    if saved_at is None:
        return "before its first checkpoint was saved"
    epoch, step = saved_at
    inside = f" and {step} steps of epoch {epoch + 1}" if step else ""
    epochs = f"{epoch} finished epoch{'' if epoch == 1 else 's'}"
    return f"and the checkpoint keeps {epochs}{inside} (resume from it)"


def _what_the_file_holds(saved_at: tuple[int, int] | None) -> str:
    """A sentence on the checkpoint file when the finished model could not be written."""
    if saved_at is None:
        return "no checkpoint of this run was written"
    epoch, step = saved_at
    inside = f" and {step} steps of epoch {epoch + 1}" if step else ""
    return (f"the checkpoint holds its {epoch} finished epoch{'' if epoch == 1 else 's'}{inside} "
            "(resume from it to train and save the rest)")


def _leave_process_group(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def on_every_rank(exc: JobError) -> JobError:
    """Mark an error that every torchrun rank meets alike (so rank 0 alone reports it)."""
    exc.every_rank = True
    return exc


def _checked_settings(config: dict[str, Any], ctx: JobContext
                      ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The checkpoint to resume (or None) and the resolved, checked config.

    A JobError about the settings, or the checkpoint to resume, carries ``every_rank = True``:
    under torchrun every rank checks the same ones, so rank 0's message speaks for all (a rank
    that alone cannot read the file, on another machine, says so after a grace period)."""
    try:
        resume_blob = ckpt.load_checkpoint(config["resume"]) if config.get("resume") else None
    except JobError as exc:  # missing, a folder, unreadable: alike on every rank
        raise on_every_rank(exc) from None
    try:
        cfg = resolve_config(config, base=resume_blob["config"] if resume_blob else None,
                             device_type=str(ctx.device).split(":")[0])
        if resume_blob is not None:  # going on would save later weights under an earlier epoch
            trained, in_epoch = int(resume_blob["epoch"]), int(resume_blob.get("step", 0)) > 0
            if trained + in_epoch > cfg["epochs"]:
                raise JobError(f"the checkpoint has already trained {trained} epochs"
                               f"{' and part of the next' if in_epoch else ''}; resume it with "
                               f"at least {trained + in_epoch} epochs (asked for "
                               f"{cfg['epochs']})")
    except JobError as exc:
        raise on_every_rank(exc) from None
    _make_paths_absolute(cfg, from_checkpoint=resume_blob is not None and not config.get("data")
                         and config.get("dataset") is None)
    return resume_blob, cfg


def _make_paths_absolute(cfg: dict[str, Any], from_checkpoint: bool) -> None:
    """Make ``data``, ``checkpoint`` and ``cache_dir`` absolute (checkpoints store them, and a
    resume may start in another folder). ``from_checkpoint``: the data path came from the
    resumed checkpoint."""
    data = cfg.get("data")
    if from_checkpoint and isinstance(data, str) and not os.path.isabs(os.path.expanduser(data)):
        # older checkpoints kept the path as typed; it is often beside the checkpoint
        beside = Path(cfg["resume"]).expanduser().parent / data
        if not Path(data).exists() and beside.exists():
            cfg["data"] = str(beside)
    for key in ("data", "checkpoint", "cache_dir"):
        if isinstance(cfg.get(key), (str, Path)):
            cfg[key] = os.path.abspath(os.path.expanduser(cfg[key]))
    if from_checkpoint and not Path(cfg["data"]).exists():
        raise JobError(f"the data the checkpoint was trained on ('{cfg['data']}') is not there "
                       "any more; load it from its new place (headless: --data PATH)")


def _train(cfg, ctx, dataset, resume_blob, world, rank, device_id, wall_start):
    return _TrainingRun(cfg, ctx, world, rank, device_id, wall_start).run(dataset, resume_blob)


def _fresh_partial() -> dict[str, Any]:
    """An epoch's running totals before its first step."""
    return {"correct": 0, "seen": 0, "loss_sum": 0.0}


class _EpochOutcome:
    """What :meth:`_TrainingRun.train_one_epoch` leaves for the epoch's end."""

    __slots__ = ("stopped", "step", "time_s", "images")

    def __init__(self, stopped: bool, step: int, time_s: float, images: int) -> None:
        self.stopped = stopped  # a stop came before ``step`` was trained
        self.step = step
        self.time_s = time_s
        self.images = images  # trained in this session's share of the epoch, all ranks


class _TrainingRun:
    """One run of :func:`train_job`, laid out like torchvision's reference training script:
    the data and its normalization, the model with its optimizer and schedule, a resume,
    ``train_one_epoch``, ``evaluate``, the checkpoints and the result.

    Under torchrun every rank runs the same methods, so the collective calls (barriers,
    all-reduces, DDP's own) come in the same order on every rank; rank 0 alone evaluates,
    reports and writes."""

    def __init__(self, cfg: dict[str, Any], ctx: JobContext, world: int, rank: int,
                 device_id: str, wall_start: float) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.world, self.rank = world, rank
        self.device_id = device_id
        self.device = torch.device(device_id)
        self.is_main = rank == 0
        self.distributed = world > 1
        self.report = ctx.report if self.is_main else (lambda update: None)
        self.wall_start = wall_start
        if self.distributed:
            import torch.distributed as dist

            self.dist = dist
        # where training starts and what came before (a resume takes the checkpoint's)
        self.start_epoch, self.start_step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.partial = _fresh_partial()
        self.rng_state = None
        self.rng_ranks = None  # every rank's states, in checkpoints written under torchrun
        # (epoch, step) the checkpoint file holds, for the message when a later write fails
        self.saved_at: tuple[int, int] | None = None
        self.warmup_time = 0.0
        self.steps_done = 0  # this session
        # this session's evaluations between epochs: their time and images (the final
        # evaluation's estimate is taken from their pace)
        self.eval_time = 0.0
        self.eval_images = 0

    def run(self, dataset: CifarData | None, resume_blob: dict[str, Any] | None
            ) -> dict[str, Any]:
        self.load_data(dataset, resume_blob)
        self.build_model(from_scratch=resume_blob is None)
        self.build_schedule()
        if resume_blob is not None:
            self.restore(resume_blob)
            cfg = self.cfg
            if cfg.get("checkpoint") and same_path(cfg["checkpoint"], cfg["resume"]):
                self.saved_at = (self.start_epoch, self.start_step)
        self.wrap_model()
        self.warm_up()
        self.report_start()
        status = self.train()
        return self.finish(status)

    # ---- data

    def load_data(self, dataset: CifarData | None, resume_blob: dict[str, Any] | None) -> None:
        """The data on the device, with the mean and std it is normalized by (the
        checkpoint's when resuming). Rank 0 decodes first (filling the cache), then the others
        read the cache."""
        load_start = time.perf_counter()
        if self.distributed and not self.is_main:
            self.dist.barrier()
        data = prepare_data(self.cfg, self.ctx if self.is_main else JobContext(self.device_id),
                            dataset)
        if self.distributed and self.is_main:
            self.dist.barrier()
        self.mean, self.std = _normalization_stats(data, resume_blob)
        self.data = data
        self.train_x = data.train_images.to(self.device)
        self.train_y = data.train_labels.to(self.device)
        self.test_x = data.test_images.to(self.device)
        self.test_y = data.test_labels.to(self.device)
        self.load_time = time.perf_counter() - load_start
        self.report({"phase": "data", "class_names": data.class_names, "mean": self.mean,
                     "std": self.std, "train_images": len(self.train_y),
                     "test_images": len(self.test_y)})

    # ---- model, optimizer, schedule

    def build_model(self, from_scratch: bool) -> None:
        """The model (initialized from the seed; the Fast net's whitening from the training
        images unless a checkpoint brings its weights), its optimizer, and how inputs are
        prepared: precision, memory format, normalization, augmentation."""
        cfg, device = self.cfg, self.device
        if device.type == "cpu":
            keep_freed_memory_for_reuse()
        self.amp_dtype = autocast_dtype(device, cfg["precision"])
        channels_last = cfg["channels_last"]
        if channels_last is None:
            channels_last = device.type == "cuda"
        self.normalize = _Normalizer(self.mean, self.std, device, channels_last)
        # GPUs: augment and normalize a whole epoch in a few large ops, then every step is a
        # slice (airbench's approach; per batch it is ~20 small kernels a step). Stored in the
        # autocast dtype, which the first conv casts to anyway. The CPU keeps per-batch
        # augmentation.
        self.augment_per = cfg.get("augment_per") or ("batch" if device.type == "cpu"
                                                      else "epoch")
        self.input_dtype = (self.amp_dtype if self.augment_per == "epoch"
                            and self.amp_dtype is not None else None)
        torch.manual_seed(cfg["seed"])
        model = build_model(cfg["model"], self.data.num_classes,
                            self.train_x if from_scratch else None,
                            **(cfg.get("model_options") or {})).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.raw_model = self.model = model  # self.model: compiled and DDP-wrapped later
        self.params = count_parameters(model)
        self.optimizer = _make_optimizer(model, cfg, device)

    def build_schedule(self) -> None:
        """The batches (the global batch split over the ranks), the learning-rate schedule,
        the grad scaler (fp16), the weight average (lookahead) and the alternating flips."""
        cfg, world = self.cfg, self.world
        images = len(self.train_y)
        self.local_batch = max(1, min(cfg["batch_size"], images) // world)
        self.steps_per_epoch = max(1, images // (self.local_batch * world))
        self.total_steps = self.steps_per_epoch * cfg["epochs"]
        self.scheduler = _make_schedule(
            self.optimizer, cfg["schedule"], cfg["warmup"], self.total_steps, cfg["lr_start"],
            cfg["lr_end"], fade_steps=cfg["whiten_bias_epochs"] * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.lookahead = (Lookahead(self.raw_model, self.total_steps) if cfg["lookahead"]
                          else None)
        self.flip_bits = (alternating_flips(images, cfg["seed"], self.device)
                          if cfg["flip"] and cfg["alternate_flip"] else None)
        self.position = _epoch_position(self.steps_per_epoch, self.local_batch * world, images,
                                        cfg["seed"])

    def wrap_model(self) -> None:
        """Compile (when asked) and wrap for DistributedDataParallel (under torchrun); the
        loss, the sums' dtype and the augmentation's generator."""
        cfg, device = self.cfg, self.device
        if cfg["compile"]:
            try:
                self.model = torch.compile(self.model)
            except Exception as exc:
                raise JobError(f"torch.compile is not usable here: {exc}") from None
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
        self.sum_dtype = torch.float32 if device.type == "mps" else torch.float64  # no float64
        self.aug_gen = torch.Generator(device=device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # ---- resume

    def restore(self, blob: dict[str, Any]) -> None:
        """Continue from a checkpoint: its weights, optimizer, schedule, history and partial
        epoch, with the hyperparameters asked for now; notes (phase "resume") say what differs
        from a straight run."""
        cfg = self.cfg
        try:  # the same checkpoint and settings on every rank
            ckpt.load_model_state(self.raw_model, blob["model_state"], str(cfg["resume"]))
            if int(blob.get("step", 0)) > 0:
                _check_mid_epoch_resume(blob, cfg, self.position)
        except JobError as exc:
            raise on_every_rank(exc) from None
        was = {key: blob["config"].get(key, GENERIC_DEFAULTS.get(key))
               for key in (*OPTIMIZER_SETTINGS[cfg["optimizer"]], *SCHEDULE_SETTINGS)}
        asked = {key: (old, cfg[key]) for key, old in was.items() if old != cfg[key]}
        fresh_groups = [{k: v for k, v in g.items() if k != "params"}
                        for g in self.optimizer.param_groups]
        fresh_base_lrs = list(self.scheduler.base_lrs)
        self._load_training_state(blob)
        self.start_epoch = int(blob["epoch"])
        self.start_step = int(blob.get("step", 0))
        if asked:
            _use_new_hyperparameters(self.optimizer, self.scheduler, fresh_groups,
                                     fresh_base_lrs)
            self.report({"phase": "resume", "message": "from here on: " + ", ".join(
                f"{key.replace('_', ' ')} {old} -> {new}" for key, (old, new) in asked.items())})
        self._continue_schedule()
        self.history = list(blob.get("history") or [])
        self.train_time = float(blob.get("train_time_s", 0.0))
        if self.rank == 0:  # a checkpoint's partial epoch totals are over all ranks
            self.partial = dict(blob.get("partial") or self.partial)
        self.rng_state = blob.get("rng")
        self.rng_ranks = blob.get("rng_ranks")
        self._report_resume_notes(int(blob["config"].get("epochs") or cfg["epochs"]))

    def _load_training_state(self, blob: dict[str, Any]) -> None:
        """The optimizer's, schedule's, grad scaler's and weight average's states."""
        optimizer = self.optimizer
        try:
            # A checkpoint from another device carries that device's kernel choice (fused SGD
            # on CUDA): keep this device's.
            kernels = [{k: g[k] for k in ("fused", "foreach") if k in g}
                       for g in optimizer.param_groups]
            optimizer.load_state_dict(blob["optimizer_state"])
            for group, choice in zip(optimizer.param_groups, kernels, strict=True):
                group.update(choice)
            self.scheduler.load_state_dict(blob["scheduler_state"])
            if blob.get("scaler_state"):
                self.scaler.load_state_dict(blob["scaler_state"])
            if self.lookahead is not None and blob.get("lookahead_state") is not None:
                self.lookahead.load_state_dict(blob["lookahead_state"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise on_every_rank(JobError(
                f"the optimizer state in the checkpoint does not fit: {exc}")) from None
        except JobError as exc:  # the weight average's
            raise on_every_rank(exc) from None

    def _continue_schedule(self) -> None:
        """Put the schedule at the resumed step, at its rates as it is now (its settings or
        length may have changed: the checkpoint's rates would drive the first step; the same
        numbers when nothing changed)."""
        at = self.start_epoch * self.steps_per_epoch + self.start_step
        moved = self.scheduler.last_epoch != at  # other batches per epoch (batch size, images)
        _set_schedule_position(self.optimizer, self.scheduler, at)
        if moved:
            self.report({"phase": "resume", "message": (
                f"an epoch is now {self.steps_per_epoch} steps: the learning-rate schedule goes "
                f"on from the start of epoch {self.start_epoch + 1}")})

    def _report_resume_notes(self, planned: int) -> None:
        """Notes on a finished checkpoint (only evaluated) and on a stretched schedule
        (``planned``: the epochs the checkpoint's run was planned for)."""
        cfg, start_epoch = self.cfg, self.start_epoch
        if start_epoch >= cfg["epochs"] and self.start_step == 0:
            self.report({"phase": "resume", "message": (
                f"the checkpoint already finished its {start_epoch} "
                f"epoch{'s' if start_epoch != 1 else ''}: it is evaluated, not trained (ask for "
                "more epochs to train on)")})
        if (planned != cfg["epochs"] and cfg["schedule"] != "constant"
                and start_epoch < cfg["epochs"]):  # else nothing trains on that schedule
            self.report({"phase": "resume", "message": (
                f"the learning-rate schedule was planned for {planned} "
                f"epoch{'s' if planned != 1 else ''} and now spans "
                f"{cfg['epochs']}: the rate jumps to where a {cfg['epochs']}-epoch run would be, "
                f"so the result differs from {cfg['epochs']} epochs straight (exact with the "
                "constant schedule)")})

    # ---- checkpoints

    def rng_states(self) -> dict[str, torch.Tensor]:
        states = {"torch": torch.get_rng_state(), "aug": self.aug_gen.get_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def checkpoint_state(self, epoch: int, step: int, ranks_rng: list | None = None
                         ) -> dict[str, Any]:
        scaler, lookahead = self.scaler, self.lookahead
        return {
            "model_name": self.cfg["model"],
            "model_state": {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()},
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": scaler.state_dict() if scaler.is_enabled() else None,
            "lookahead_state": lookahead.state_dict() if lookahead is not None else None,
            "epoch": epoch,
            "step": step,
            "rng": self.rng_states() if step > 0 else None,
            "rng_ranks": ranks_rng,
            "partial": dict(self.partial),
            "position": self.position,
            "config": _plain_config(self.cfg),
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.data.class_names),
            "history": self.history,
            "train_time_s": self.train_time,
            "torch_version": str(torch.__version__),
        }

    def save(self, epoch: int, step: int, ranks_rng: list | None = None) -> None:
        """Write the checkpoint (rank 0, when one is asked for); a failed write raises, and
        leaves the file as it was (a full disk, say)."""
        if self.is_main and self.cfg.get("checkpoint"):
            ckpt.save_checkpoint(self.cfg["checkpoint"],
                                 self.checkpoint_state(epoch, step, ranks_rng))
            self.saved_at = (epoch, step)

    def write_checkpoint(self, epoch: int, step: int, ranks_rng: list | None = None) -> None:
        """``save`` during training: a failed write ends it."""
        try:
            self.save(epoch, step, ranks_rng)
        except JobError as exc:
            raise JobError(f"{exc}; training stopped, {_what_the_file_keeps(self.saved_at)}"
                           ) from None

    def save_stopped(self, epoch: int, step: int) -> None:
        """The checkpoint of a run stopped before ``step`` of ``epoch``, with every rank's
        totals and RNG states (every rank stops at this step: the stop check is collective).
        A run stopped before its first step leaves any older file alone."""
        if not self.steps_done:
            return
        ranks_rng = None
        if self.distributed:
            self.partial = _sum_over_ranks(self.partial, self.distributed, self.device)
            ranks_rng = [None] * self.world
            self.dist.all_gather_object(ranks_rng, self.rng_states())
        self.write_checkpoint(epoch, step, ranks_rng)

    # ---- training

    def stop_requested(self, step: int) -> bool:
        local = self.ctx.stopped()
        if not self.distributed:
            return local
        # Every rank joins the same all-reduces (every 16th step on GPUs, where each one waits
        # for the GPU): a rank that joined on another step would pair its all-reduce with
        # DDP's gradient one. The signal reaches the ranks at different steps.
        if self.device.type == "cuda" and step % 16:
            return False
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def warm_up(self) -> None:
        """A few untimed steps on GPUs (see :func:`_warm_up`), when there is training to do."""
        warm_up = self.cfg.get("warm_up")
        if warm_up is None:
            warm_up = self.device.type != "cpu"
        if not warm_up or self.start_epoch >= self.cfg["epochs"]:
            return
        self.report({"phase": "warm-up"})
        warm_start = time.perf_counter()
        warm_x = self.normalize(self.train_x[:self.local_batch])
        with _compile_errors_explained() if self.cfg["compile"] else _NO_GUARD:
            _warm_up(self.model, self.raw_model, self.optimizer, self.scaler, self.criterion,
                     self.autocast,
                     warm_x if self.input_dtype is None else warm_x.to(self.input_dtype),
                     self.train_y[:self.local_batch])
        self.warmup_time = time.perf_counter() - warm_start

    def report_start(self) -> None:
        amp_dtype = self.amp_dtype
        self.report({"phase": "start", "model": self.cfg["model"], "params": self.params,
                     "device": str(self.device), "world_size": self.world,
                     "precision": str(amp_dtype).replace("torch.", "") if amp_dtype
                     else "float32",
                     "epochs": self.cfg["epochs"], "steps_per_epoch": self.steps_per_epoch,
                     "batch_size": self.local_batch * self.world,
                     "start_epoch": self.start_epoch,
                     "history": list(self.history)})  # a resumed run's earlier epochs

    def train(self) -> str:
        """Train the epochs left: "completed", or "stopped" (its checkpoint written)."""
        self.loss_ema = torch.zeros((), device=self.device)
        self.ema_weight = 0.0  # bias correction for the EMA
        self.last_report = 0.0
        self.images_done = 0  # this session, all ranks
        self.session_time = 0.0
        # the ETA adds what each epoch's end has cost (evaluation, checkpoint) to the steps left
        self.session_start = time.perf_counter()
        for epoch in range(self.start_epoch, self.cfg["epochs"]):
            outcome = self.train_one_epoch(epoch)
            if outcome.stopped:
                self.save_stopped(epoch, outcome.step)
                return "stopped"
            self.end_epoch(epoch, outcome)
        if self.lookahead is not None:
            self.lookahead.finish()
        return "completed"

    def train_one_epoch(self, epoch: int) -> _EpochOutcome:
        """Train ``epoch`` from its first step not yet trained, until its end or a stop."""
        epoch_start = time.perf_counter()  # the epoch's shuffling and augmentation count too
        shard = self._epoch_batches(epoch)
        _set_whiten_bias_training(self.raw_model, self.cfg["whiten_bias_epochs"], epoch,
                                  self.distributed)
        first_step = self.start_step if epoch == self.start_epoch else 0
        self._seed_epoch(epoch, first_step)
        epoch_inputs = self._augment_epoch(epoch, shard) if self.augment_per == "epoch" else None
        device, world, beta = self.device, self.world, 0.95
        correct = torch.tensor(self.partial["correct"], device=device)
        loss_sum = torch.tensor(self.partial["loss_sum"], device=device, dtype=self.sum_dtype)
        seen = seen_before = self.partial["seen"]
        self.model.train()
        step = first_step
        stopped = False
        for step in range(first_step, self.steps_per_epoch):
            if self.stop_requested(step):
                stopped = True
                break
            x, y = self._batch(epoch, step, shard, epoch_inputs)
            logits, loss = self.train_step(x, y, epoch * self.steps_per_epoch + step + 1)
            with torch.no_grad():
                detached = loss.detach()
                loss_sum += detached.to(self.sum_dtype) * len(y)
                correct += (logits.argmax(1) == y).sum()
                self.loss_ema.mul_(beta).add_(detached, alpha=1 - beta)
            self.ema_weight = self.ema_weight * beta + (1 - beta)
            seen += len(y)
            self.images_done += len(y) * world
            self.steps_done += 1
            self._report_step(epoch, step, epoch_start)
        _synchronize(device)
        epoch_time = time.perf_counter() - epoch_start
        self.train_time += epoch_time
        self.session_time += epoch_time
        self.partial = {"correct": int(correct.item()), "seen": seen,
                        "loss_sum": float(loss_sum.item())}
        return _EpochOutcome(stopped, step, epoch_time, (seen - seen_before) * world)

    def _epoch_batches(self, epoch: int) -> torch.Tensor:
        """This rank's share of every step's batch (steps × local batch image indices), from
        the epoch's permutation (the same on every rank)."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.cfg["seed"], epoch, 0,
                                                              salt=1))
        perm = torch.randperm(len(self.train_y), generator=generator)
        steps, world, local_batch = self.steps_per_epoch, self.world, self.local_batch
        shard = perm[: steps * local_batch * world].view(steps, world, local_batch)[:, self.rank]
        return shard.to(self.device)

    def _seed_epoch(self, epoch: int, first_step: int) -> None:
        """The RNG states for ``epoch``: derived from (seed, epoch, rank), or where a
        mid-epoch checkpoint left them (this rank's, when the checkpoint has them)."""
        cfg, rank, aug_gen = self.cfg, self.rank, self.aug_gen
        saved_rng = None
        if first_step:
            saved_rng = (self.rng_ranks[rank] if self.rng_ranks
                         and len(self.rng_ranks) == self.world
                         else self.rng_state if rank == 0 else None)
        if saved_rng is not None:
            torch.set_rng_state(saved_rng["torch"])
            if saved_rng["aug"].numel() == aug_gen.get_state().numel():
                aug_gen.set_state(saved_rng["aug"])
            else:  # saved on another kind of device (CPU and GPU generators differ)
                aug_gen.manual_seed(_epoch_seed(cfg["seed"], epoch, rank, salt=3 + first_step))
            if "cuda" in saved_rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(saved_rng["cuda"], self.device)
        else:
            torch.manual_seed(_epoch_seed(cfg["seed"], epoch, rank, salt=2 + first_step))
            aug_gen.manual_seed(_epoch_seed(cfg["seed"], epoch, rank, salt=3 + first_step))
            if first_step == 0:
                self.partial = _fresh_partial()

    def _augment_epoch(self, epoch: int, shard: torch.Tensor) -> torch.Tensor:
        """The whole epoch's inputs, augmented and normalized in a few large ops (in the
        order of ``shard``'s steps). Seeded by the epoch alone, so a run resumed mid-epoch
        sees the same epoch."""
        cfg = self.cfg
        self.aug_gen.manual_seed(_epoch_seed(cfg["seed"], epoch, self.rank, salt=5))
        order = shard.reshape(-1)
        flips = None if self.flip_bits is None else self.flip_bits[order] ^ bool(epoch % 2)
        inputs = self.normalize(augment_batch(self.train_x, order, cfg["flip"],
                                              cfg["translate"], self.aug_gen, flips))
        return inputs if self.input_dtype is None else inputs.to(self.input_dtype)

    def _batch(self, epoch: int, step: int, shard: torch.Tensor,
               epoch_inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s inputs (augmented, normalized) and labels."""
        idx = shard[step]
        if epoch_inputs is not None:
            x = epoch_inputs[step * self.local_batch:(step + 1) * self.local_batch]
        else:
            flips = None if self.flip_bits is None else self.flip_bits[idx] ^ bool(epoch % 2)
            x = self.normalize(augment_batch(self.train_x, idx, self.cfg["flip"],
                                             self.cfg["translate"], self.aug_gen, flips))
        return x, self.train_y[idx]

    def train_step(self, x: torch.Tensor, y: torch.Tensor, global_step: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (``global_step``: 1-based, over all epochs); its logits and loss."""
        optimizer, scaler = self.optimizer, self.scaler
        compiling = self.cfg["compile"] and self.steps_done == 0  # the first call compiles
        with _compile_errors_explained() if compiling else _NO_GUARD:
            with self.autocast():
                logits = self.model(x)
                loss = self.criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        self.scheduler.step()
        if self.lookahead is not None:
            self.lookahead.step(global_step)
        return logits, loss

    def _report_step(self, epoch: int, step: int, epoch_start: float) -> None:
        """A "train" progress report, at most every ``report_interval_s`` (and at an epoch's
        last step)."""
        now = time.perf_counter()
        steps_per_epoch = self.steps_per_epoch
        if not self.is_main or (now - self.last_report < self.cfg["report_interval_s"]
                                and step != steps_per_epoch - 1):
            return
        self.last_report = now
        elapsed = max(self.session_time + (now - epoch_start), 1e-9)
        global_step = epoch * steps_per_epoch + step + 1
        self.report({
            "phase": "train",
            "epoch": epoch + 1,
            "epochs": self.cfg["epochs"],
            "step": step + 1,
            "steps_per_epoch": steps_per_epoch,
            "global_step": global_step,
            "total_steps": self.total_steps,
            "loss": float(self.loss_ema.item() / max(self.ema_weight, 1e-12)),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "images_per_s": self.images_done / elapsed,
            "eta_s": self._eta(epoch, global_step, elapsed, now),
            "epoch_progress": (step + 1) / steps_per_epoch,
        })

    def _eta(self, epoch: int, global_step: int, elapsed: float, now: float) -> float:
        """Seconds left: the steps left at this session's pace; for every epoch end to come
        but the last, what each one has cost so far (evaluation, checkpoint); for the last,
        its share that was not evaluation, plus the final evaluation's estimate."""
        eta = elapsed / self.steps_done * (self.total_steps - global_step)
        ends = epoch - self.start_epoch  # epoch ends this session has been through
        if ends:
            spent = now - self.session_start - elapsed
            eta += spent / ends * (self.cfg["epochs"] - epoch - 1)
            eta += max(0.0, spent - self.eval_time) / ends
        train_s_per_image = elapsed * self.world / self.images_done  # on one rank
        return eta + (self._final_evaluation_s(train_s_per_image) or 0.0)

    def _final_evaluation_s(self, train_s_per_image: float | None) -> float | None:
        """The final evaluation's expected seconds (None: nothing to tell it from)."""
        return self._evaluation_s(self.cfg["tta_level"], train_s_per_image)

    def _evaluation_s(self, tta_level: int, train_s_per_image: float | None) -> float | None:
        """An evaluation's expected seconds at ``tta_level`` (None: nothing to tell it from),
        at the pace of this session's evaluations between epochs, else at
        FORWARD_SHARE_OF_A_STEP of the training time per image."""
        if self.eval_images:
            forward_s = self.eval_time / self.eval_images
        elif train_s_per_image is not None:
            forward_s = train_s_per_image * FORWARD_SHARE_OF_A_STEP
        else:
            return None
        return evaluation_estimate(len(self.test_y), tta_level, forward_s)

    def _train_s_per_image(self) -> float | None:
        """This session's training seconds per image on one rank (None: no step yet)."""
        return (self.session_time * self.world / self.images_done if self.steps_done
                else None)

    def end_epoch(self, epoch: int, outcome: _EpochOutcome) -> None:
        """A trained epoch's totals, its test accuracy (every ``eval_every`` epochs, not the
        last: the final evaluation tests it), its checkpoint and its "epoch" report."""
        cfg = self.cfg
        train_loss, train_acc = _reduce_epoch(self.partial, self.distributed, self.device)
        # A NaN loss with finite weights is fp16 overflow that the grad scaler skipped; NaN
        # weights mean the run has diverged (the same on every rank: DDP keeps them equal).
        # A finite loss far above a uniform guess's, ln(classes), has run away as well
        # (e.g. --lr 100: ~4000 against 2.3); it would end as a "completed" chance-level run.
        guess_loss = math.log(self.data.num_classes)
        runaway = math.isfinite(train_loss) and train_loss > RUNAWAY_LOSS_FACTOR * guess_loss
        if runaway or (not math.isfinite(train_loss) and not _all_finite(self.raw_model)):
            kept = (f"; the checkpoint keeps epoch {epoch}" if epoch and cfg.get("checkpoint")
                    else "")
            became = (f"{train_loss:.4g}, against {guess_loss:.3g} for a uniform guess"
                      if runaway else f"{train_loss}")
            raise on_every_rank(JobError(
                f"training diverged in epoch {epoch + 1} (the loss became {became}): "
                f"lower the learning rate or the momentum{kept}"))
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
               "time_s": round(self.train_time, 3),
               "epoch_time_s": round(outcome.time_s, 3),
               "images_per_s": outcome.images / max(outcome.time_s, 1e-9)}
        last = epoch + 1 == cfg["epochs"]
        if cfg["eval_every"] > 0 and ((epoch + 1) % cfg["eval_every"] == 0) and not last:
            self.evaluate(row)
        self.history.append(row)
        self.partial = _fresh_partial()
        if not last:
            self.write_checkpoint(epoch + 1, 0)
            self.report({"phase": "epoch", **row})

    # ---- evaluation

    def evaluate(self, row: dict[str, Any]) -> None:
        """The test accuracy between epochs, into ``row`` (rank 0, while the others wait; a
        stop during it leaves it out)."""
        if self.is_main:
            start = time.perf_counter()
            progress = _EvaluationProgress(
                self.report, len(self.test_y), self.cfg["report_interval_s"], self.device,
                self._evaluation_s(0, self._train_s_per_image()), epoch=row["epoch"],
                between_epochs=True)
            acc = _accuracy(self.raw_model, self.test_x, self.test_y, self.normalize,
                            self.autocast, self.cfg["eval_batch_size"], self.ctx.stopped,
                            progress=progress)
            if acc is not None:  # None: a stop arrived mid-evaluation
                row["test_acc"] = acc
                self.eval_time += time.perf_counter() - start  # _accuracy waited for the GPU
                self.eval_images += len(self.test_y)
        if self.distributed:
            self.dist.barrier()

    def evaluate_trained_model(self, result: dict[str, Any]) -> tuple[bool, dict | None]:
        """Save the trained model, evaluate it (with test-time augmentation when asked) and
        add the test accuracy to the checkpoint. Returns whether the checkpoint holds the
        trained weights, and the evaluation (None: a stop came during it, and it was given
        up: Stop means stop; TTA on the CPU takes a while)."""
        weights_saved = self._save_trained_model(result)
        progress = _EvaluationProgress(self.report, len(self.test_y),
                                       self.cfg["report_interval_s"], self.device,
                                       self._final_evaluation_s(self._train_s_per_image()),
                                       epoch=len(self.history), between_epochs=False)
        final = _final_evaluation(self.raw_model, self.cfg, self.data, self.test_x, self.test_y,
                                  self.normalize, self.autocast, self.ctx.stopped,
                                  progress=progress)
        history = self.history
        if final is None:
            result["status"] = "stopped"
            if history:  # the last epoch's row, which the evaluation would have completed
                self.report({"phase": "epoch", **history[-1]})
            return weights_saved, None
        result.update(final)
        if history:
            history[-1]["test_acc"] = final["test_acc"]
            self.report({"phase": "epoch", **history[-1]})
            if weights_saved:
                try:
                    self.save(self.cfg["epochs"], 0)
                except JobError as exc:
                    result["warning"] = (f"the test accuracy was not added to the "
                                         f"checkpoint ({exc}); it holds the trained model "
                                         "without it")
        return weights_saved, final

    def _save_trained_model(self, result: dict[str, Any]) -> bool:
        """Write the trained model before its evaluation; whether the checkpoint holds it.
        Training is over: a failed write no longer ends the run, whose evaluation is still
        worth having; the result warns that the checkpoint was not written."""
        try:
            self.save(self.cfg["epochs"], 0)
            return bool(self.cfg.get("checkpoint"))
        except JobError as exc:
            if self.saved_at == (self.cfg["epochs"], 0):
                # a finished checkpoint resumed to evaluate it: the file still holds the
                # trained model, and the write after the evaluation says if it fails again
                return True
            result["warning"] = (f"the trained model was not saved ({exc}); "
                                 + _what_the_file_holds(self.saved_at))
            return False

    # ---- the result

    def finish(self, status: str) -> dict[str, Any]:
        """The final evaluation (rank 0, completed runs only: a stop returns at once), then
        the result."""
        result: dict[str, Any] = {"status": status}
        eval_start = time.perf_counter()
        weights_saved = False  # the trained weights are in the checkpoint, whatever comes next
        final = None
        finished_training = self.is_main and status == "completed"
        if finished_training:
            weights_saved, final = self.evaluate_trained_model(result)
        if self.is_main and final is None:
            tested = [row["test_acc"] for row in self.history if "test_acc" in row]
            result["test_acc"] = tested[-1] if tested else None
        if self.distributed:
            self.dist.barrier()
        eval_time = time.perf_counter() - eval_start
        wrote = weights_saved if finished_training else self.steps_done
        result.update(self._summary(eval_time, wrote_checkpoint=bool(wrote)))
        if self.is_main:
            self.report({"phase": "done", "final": True, "status": result["status"],
                         "test_acc": result.get("test_acc"),
                         "train_time_s": result["train_time_s"]})
        return result

    def _summary(self, eval_time: float, wrote_checkpoint: bool) -> dict[str, Any]:
        cfg, amp_dtype = self.cfg, self.amp_dtype
        return {
            "epochs": len(self.history),
            "history": self.history,
            "train_time_s": round(self.train_time, 3),
            "load_time_s": round(self.load_time, 3),
            "warmup_time_s": round(self.warmup_time, 3),
            "eval_time_s": round(eval_time, 3),
            "wall_time_s": round(time.perf_counter() - self.wall_start, 3),
            "world_size": self.world,
            "model": cfg["model"],
            "params": self.params,
            "device": str(self.device),
            "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
            "class_names": list(self.data.class_names),
            "mean": self.mean,
            "std": self.std,
            "checkpoint": (str(cfg["checkpoint"]) if cfg.get("checkpoint") and wrote_checkpoint
                           else None),
            # [epoch, step] the checkpoint file holds (steps into the next epoch): None when
            # this run has not written it (nor resumed from it)
            "saved_at": list(self.saved_at) if self.saved_at is not None else None,
            "config": _plain_config(cfg),
            "train_images": len(self.train_y),
            "test_images": len(self.test_y),
            # as trained: at most the images, a multiple of ranks
            "batch_size": self.local_batch * self.world,
        }


def evaluation_estimate(images: int, tta_level: int, forward_s_per_image: float) -> float:
    """Seconds an evaluation should take: every image through each of its test-time views,
    at ``forward_s_per_image`` a view."""
    return images * tta_views(tta_level) * forward_s_per_image


class _EvaluationProgress:
    """An evaluation's "evaluate" reports: ``done`` of ``total`` test images and ``eta_s``,
    the seconds left (the estimate until a batch is done, then at the pace measured; None: no
    estimate), with ``epoch`` (the epochs the model evaluated has trained) and
    ``between_epochs`` (False: the final evaluation). The first report is made at once, the
    last when all are done, the ones between at most every ``interval`` seconds."""

    def __init__(self, report, total: int, interval: float, device: torch.device,
                 estimate_s: float | None, epoch: int, between_epochs: bool) -> None:
        self.report, self.total, self.interval, self.device = report, total, interval, device
        self.about = {"epoch": epoch, "between_epochs": between_epochs}
        self.start = self.last = time.perf_counter()
        report({"phase": "evaluate", "done": 0, "total": total, "eta_s": estimate_s,
                **self.about})

    def __call__(self, done: int) -> None:
        """``done`` images have been queued for evaluation."""
        if done < self.total and time.perf_counter() - self.last < self.interval:
            return
        _synchronize(self.device)  # so that they have been evaluated, not only queued
        now = self.last = time.perf_counter()
        self.report({"phase": "evaluate", "done": done, "total": self.total,
                     "eta_s": (now - self.start) / done * (self.total - done), **self.about})


def _normalization_stats(data: CifarData, resume_blob: dict[str, Any] | None
                         ) -> tuple[list[float], list[float]]:
    """The mean and std inputs are normalized by: the checkpoint's when resuming (whose
    classes must be the data's), else the training images'."""
    if resume_blob is not None:
        if [c.lower() for c in resume_blob["class_names"]] != [c.lower() for c in data.class_names]:
            raise on_every_rank(JobError(
                f"the checkpoint's classes ({', '.join(resume_blob['class_names'])}) do not match "
                f"the data's ({', '.join(data.class_names)})"
            ))
        return list(resume_blob["mean"]), list(resume_blob["std"])
    sums = channel_sums(data.train_images)
    if all_one_colour(sums):
        raise on_every_rank(JobError(
            f"every training image is one and the same colour ({len(data.train_labels)} "
            "images), so there is nothing to learn from them: check that the images "
            "decoded as they should (open a few), or choose other classes"))
    return stats_from_sums(sums)


def _epoch_position(steps_per_epoch: int, global_batch: int, train_images: int, seed: int
                    ) -> dict[str, int]:
    """What the steps inside an epoch mean (the seed shuffles it): a mid-epoch checkpoint
    resumes only under the same."""
    return {"steps_per_epoch": steps_per_epoch, "global_batch": global_batch,
            "train_images": train_images, "seed": seed}


def _check_mid_epoch_resume(blob: dict[str, Any], cfg: dict[str, Any],
                            position: dict[str, int]) -> None:
    """Refuse to continue a checkpoint written inside an epoch when this run would cut that
    epoch into other batches (its remaining steps would be skipped or repeated)."""
    saved = blob.get("position")
    if saved is not None:
        same = all(saved.get(key, value) == value for key, value in position.items())
    else:  # older checkpoints: the settings that decide an epoch's batches (0 images: all)
        same = all((blob["config"].get(key) or None if key == "max_train"
                    else blob["config"].get(key)) == cfg.get(key) for key in MID_EPOCH_KEYS)
    if same:
        return
    was = blob["config"]
    limit = was.get("max_train") or "all"
    of_steps = f" of {saved['steps_per_epoch']}" if saved else ""
    names = {"train_images": "training images", "global_batch": "batch (all processes)",
             "seed": "seed", "steps_per_epoch": "steps per epoch"}
    differences = [f"{names.get(key, key)} {saved[key]} then, {value} now"
                   for key, value in position.items()
                   if saved is not None and key in saved and saved[key] != value]
    what_differs = f" ({'; '.join(differences)})" if differences else ""
    raise JobError(
        f"the checkpoint stopped in the middle of epoch {int(blob['epoch']) + 1} (after step "
        f"{blob['step']}{of_steps}); that epoch can only go on in the same batches"
        f"{what_differs}: resume on the same data with batch size {was.get('batch_size')}, "
        f"max train {limit}, seed {was.get('seed')} and the same number of processes"
    )


def _use_new_hyperparameters(optimizer, scheduler, fresh_groups, fresh_base_lrs) -> None:
    """After loading a checkpoint's optimizer and scheduler state, put back the hyperparameters
    of the freshly built optimizer (the user changed some), keeping the state (momentum
    buffers, step counts); the rates follow with :func:`_set_schedule_position`."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
        group.update({k: v for k, v in fresh.items() if k != "lr"})
    scheduler.base_lrs = list(fresh_base_lrs)


def _set_schedule_position(optimizer, scheduler, step: int) -> None:
    """Put the LambdaLR schedule at ``step`` (steps taken) and the groups' rates with it."""
    scheduler.last_epoch = step
    for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                      scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * factor(step)


def _plain_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as JSON-able data (no dataset object, paths as strings)."""
    out = {}
    for key, value in cfg.items():
        if key == "dataset":
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def _sum_over_ranks(partial: dict, distributed: bool, device: torch.device) -> dict[str, Any]:
    """An epoch's running totals (loss sum, correct, seen) added up over all ranks."""
    totals = torch.tensor([partial["loss_sum"], partial["correct"], partial["seen"]],
                          dtype=torch.float64, device=device if distributed else "cpu")
    if distributed:
        import torch.distributed as dist

        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    return {"correct": int(correct), "seen": int(seen), "loss_sum": loss_sum}


_NO_GUARD = contextlib.nullcontext()  # reusable, and cheaper per step than a generator


@contextlib.contextmanager
def _compile_errors_explained():
    """While ``torch.compile`` compiles (the first forward and backward), its failures (no
    compiler, a GPU too old for Triton) become a JobError that says to train without it."""
    try:
        yield
    except Exception as exc:
        import torch.distributed as dist

        not_compiling = (JobError, torch.OutOfMemoryError, getattr(dist, "DistError", JobError))
        if isinstance(exc, not_compiling):
            raise
        raise JobError(f"torch.compile failed here ({type(exc).__name__}: "
                       f"{str(exc).strip()[:200]}); train without compile") from None


def _all_finite(model: nn.Module) -> bool:
    """Weights and floating-point buffers (BatchNorm's running statistics) alike."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all())


def _reduce_epoch(partial: dict, distributed: bool, device: torch.device) -> tuple[float, float]:
    total = _sum_over_ranks(partial, distributed, device)
    return total["loss_sum"] / max(total["seen"], 1), total["correct"] / max(total["seen"], 1)


@torch.no_grad()
def _predict(model, images, normalize, autocast, batch_size, tta_level=0,
             stopped=None, progress=None) -> torch.Tensor | None:
    """Predicted classes for uint8 ``images``; None when ``stopped()`` turns true midway.
    ``progress(images done)`` is called after each batch."""
    was_training = model.training
    model.eval()
    preds = []
    done = 0
    try:
        for chunk in images.split(batch_size):
            if stopped is not None and stopped():
                return None
            x = normalize(chunk)
            with autocast():
                if tta_level > 0:
                    from engine.cifar.fast import predict_with_tta

                    logits = predict_with_tta(model, x, tta_level)
                else:
                    logits = model(x)
            preds.append(logits.float().argmax(1))
            done += len(chunk)
            if progress is not None:
                progress(done)
    finally:
        model.train(was_training)
    return torch.cat(preds)


def _accuracy(model, images, labels, normalize, autocast, batch_size, stopped=None,
              progress=None) -> float | None:
    preds = _predict(model, images, normalize, autocast, batch_size, stopped=stopped,
                     progress=progress)
    return None if preds is None else int((preds == labels).sum().item()) / len(labels)


def _final_evaluation(model, cfg, data: CifarData, test_x, test_y, normalize, autocast,
                      stopped=None, progress=None) -> dict[str, Any] | None:
    """Test accuracy, per-class accuracy, confusion matrix and misclassified indices per cell
    (None when ``stopped()`` turns true midway); ``progress`` as for :func:`_predict`."""
    preds = _predict(model, test_x, normalize, autocast, cfg["eval_batch_size"],
                     cfg["tta_level"], stopped, progress)
    if preds is None:
        return None
    preds = preds.cpu()
    labels = test_y.cpu()
    k = data.num_classes
    confusion = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
    per_class = [None if total == 0 else hits / total  # None: no test image of that class
                 for hits, total in zip(confusion.diag().tolist(), confusion.sum(1).tolist(),
                                        strict=True)]
    wrong = torch.nonzero(preds != labels).flatten()
    source_index = data.test_index[wrong]
    misclassified: dict[str, list[int]] = {}
    for t, p, i in zip(labels[wrong].tolist(), preds[wrong].tolist(), source_index.tolist(),
                       strict=True):
        misclassified.setdefault(f"{t},{p}", []).append(i)
    return {
        "test_acc": float((preds == labels).double().mean().item()),
        "per_class_acc": dict(zip(data.class_names, per_class, strict=True)),
        "confusion": confusion.tolist(),
        "misclassified": misclassified,
        "tta_level": cfg["tta_level"],
    }
