"""Grad-CAM (Selvaraju et al. 2017) with forward hooks: where the network looked for a class.

The target layer is found automatically: the last module whose output is a spatial feature map
(N, C, H, W with H, W > 1) — ``layer4`` for ResNets, ``features`` for VGG/EfficientNet/ConvNeXt,
the head for EfficientNet-Lite0 — or, for vision transformers, the last encoder block's tokens
reshaped onto their patch grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engine.jobs import JobError


def _token_grid(tokens: torch.Tensor) -> torch.Tensor | None:
    """(N, 1 + H*W, C) or (N, H*W, C) transformer tokens → (N, C, H, W), or None."""
    if tokens.dim() != 3:
        return None
    count = tokens.shape[1]
    for skip in (1, 0):
        side = math.isqrt(count - skip)
        if side > 1 and side * side == count - skip:
            return tokens[:, skip:].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    return None


def find_target_layer(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, bool]:
    """(layer, is_tokens): the last module giving a feature map, found by one probing forward."""
    finished: list[tuple[nn.Module, tuple]] = []

    def record(module, _inputs, output):
        finished.append((module, tuple(output.shape) if isinstance(output, torch.Tensor) else ()))

    hooks = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    attention = [i for i, (m, _) in enumerate(finished) if isinstance(m, nn.MultiheadAttention)]
    maps = [i for i, (_, shape) in enumerate(finished)
            if len(shape) == 4 and shape[2] > 1 and shape[3] > 1 and shape[1] >= shape[3]]
    if maps and (not attention or maps[-1] > attention[-1]):
        return finished[maps[-1]][0], False
    # Vision transformers classify from the class token, so take the tokens entering the last
    # attention layer (its LayerNorm): their gradients flow through attention to every patch.
    last = attention[-1] if attention else len(finished)
    for module, shape in reversed(finished[:last]):
        if len(shape) == 3 and _token_grid(torch.empty(1, shape[1], 1)) is not None:
            return module, True
    raise JobError("Grad-CAM needs a layer that keeps the image's layout (a convolution's map "
                   "or a vision transformer's patch tokens); this model has none")


class GradCam:
    """Grad-CAM for one model; the target layer is looked up once and reused."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._target: tuple[nn.Module, bool] | None = None

    def __call__(self, batch: torch.Tensor, class_index: int) -> np.ndarray:
        """Heatmap for ``class_index`` on a (1, 3, H, W) input: float32 HxW in [0, 1]."""
        if self._target is None:
            self._target = find_target_layer(self.model, batch)
        layer, is_tokens = self._target
        captured: dict[str, torch.Tensor] = {}

        def keep(_module, _inputs, output):
            output = output[0] if isinstance(output, tuple) else output
            captured["act"] = output
            output.register_hook(lambda grad: captured.__setitem__("grad", grad))

        handle = layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                inputs = batch.detach().requires_grad_(True)  # makes the graph reach every layer
                logits = self.model(inputs)
                self.model.zero_grad(set_to_none=True)
                logits[0, class_index].backward()
        finally:
            handle.remove()
            # the weights' gradients are a second copy of the model (GBs on a GPU for the
            # large nets); only the captured one is needed
            self.model.zero_grad(set_to_none=True)
        act, grad = captured["act"].detach(), captured["grad"].detach()
        if is_tokens:
            act, grad = _token_grid(act), _token_grid(grad)
        act, grad = act.float(), grad.float()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
        cam = nn.functional.interpolate(cam, size=batch.shape[-2:], mode="bilinear",
                                        align_corners=False)[0, 0]
        top = cam.max()
        cam = cam / top if top > 0 else torch.zeros_like(cam)
        return cam.clamp_(0, 1).cpu().numpy().astype(np.float32)
