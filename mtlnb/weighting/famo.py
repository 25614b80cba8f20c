"""FAMO, fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch

from .._checks import is_non_negative, is_positive
from .base import LossWeighting, check_option, register


@register
class FAMO(LossWeighting):
    """Liu et al. 2023: task logits ξ, z = softmax(ξ); the step follows Σ zᵢ log(Lᵢ − minᵢ) / c.

    ξ is updated from how much each task's log-loss fell since the previous step (the
    previous call's losses stand in for the paper's second forward pass, as LibMTL does),
    by its own Adam (lr `w_lr`, weight decay `gamma`): it needs no place in your optimizer.
    The effective weight of task i is zᵢ / (c·(Lᵢ − minᵢ)).
    """

    name = "famo"
    paper = "Liu et al., FAMO: fast adaptive multitask optimization, NeurIPS 2023"

    def __init__(
        self,
        tasks: int | Sequence[str],
        gamma: float = 0.01,
        w_lr: float = 0.025,
        min_losses: Sequence[float] | None = None,
    ) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "gamma",
            gamma,
            is_non_negative,
            "a non-negative float",
        )
        check_option(
            self.name,
            "w_lr",
            w_lr,
            is_positive,
            "a positive float",
        )
        minimum = [0.0] * self.num_tasks if min_losses is None else list(min_losses)
        check_option(
            self.name,
            "min_losses",
            min_losses,
            lambda _: len(minimum) == self.num_tasks,
            f"a list of {self.num_tasks} floats",
        )
        self.register_buffer("min_losses", torch.tensor(minimum, dtype=torch.float64))
        self.register_buffer("previous_losses", torch.full((self.num_tasks,), math.nan, dtype=torch.float64))
        self._logits = torch.zeros(self.num_tasks, dtype=torch.float64, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._logits], lr=w_lr, weight_decay=gamma)

    def _log_gap(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.log(losses - self.min_losses + 1e-8)

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        current = losses.double().cpu()
        active = self.multipliers.cpu() > 0  # a muted task must not move the others' weights
        if not torch.where(active, self.previous_losses, 0.0).isnan().any():  # a muted task's loss may be NaN
            delta = torch.where(active, self._log_gap(self.previous_losses) - self._log_gap(current), 0.0)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(torch.softmax(self._logits, 0), self._logits, grad_outputs=delta)
            self._optimizer.zero_grad()
            self._logits.grad = grad
            self._optimizer.step()
        self.previous_losses.copy_(current)
        z = torch.softmax(self._logits.detach().masked_fill(~active, -math.inf), 0)
        gaps = current - self.min_losses + 1e-8
        shares = torch.where(active, z / gaps, 0.0)
        return (shares / shares.sum()).to(losses)  # zᵢ / (c·gapᵢ) with c = Σ zⱼ / gapⱼ

    def get_extra_state(self) -> dict[str, Any]:
        # A snapshot: the optimizer's state dict holds references to tensors it updates in place.
        return {"logits": self._logits.detach().clone(), "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self._logits.copy_(state["logits"])
        self._optimizer.load_state_dict(state["optimizer"])
