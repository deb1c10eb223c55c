"""The CIFAR model family: the book's nets (Deep Learning with PyTorch, ch. 8) and the Fast net.

All models take normalized float N×3×32×32 images and return N×K logits. The book's nets were
written for two classes (CIFAR-2); here the last layer has ``num_classes`` outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.jobs import JobError


class Net(nn.Module):
    """The book's first convnet: two conv+tanh+maxpool stages, then two linear layers."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = out.flatten(1)
        return self.fc2(torch.tanh(self.fc1(out)))


class NetWidth(nn.Module):
    """Net with ``n_chans1`` channels in the first conv (wider)."""

    def __init__(self, num_classes: int = 2, n_chans1: int = 32) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = out.flatten(1)
        return self.fc2(torch.tanh(self.fc1(out)))


class NetDropout(nn.Module):
    """NetWidth with 2-D dropout (p=0.4) after each conv stage."""

    def __init__(self, num_classes: int = 2, n_chans1: int = 32) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv1_dropout = nn.Dropout2d(p=0.4)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv2_dropout = nn.Dropout2d(p=0.4)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = self.conv1_dropout(out)
        out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = self.conv2_dropout(out)
        out = out.flatten(1)
        return self.fc2(torch.tanh(self.fc1(out)))


class NetBatchNorm(nn.Module):
    """NetWidth with batch normalization before each conv stage's tanh."""

    def __init__(self, num_classes: int = 2, n_chans1: int = 32) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv1_batchnorm = nn.BatchNorm2d(num_features=n_chans1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv2_batchnorm = nn.BatchNorm2d(num_features=n_chans1 // 2)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.tanh(self.conv1_batchnorm(self.conv1(x))), 2)
        out = F.max_pool2d(torch.tanh(self.conv2_batchnorm(self.conv2(out))), 2)
        out = out.flatten(1)
        return self.fc2(torch.tanh(self.fc1(out)))


class NetDepth(nn.Module):
    """Three conv+ReLU+maxpool stages (deeper)."""

    def __init__(self, num_classes: int = 2, n_chans1: int = 32) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(n_chans1 // 2, n_chans1 // 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(4 * 4 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        out = F.max_pool2d(torch.relu(self.conv2(out)), 2)
        out = F.max_pool2d(torch.relu(self.conv3(out)), 2)
        out = out.flatten(1)
        return self.fc2(torch.relu(self.fc1(out)))


class NetRes(nn.Module):
    """NetDepth with a skip connection around the third conv."""

    def __init__(self, num_classes: int = 2, n_chans1: int = 32) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(n_chans1 // 2, n_chans1 // 2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(4 * 4 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        out = F.max_pool2d(torch.relu(self.conv2(out)), 2)
        out1 = out
        out = F.max_pool2d(torch.relu(self.conv3(out)) + out1, 2)
        out = out.flatten(1)
        return self.fc2(torch.relu(self.fc1(out)))


class ResBlock(nn.Module):
    """conv3×3 (no bias) → BatchNorm → ReLU, added to the input; Kaiming init, BN weight 0.5."""

    def __init__(self, n_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_chans, n_chans, kernel_size=3, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(num_features=n_chans)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.constant_(self.batch_norm.weight, 0.5)
        nn.init.zeros_(self.batch_norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.batch_norm(self.conv(x))) + x


class NetResDeep(nn.Module):
    """A conv stem, ``n_blocks`` residual blocks at 16×16, then the linear head.

    The book builds its block list as ``n_blocks * [ResBlock(...)]``, which repeats one block
    (shared weights); here every block has its own weights, as the text describes.
    """

    def __init__(self, num_classes: int = 2, n_chans1: int = 32, n_blocks: int = 10) -> None:
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.resblocks = nn.Sequential(*(ResBlock(n_chans=n_chans1) for _ in range(n_blocks)))
        self.fc1 = nn.Linear(8 * 8 * n_chans1, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        out = self.resblocks(out)
        out = F.max_pool2d(out, 2)
        out = out.flatten(1)
        return self.fc2(torch.relu(self.fc1(out)))


def _build_fast(num_classes: int, train_images: torch.Tensor | None,
                variant: str | None = None, **overrides) -> nn.Module:
    from engine.cifar.fast import build_fast_net

    try:
        return build_fast_net(num_classes, train_images, variant=variant, **overrides)
    except (TypeError, ValueError) as exc:
        raise JobError(f"bad Fast net options: {exc}") from None


@dataclass(frozen=True)
class ModelSpec:
    label: str
    description: str
    build: Callable[..., nn.Module]  # (num_classes, train_images, **model_options)


MODELS: dict[str, ModelSpec] = {
    "fast": ModelSpec("Fast (residual, speed recipe)",
                      "Our residual net built for speed, with a data-initialized whitening layer",
                      _build_fast),
    "net": ModelSpec("Net", "The book's first convnet (tanh, 2 conv layers)",
                     lambda k, _x: Net(k)),
    "netwidth": ModelSpec("NetWidth", "Net with 32 channels in the first conv",
                          lambda k, _x: NetWidth(k)),
    "netdropout": ModelSpec("NetDropout", "NetWidth with dropout",
                            lambda k, _x: NetDropout(k)),
    "netbatchnorm": ModelSpec("NetBatchNorm", "NetWidth with batch normalization",
                              lambda k, _x: NetBatchNorm(k)),
    "netdepth": ModelSpec("NetDepth", "Three conv layers with ReLU",
                          lambda k, _x: NetDepth(k)),
    "netres": ModelSpec("NetRes", "NetDepth with a skip connection",
                        lambda k, _x: NetRes(k)),
    "netresdeep": ModelSpec("NetResDeep", "10 residual blocks with batch norm",
                            lambda k, _x: NetResDeep(k)),
}


def model_options(name: str, device_type: str = "cpu") -> dict:
    """Build options a model needs beyond its class count, for a device type.

    Fast comes in sizes ("cpu"/"gpu" variant); the trainer stores the options in the checkpoint's
    config so that resuming and exporting rebuild the same net.
    """
    if name.lower() == "fast":
        from engine.cifar.fast import fast_defaults

        return {"variant": fast_defaults(device_type)["variant"]}
    return {}


def build_model(name: str, num_classes: int, train_images: torch.Tensor | None = None,
                **options) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs (``train_images`` initialises Fast;
    ``options`` come from :func:`model_options`)."""
    spec = MODELS.get(name.lower())
    if spec is None:
        raise JobError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return spec.build(num_classes, train_images, **options)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": n, "total": n}`` parameter counts."""
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


def parameter_count(name: str, num_classes: int, device_type: str = "cpu") -> dict[str, int]:
    """Parameter counts of model ``name`` as it would be built for ``device_type``."""
    return count_parameters(build_model(name, num_classes, **model_options(name, device_type)))


class NormalizedClassifier(nn.Module):
    """Wraps a model so it takes float RGB in [0, 1] (N×3×32×32) and normalizes inside.

    This is what gets exported: the caller needs only resize to 32×32 and scale to [0, 1].
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)
