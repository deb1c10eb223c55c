"""The Fast net: our residual CIFAR net and its training recipe, built for time-to-accuracy.

Design (published ideas, our code):

* a frozen 2×2 patch-whitening first conv initialised from the training data: the eigenvectors of
  the patch covariance scaled to unit variance, plus their negatives so the activation keeps both
  signs; only its bias trains;
* three blocks ``conv3×3 → max-pool 2 → BatchNorm → act → conv3×3 → BatchNorm → act`` with a skip
  connection around the second conv; identity ("dirac") init of every 3×3 conv; BatchNorm with a
  fixed scale of 1 (only the shift trains);
* a global max-pool and a bias-free linear head with scaled-down logits.

Recipe: Nesterov SGD (on the CPU: Muon for the conv filters, see ``engine.cifar.optim``), label
smoothing, alternating flip + 2-pixel translate, a short warm-up then linear decay, 64× the
learning rate on BatchNorm biases, lookahead weight averaging over the last epochs;
flip/translate averaging at test time.

Two sizes of the same design (``VARIANTS``): ``"gpu"`` (widths 64/256/256, whitening at full
resolution, GELU; airbench94-sized) and ``"cpu"`` (narrower, stride-2 whitening so every later layer
runs at a quarter of the pixels, ReLU): an H100 does the big net's ten epochs in 2.6-3.2 s,
a 2-core CPU would need an hour, so the CPU net trades width and resolution for more epochs.

Input contract: ``forward`` takes float N×3×32×32, normalized per channel with the training set's
mean and std (``(x / 255 - mean) / std``), in any memory format and under any autocast.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS: dict[str, dict[str, Any]] = {
    "gpu": {"widths": (64, 256, 256), "stem_stride": 1, "activation": "gelu", "residual": True,
            "norm_eps": 1e-5},
    "cpu": {"widths": (48, 96, 192), "stem_stride": 2, "activation": "relu", "residual": True,
            "norm_eps": 1e-5},
}
# Keys a variant may be built with beyond its own (model_options overrides, e.g. for experiments).
NET_OPTIONS = ("widths", "stem_stride", "activation", "residual", "norm_eps")

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4  # added to the patch-covariance eigenvalues: keeps noise directions small
WHITEN_SAMPLES = 5000  # training images used for the patch covariance
BN_MOMENTUM = 0.4  # PyTorch convention: running stats follow recent batches closely
LOGIT_SCALE = 1 / 9
NORM_BIAS_LR_SCALE = 64.0

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def default_variant(device_type: str | None = None) -> str:
    """``"cpu"`` for the CPU, ``"gpu"`` for CUDA/ROCm/MPS; None: this machine's CUDA GPU if it
    has one, else the CPU."""
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if device_type == "cpu" else "gpu"


def _recipe(batch_size: int, epochs: int, warmup: float, tta_level: int,
            channels_last: bool, eval_every: int, label_smoothing: float,
            whiten_bias_epochs: int, lr_start: float = 0.0, lr_end: float = 0.0,
            optimizer: str = "nesterov", muon_lr: float = 0.24, muon_momentum: float = 0.6
            ) -> dict[str, Any]:
    # Learning rate grows with the batch (airbench's 1.5 per 1024 images for a mean loss);
    # the per-step decay lr * weight_decay then grows with it too, i.e. is constant per image.
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": 1.5 * batch_size / 1024,
        "momentum": 0.85,
        "nesterov": True,
        "optimizer": optimizer,  # "muon": Muon for the conv filters, this SGD for the rest
        "muon_lr": muon_lr,
        "muon_momentum": muon_momentum,
        "weight_decay": 1.33e-3,
        "label_smoothing": label_smoothing,
        "schedule": "warmup_linear",
        "warmup": warmup,
        "lr_start": lr_start,
        "lr_end": lr_end,
        "flip": True,
        "alternate_flip": True,
        "translate": 2,
        "lookahead": True,
        "whiten_bias_epochs": whiten_bias_epochs,
        "whiten_bias_fade": False,
        "tta_level": tta_level,
        "eval_every": eval_every,
        "precision": "auto",
        "channels_last": channels_last,
    }


_DEFAULTS_BY_DEVICE: dict[str, dict[str, Any]] = {
    # Muon for the conv filters (Nesterov SGD for biases and head), batch 384, 8 epochs, TTA
    # over flips x nine 1-pixel shifts. Measured on the 2-core AVX2 VM (JPEG CIFAR-10, seeds
    # 0-4): 85.14, 85.15, 84.92, 85.17, 85.20% (mean 85.12%) after 277.6, 282.3, 293.2,
    # 278.5, 275.0 s of training. Same machine,
    # same data: Nesterov SGD alone (the recipe before) 84.0% in 7 epochs / 234-245 s; Muon at
    # batch 256, 7 epochs 84.2-84.9% (3 runs, 251-276 s); batch 512, 8 epochs 84.4-84.6% (2
    # runs, 259-268 s) with TTA level 2, about +0.3 points with level 3 (same weights). Muon's
    # lr: best near 0.1 (batch 256) and 0.2 (batch 512) in short runs; its momentum, lookahead
    # on or off, label smoothing 0.2 and 0.6x the SGD lr made no difference there. Older tries
    # with SGD, all 83.6-84.0%: label smoothing 0.2 or 0, lr x1.5 or x0.67, batch 128, widths
    # 40/80/160 for 9 epochs, 48/96/128 for 8, 64/96/128 for 7, 48/96/256 for 7, weight decay
    # halved, no skip connection (83.68%), the first epochs at 24 px. 32/96/192 wide with Muon:
    # 84.14% in 9 epochs / 240 s (TTA 2). airbench94_muon's batch-2000 settings (Muon lr 0.24,
    # lr 1.64, wd 2.44e-3, label smoothing 0.2, no lookahead or warm-up), 8 epochs: 84.97% (TTA
    # 2), 84.82, 84.88% (TTA 3) in 243-268 s. fp32 + channels_last: bf16 autocast without hardware
    # bf16 runs ~5x slower there. With hardware bf16 the recipe trains longer: CPU_BF16_EPOCHS.
    "cpu": _recipe(batch_size=384, epochs=8, warmup=0.05, tta_level=3, channels_last=True,
                   eval_every=1, label_smoothing=0.1, whiten_bias_epochs=2, optimizer="muon",
                   muon_lr=0.15, muon_momentum=0.6),
    # One GPU (airbench94-style): 10 epochs of 1024-image batches. Measured on an H100 (torch
    # 2.11, JPEG CIFAR-10): 90.34% (5 seeds) and 90.38% (3 seeds) in 2.6-3.2 s of training;
    # 11 epochs 90.62%, 12 epochs 90.74% (3.8-4.3 s). No better: fp16, lr x1.25, label
    # smoothing 0.1, BatchNorm eps 1e-12, lr 0.2 -> 1 -> 0.07, torch.compile (no faster). No
    # skip connection: 90.45% and ~9% faster (on the CPU net: 83.68% against 84.00%).
    "gpu": _recipe(batch_size=1024, epochs=10, warmup=0.23, tta_level=2, channels_last=True,
                   eval_every=0, label_smoothing=0.2, whiten_bias_epochs=3),
}


# CPUs with bf16 in hardware (AVX512-BF16, AMX) train the CPU net ~1.3x faster under bf16
# autocast ("auto" precision picks it there), so the recipe spends that on more epochs. Measured
# on a 2-core AMD EPYC (Zen 4) VM, JPEG CIFAR-10, seed 0: 8 epochs in bf16 84.93% in 124 s; in
# fp32 85.06% in 162 s. 10 epochs in bf16, seeds 0-4: 85.69, 85.60, 85.34, 85.84, 85.82% (mean
# 85.66%) in 152, 149, 132, 142, 138 s (benchmarks/results/cpu-2026-12-01-cifar-fast.md).
CPU_BF16_EPOCHS = 10


def fast_defaults(device_type: str) -> dict[str, Any]:
    """The Fast recipe for ``device_type`` ("cpu", "cuda", "mps"): a fresh dict of the keys listed
    in ``FAST_DEFAULTS``, plus ``variant`` (the net size to build)."""
    from engine.devices import cpu_has_native_bf16

    variant = default_variant(device_type)
    recipe = {**_DEFAULTS_BY_DEVICE[variant], "variant": variant}
    if variant == "cpu" and cpu_has_native_bf16():
        recipe["epochs"] = CPU_BF16_EPOCHS
    return recipe


# The CPU recipe: what a plain ``python -m engine cifar train`` on this machine runs. Keys:
# epochs, batch_size, lr (mean loss; BatchNorm biases get NORM_BIAS_LR_SCALE times more),
# momentum, nesterov/optimizer ("muon": Muon for the conv filters with muon_lr and
# muon_momentum, this SGD for the rest), weight_decay (PyTorch's coupled form; Muon's filters
# are renormalized instead), label_smoothing, schedule ("warmup_linear") + warmup (fraction of
# steps), flip, translate (pixels), tta_level (0 none, 1 flip, 2 flip + 2 diagonal 1-pixel
# shifts, 3 flip x all nine 1-pixel shifts), eval_every (epochs), precision, channels_last,
# variant.
FAST_DEFAULTS: dict[str, Any] = fast_defaults("cpu")


class FastBlock(nn.Module):
    """conv → max-pool 2 → BN → act → conv → BN → act, with a skip around the second conv."""

    def __init__(self, in_channels: int, out_channels: int, activation: type[nn.Module],
                 residual: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = _identity_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(out_channels, norm_eps)
        self.conv2 = _identity_conv(out_channels, out_channels)
        self.norm2 = _batch_norm(out_channels, norm_eps)
        self.act = activation()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        out = self.act(self.norm2(self.conv2(x)))
        return x + out if self.residual else out


class FastNet(nn.Module):
    """See the module docstring. ``whiten`` is frozen except for its bias."""

    # Every trainable conv feeds a BatchNorm (through max-pooling at most), so its scale does not
    # change the output: optimizers may renormalize the filters (the trainer's Muon does).
    scale_invariant_filters = True

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (64, 256, 256),
                 stem_stride: int = 1, activation: str = "gelu", residual: bool = True,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        act = _ACTIVATIONS[activation]
        stem_channels = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, stem_channels, WHITEN_KERNEL, stride=stem_stride, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.stem_act = act()
        blocks, in_channels = [], stem_channels
        for width in widths:
            blocks.append(FastBlock(in_channels, width, act, residual, norm_eps))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = LOGIT_SCALE
        self.config = {"widths": tuple(widths), "stem_stride": stem_stride,
                       "activation": activation, "residual": residual, "norm_eps": norm_eps}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_act(self.whiten(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.logit_scale

    @torch.no_grad()
    def init_whitening(self, train_images: torch.Tensor) -> None:
        """Set the whitening conv from ``train_images`` (uint8 N×3×H×W): its filters are the
        eigenvectors of the 2×2 patch covariance of the normalized images, scaled to unit variance,
        and their negatives; its bias centres the outputs."""
        # Statistics on the CPU in float64: exact enough for eigh everywhere (MPS has no float64).
        as_float = train_images[:WHITEN_SAMPLES].cpu().float() / 255
        mean = as_float.mean(dim=(0, 2, 3), keepdim=True)
        std = as_float.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        k = WHITEN_KERNEL
        dim = 3 * k * k
        total = torch.zeros(dim, dtype=torch.float64)
        outer = torch.zeros(dim, dim, dtype=torch.float64)
        count = 0
        for chunk in as_float.split(500):
            x = (chunk - mean) / std
            patches = x.unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim).double()
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
        patch_mean = total / count
        covariance = outer / count - torch.outer(patch_mean, patch_mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors / (eigenvalues + WHITEN_EPS).sqrt()).T  # one filter per row
        filters = torch.cat([filters, -filters])
        self.whiten.weight.copy_(filters.view(-1, 3, k, k))
        self.whiten.bias.copy_(-(filters @ patch_mean))

    def optimizer_param_groups(self, lr: float, weight_decay: float,
                               whiten_bias_fade: bool = False) -> list[dict[str, Any]]:
        """The trainer's optimizer hook; see :func:`fast_param_groups`."""
        return fast_param_groups(self, lr, weight_decay, whiten_bias_fade)


class Conv3x3(nn.Conv2d):
    """A bias-free 3×3 convolution with padding 1 that trains faster on the CPU on 2×2 maps
    (the CPU net's last conv).

    There every output pixel sees every input pixel, so the convolution is one matrix product
    with a weight matrix assembled from the kernel's taps: 2.25× fewer multiply-adds (no padding
    taps) and plain GEMMs forward and backward, where oneDNN falls back to a slow im2col kernel
    for the weight gradient (~2× faster for that layer; 5-15% per training step of the CPU net).
    Same maths: results match the ordinary convolution to float rounding (tested). Everywhere
    else — GPUs, other map sizes, evaluation, autocast, TorchScript — it is a plain ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._cpu_training(x):
            return self._cpu_training_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    # The two helpers below are Python-only (TorchScript never calls them) and carry no type
    # annotations: TorchScript still parses an unused method's signature.
    @torch.jit.unused
    def _cpu_training(self, x):
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and torch.is_grad_enabled() and self.weight.requires_grad
                and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
                and x.shape[-2:] == (2, 2))

    @torch.jit.unused
    def _cpu_training_forward(self, x):
        return conv3x3_on_2x2(x, self.weight)


def conv3x3_on_2x2(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=1)`` for N×C×2×2 ``x`` as one matrix product (channels_last
    result). Output pixel (py, px) sees input pixel (qy, qx) through tap (qy-py+1, qx-px+1), so
    its row of the dense weight is the kernel's 2×2 sub-block starting at (1-py, 1-px)."""
    n, c = x.shape[:2]
    out_channels = weight.shape[0]
    rows = [weight[:, :, 1 - py:3 - py, 1 - px:3 - px] for py in (0, 1) for px in (0, 1)]
    # P(output pixel) × O × C × Q(input pixel) → rows (P, O), columns (Q, C): x's NHWC order
    dense = torch.stack(rows).permute(0, 1, 3, 4, 2).reshape(4 * out_channels, 4 * c)
    flat = x.permute(0, 2, 3, 1).reshape(n, 4 * c)
    return (flat @ dense.T).view(n, 2, 2, out_channels).permute(0, 3, 1, 2)


def _identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = Conv3x3(in_channels, out_channels)
    with torch.no_grad():
        # The first min(in, out) filters pass their input channel through: every block starts
        # close to an identity map, which trains faster than a random start.
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def _batch_norm(channels: int, eps: float = 1e-5) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=eps, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)  # scale fixed at 1: only the bias (shift) is learned
    return norm


def build_fast_net(num_classes: int, train_images: torch.Tensor | None = None,
                   variant: str | None = None, **overrides: Any) -> FastNet:
    """Build the Fast net, its whitening layer initialised from ``train_images`` (uint8
    N×3×32×32 on the training device; None leaves a random, still frozen, whitening layer).

    ``variant`` ("cpu" or "gpu", see ``VARIANTS``) defaults to the one for ``train_images``'
    device, or without images to :func:`default_variant` for this machine. Pass it explicitly
    (e.g. stored with a checkpoint) when the net must match weights trained elsewhere.
    ``overrides`` change single settings of the variant (keys in ``NET_OPTIONS``).
    """
    if variant is None:
        device_type = train_images.device.type if train_images is not None else None
        variant = default_variant(device_type)
    if variant not in VARIANTS:
        raise ValueError(f"unknown Fast variant {variant!r}; choose one of {sorted(VARIANTS)}")
    unknown = sorted(set(overrides) - set(NET_OPTIONS))
    if unknown:
        raise ValueError(f"unknown Fast net option(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(NET_OPTIONS)}")
    model = FastNet(num_classes, **{**VARIANTS[variant], **overrides})
    if train_images is not None:
        model = model.to(train_images.device)
        model.init_whitening(train_images)
    return model


def fast_param_groups(model: nn.Module, lr: float, weight_decay: float,
                      whiten_bias_fade: bool = False) -> list[dict[str, Any]]:
    """Optimizer groups: BatchNorm biases get ``NORM_BIAS_LR_SCALE``× the learning rate with the
    weight decay divided by the same factor (so their decay per step is unchanged); all other
    trainable parameters use ``lr`` and ``weight_decay``. Frozen parameters are left out.

    ``whiten_bias_fade``: the whitening bias gets the BatchNorm biases' rate too, in a last group
    flagged ``"fade": True`` whose rate the trainer takes linearly to 0 over the epochs the bias
    trains (airbench94_muon's treatment; by default it learns at ``lr`` like the rest)."""
    whiten_bias = getattr(getattr(model, "whiten", None), "bias", None)
    norm_biases, others, faded = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if whiten_bias_fade and param is whiten_bias:
                faded.append(param)
                continue
            is_norm_bias = isinstance(module, nn.modules.batchnorm._NormBase) and name == "bias"
            (norm_biases if is_norm_bias else others).append(param)
    groups = [{"params": others, "lr": lr, "weight_decay": weight_decay}]
    for params, extra in ((norm_biases, {}), (faded, {"fade": True})):
        if params:
            groups.append({"params": params, "lr": lr * NORM_BIAS_LR_SCALE,
                           "weight_decay": weight_decay / NORM_BIAS_LR_SCALE, **extra})
    return groups


def tta_views(level: int) -> int:
    """How many forward passes :func:`predict_with_tta` makes per image at ``level``."""
    if level <= 0:
        return 1
    return {1: 2, 2: 6}.get(level, 18)


def predict_with_tta(model: nn.Module, images: torch.Tensor, level: int) -> torch.Tensor:
    """Logits for normalized ``images`` averaged over test-time views.

    level 0: the images as they are; 1: also mirrored left-right; 2: level 1 averaged (half
    weight) with level 1 on copies shifted one pixel up-left and down-right (reflect padding);
    3 (and above): level 1 averaged over all nine shifts by at most one pixel (18 views, 3x the
    time of level 2). Call it with the model in eval mode, under ``torch.no_grad()``.
    """
    if level <= 0:
        return model(images)

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(x) + model(x.flip(-1)))

    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    if level >= 3:
        views = [padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
        return sum(mirrored(view) for view in views) / len(views)
    logits = mirrored(images)
    if level == 1:
        return logits
    up_left = padded[..., :h, :w]
    down_right = padded[..., 2:, 2:]
    shifted = 0.5 * (mirrored(up_left) + mirrored(down_right))
    return 0.5 * (logits + shifted)
