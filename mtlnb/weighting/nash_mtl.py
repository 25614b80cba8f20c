"""Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._checks import is_positive_int
from ._solvers import nash_bargaining
from .base import GradientWeighting, check_option, register


@register
class NashMTL(GradientWeighting):
    """Navon et al. 2022: d = Σ αᵢgᵢ with α > 0 solving (Gα)ᵢ = 1/αᵢ, the Nash bargaining solution.

    Solved by Newton's method on ½αᵀGα − Σ log αᵢ (the paper uses a sequence of convex
    programs). `update_every` > 1 reuses α between solves, as the paper does for speed.
    """

    name = "nash_mtl"
    paper = "Navon et al., Multi-task learning as a bargaining game, ICML 2022"

    def __init__(self, tasks: int | Sequence[str], update_every: int = 1) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "update_every",
            update_every,
            is_positive_int,
            "a positive int",
        )
        self.update_every = update_every
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha", torch.zeros(self.num_tasks, dtype=torch.float64))

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        k = len(gramian)
        if int(self.steps) % self.update_every == 0 or len(self.alpha) != k:
            alpha = nash_bargaining(gramian)
            if k == self.num_tasks:
                self.alpha.copy_(torch.as_tensor(alpha))
        else:
            alpha = self.alpha.numpy()
        self.steps += 1
        return alpha
