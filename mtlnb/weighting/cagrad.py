"""CAGrad, conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._checks import is_non_negative
from ._solvers import cagrad_weights
from .base import GradientWeighting, check_option, register


@register
class CAGrad(GradientWeighting):
    """Liu et al. 2021: d = g₀ + (√φ / ‖g_w‖) g_w, w = argmin over the simplex of g_wᵀg₀ + √φ‖g_w‖, φ = c²‖g₀‖².

    g₀ is the mean gradient. `rescale=True` divides by 1 + c² (LibMTL's default, not the paper's).
    """

    name = "cagrad"
    paper = "Liu et al., Conflict-averse gradient descent for multi-task learning, NeurIPS 2021"

    def __init__(self, tasks: int | Sequence[str], c: float = 0.5, rescale: bool = False) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "c",
            c,
            is_non_negative,
            "a non-negative float",
        )
        self.c, self.rescale = float(c), bool(rescale)
        self._previous: np.ndarray | None = None  # the last step's w: where the solver starts

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        k = len(gramian)
        mean = np.full(k, 1.0 / k)
        w = cagrad_weights(gramian, self.c, start=self._previous)
        self._previous = w
        norm_gw = math.sqrt(max(w @ gramian @ w, 0.0))
        norm_g0 = math.sqrt(max(mean @ gramian @ mean, 0.0))
        coefficients = mean + (self.c * norm_g0 / norm_gw) * w if norm_gw > 0 else mean
        return coefficients / (1 + self.c**2) if self.rescale else coefficients
