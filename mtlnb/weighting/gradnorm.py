"""GradNorm (Chen et al., ICML 2018)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .. import distributed
from .._checks import is_non_negative
from ._autograd import task_gradient_norms
from .base import Losses, LossWeighting, check_option, register


@register
class GradNorm(LossWeighting):
    """Chen et al. 2018: learned weights wᵢ (Σwᵢ = K) pulled so that ‖∇_W wᵢLᵢ‖ ≈ mean norm · rᵢ^α.

    rᵢ is task i's loss relative to its first loss, over the mean of those ratios. The paper
    takes W = the last shared layer: pass its parameters as `shared_parameters` (all
    shared parameters work too, at the cost of a backward pass per task through them).
    The wᵢ are parameters of this module: give them to your optimizer; their gradient comes
    from the GradNorm objective only, never from the task losses.
    """

    name = "gradnorm"
    paper = "Chen et al., GradNorm: gradient normalization for adaptive loss balancing, ICML 2018"

    def __init__(self, tasks: int | Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(tasks)
        check_option(
            self.name,
            "alpha",
            alpha,
            is_non_negative,
            "a non-negative float",
        )
        self.alpha = float(alpha)
        self.loss_scales = nn.Parameter(torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.full((self.num_tasks,), math.nan))

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        return self.loss_scales.detach().to(losses)

    def backward(self, losses: Losses, shared_parameters: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        with torch.no_grad():  # the paper's renormalisation, after the optimizer moved the weights
            self.loss_scales.clamp_(min=1e-6).mul_(self.num_tasks / self.loss_scales.sum())
        items = self._loss_list(losses)
        active = self._active()
        detached = torch.stack([loss.detach() for loss in items]).float().cpu()
        distributed.average_([detached])  # under torchrun: the full batch's losses on every rank
        if any(math.isnan(v) for v in self.initial_losses.tolist()):
            self.initial_losses.copy_(detached)
        norms = task_gradient_norms([items[i] for i in active], shared_parameters, retain_graph=True)
        # The rest is arithmetic on k numbers: plain floats (as tensor ops, it cost 5% of the step).
        scales, now, first = (t.tolist() for t in (self.loss_scales.detach(), detached, self.initial_losses))
        weighted_norms = [scales[i] * n for i, n in zip(active, norms, strict=True)]
        ratios = [now[i] / first[i] for i in active]
        mean_norm, mean_ratio = sum(weighted_norms) / len(active), sum(ratios) / len(active)
        grad = [0.0] * self.num_tasks
        for i, n, weighted, ratio in zip(active, norms, weighted_norms, ratios, strict=True):
            target = mean_norm * (ratio / mean_ratio) ** self.alpha
            grad[i] = math.copysign(n, weighted - target) if weighted != target else 0.0  # d|wᵢnᵢ − target|/dwᵢ
        grad = torch.tensor(grad, dtype=self.loss_scales.dtype, device=self.loss_scales.device)
        self.loss_scales.grad = grad if self.loss_scales.grad is None else self.loss_scales.grad + grad
        total = self.weighted_loss(items)
        total.backward()
        return total.detach()
