"""Dynamic weight averaging (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import is_positive, is_positive_int
from .base import LossWeighting, check_option, register


@register
class DynamicWeightAverage(LossWeighting):
    """Liu et al. 2019 (DWA): wᵢ = K·softmax(rᵢ/T), rᵢ = the ratio of task i's mean loss over the last two periods.

    The paper's period is an epoch; this class sees only steps, so set `period` to the
    number of steps in an epoch (1, the default, compares consecutive steps). Weights are
    1 until two periods are complete.
    """

    name = "dwa"
    paper = "Liu, Johns & Davison, End-to-end multi-task learning with attention, CVPR 2019"

    def __init__(self, tasks: int | Sequence[str], temperature: float = 2.0, period: int = 1) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "temperature",
            temperature,
            is_positive,
            "a positive float",
        )
        check_option(
            self.name,
            "period",
            period,
            is_positive_int,
            "a positive int (steps)",
        )
        self.temperature, self.period = float(temperature), period
        self.register_buffer("period_sum", torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("period_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("recent_means", torch.full((2, self.num_tasks), math.nan, dtype=torch.float64))

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        previous, last = self.recent_means
        active = self.multipliers.cpu() > 0  # the softmax runs over the tasks in play: a muted one moves no weight
        if torch.isnan(previous).any():
            weights = torch.ones(self.num_tasks, dtype=torch.float64)
        else:
            ratios = (last / previous / self.temperature).masked_fill(~active, -math.inf)
            weights = int(active.sum()) * torch.softmax(ratios, dim=0)
        self._record(losses)
        return weights.to(losses)

    def _record(self, losses: torch.Tensor) -> None:
        self.period_sum += losses.double().cpu()
        self.period_steps += 1
        if int(self.period_steps) == self.period:
            self.recent_means[0] = self.recent_means[1]
            self.recent_means[1] = self.period_sum / self.period
            self.period_sum.zero_()
            self.period_steps.zero_()
