"""The Linear-fit models: the book's ``w * x + b`` and its small MLP."""

from __future__ import annotations

import torch
from torch import nn

from engine.fit.choices import ACTIVATION_NAMES, DEFAULT_HIDDEN, MODELS
from engine.jobs import JobError

__all__ = ["ACTIVATIONS", "DEFAULT_HIDDEN", "MODELS", "make_model", "make_mlp", "LinearModel"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


class LinearModel(nn.Module):
    """``w * x + b`` with scalar parameters starting where the book starts: w = 1, b = 0."""

    def __init__(self, w: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.b


def make_mlp(hidden: int = DEFAULT_HIDDEN, activation: str = "tanh") -> nn.Sequential:
    """The book's ``nn.Sequential(nn.Linear(1, H), nn.Tanh(), nn.Linear(H, 1))``, any activation."""
    if activation not in ACTIVATIONS:
        raise JobError(f"unknown activation '{activation}'; choose one of {', '.join(ACTIVATIONS)}")
    if not 1 <= hidden <= 4096:
        raise JobError(f"hidden size must be between 1 and 4096, got {hidden}")
    return nn.Sequential(nn.Linear(1, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, 1))


def make_model(kind: str, hidden: int = DEFAULT_HIDDEN, activation: str = "tanh",
               seed: int = 0) -> nn.Module:
    """Build a model; the MLP's random initial weights come from ``seed`` (global RNG untouched)."""
    if kind == "linear":
        return LinearModel()
    if kind == "mlp":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return make_mlp(hidden, activation)
    raise JobError(f"unknown model '{kind}'; choose one of {', '.join(MODELS)}")
