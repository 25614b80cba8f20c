"""A small hard-parameter-sharing problem every weighting test trains on."""

from __future__ import annotations

import torch
from torch import nn

import mtlnb.weighting as weighting

TASKS = 3
# Strategies whose weights are not a function of the tasks alone: a random draw each step.
RANDOM = {"rlw", "pcgrad"}


class HardSharing(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(5, 16), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(TASKS))

    def losses(self, x: torch.Tensor, ys: list[torch.Tensor], order: list[int] | None = None) -> list[torch.Tensor]:
        z = self.trunk(x)
        losses = [nn.functional.mse_loss(head(z), y) for head, y in zip(self.heads, ys)]
        return [losses[i] for i in order] if order else losses


def batch(seed: int = 0, n: int = 32) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    # Conflicting targets on different scales, so the strategies have something to balance.
    ys = [x[:, :1] * 3, -x[:, :1] + 0.5 * x[:, 1:2], 10 * torch.sin(x[:, 2:3])]
    return x, ys


def build(name: str, tasks=TASKS, seed: int = 0):
    kwargs = {"seed": seed} if name in RANDOM else {}
    return weighting.get(name, tasks=tasks, **kwargs)


def train(name: str, steps: int, strategy=None, model=None, order=None, seed: int = 0):
    """A few SGD steps; returns (model, strategy, last weights)."""
    model = model or HardSharing(seed)
    strategy = strategy or build(name)
    optimizer = torch.optim.SGD([*model.parameters(), *strategy.parameters()], lr=0.01)
    for step in range(steps):
        x, ys = batch(step)
        optimizer.zero_grad()
        strategy.backward(model.losses(x, ys, order), shared_parameters=model.trunk.parameters())
        optimizer.step()
    return model, strategy
