"""Random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import LossWeighting, check_option, register


@register
class RandomLossWeighting(LossWeighting):
    """Lin et al. 2021 (RLW): each step, weights = softmax(z) with z ~ N(0, I); reproducible from `seed`."""

    name = "rlw"
    paper = "Lin et al., Reasonable effectiveness of random weighting: a litmus test for multi-task learning, TMLR 2022"

    def __init__(
        self, tasks: int | Sequence[str], seed: int | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "seed",
            seed,
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
            "an int or None",
        )
        self.generator = generator or torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.randn(self.num_tasks, generator=self.generator), dim=0).to(losses)

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
