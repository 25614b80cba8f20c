"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import is_real
from .base import LossWeighting, check_option, register


@register
class Uncertainty(LossWeighting):
    """Kendall et al. 2018: L = Σ exp(-sᵢ)·Lᵢ + sᵢ with learned sᵢ = log σᵢ²; the weight is exp(-sᵢ).

    The sᵢ are parameters of this module: give them to your optimizer
    (`[*model.parameters(), *weighting.parameters()]`). At the optimum exp(sᵢ) = Lᵢ,
    so for a mean squared error σᵢ = √exp(sᵢ) is the task's residual standard deviation.
    """

    name = "uncertainty"
    paper = "Kendall, Gal & Cipolla, Multi-task learning using uncertainty to weigh losses, CVPR 2018"

    def __init__(self, tasks: int | Sequence[str], init: float = 0.0) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "init",
            init,
            is_real,
            "a finite float (the starting log-variance s)",
        )
        self.log_vars = nn.Parameter(torch.full((self.num_tasks,), float(init)))

    @property
    def sigmas(self) -> torch.Tensor:
        """σᵢ = √exp(sᵢ): for a mean squared error, the learned residual standard deviation."""
        return torch.exp(0.5 * self.log_vars.detach())

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.log_vars).to(losses.dtype)

    def task_term(self, index: int, loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * loss + self.multipliers[index] * self.log_vars[index]
