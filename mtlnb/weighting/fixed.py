"""Fixed weights: the classic weighted sum of the task losses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import LossWeighting, check_option, register


@register
class Fixed(LossWeighting):
    """Given weights, equal (1.0 each) by default: L = Σ wᵢ Lᵢ."""

    name = "fixed"
    paper = "the weighted sum of losses"

    def __init__(self, tasks: int | Sequence[str], weights: Sequence[float] | None = None) -> None:
        super().__init__(tasks)
        values = [1.0] * self.num_tasks if weights is None else list(weights)
        check_option(
            self.name, "weights", weights,
            lambda _: len(values) == self.num_tasks and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values),
            f"a list of {self.num_tasks} finite numbers >= 0",
        )  # fmt: skip
        self.register_buffer("fixed_weights", torch.tensor(values, dtype=torch.float32))

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        return self.fixed_weights.to(losses)
