"""MGDA, the multiple-gradient descent algorithm (Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import numpy as np

from ._solvers import min_norm_point
from .base import GradientWeighting, register


@register
class MGDA(GradientWeighting):
    """Sener & Koltun 2018: the exact min-norm point d of the convex hull of the task gradients.

    Solved exactly (Wolfe's algorithm on the task Gramian): d·gᵢ ≥ ‖d‖² for every task, so
    the step decreases every task's loss to first order.
    """

    name = "mgda"
    paper = "Sener & Koltun, Multi-task learning as multi-objective optimization, NeurIPS 2018"

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        return min_norm_point(gramian)
