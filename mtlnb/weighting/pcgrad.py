"""PCGrad, gradient surgery (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import GradientWeighting, check_option, register


@register
class PCGrad(GradientWeighting):
    """Yu et al. 2020: each gᵢ is projected, in a random order of the others, off every original gⱼ it conflicts with.

    gᵢ' ← gᵢ' − (gᵢ'·gⱼ / ‖gⱼ‖²) gⱼ whenever gᵢ'·gⱼ < 0; the update is Σ gᵢ'. The order is
    drawn from `generator` (or `seed`); `order="fixed"` uses the task order instead.
    """

    name = "pcgrad"
    paper = "Yu et al., Gradient surgery for multi-task learning, NeurIPS 2020"

    def __init__(
        self,
        tasks: int | Sequence[str],
        seed: int | None = None,
        generator: torch.Generator | None = None,
        order: str = "random",
    ) -> None:
        super().__init__(tasks)
        check_option(self.name, "order", order, lambda v: v in ("random", "fixed"), "'random' or 'fixed'")
        self.order = order
        self.generator = generator or torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        k = len(gramian)
        combination = np.eye(k)  # row i: gᵢ' as a combination of the original gradients
        for i in range(k):
            order = range(k) if self.order == "fixed" else torch.randperm(k, generator=self.generator).tolist()
            for j in order:
                if j == i or gramian[j, j] <= 0:
                    continue
                dot = combination[i] @ gramian[:, j]
                if dot < 0:
                    combination[i, j] -= dot / gramian[j, j]
        return combination.sum(0)

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
