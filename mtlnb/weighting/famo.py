"""FAMO, fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.adam import adam
from torch.torch_version import TorchVersion

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
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        # ξ and its Adam state are buffers: in state_dict(), so a checkpoint resumes FAMO exactly.
        for buffer in ("logits", "logits_exp_avg", "logits_exp_avg_sq"):
            self.register_buffer(buffer, torch.zeros(self.num_tasks, dtype=torch.float64))
        self.register_buffer("logits_steps", torch.zeros((), dtype=torch.float64))

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        # The arithmetic is on k plain floats: as some twenty tensor ops on k-vectors, with ξ in a
        # torch.optim.Adam, FAMO cost 1.15x a fixed step in benchmarks/bench_weighting.py.
        current = losses.tolist()
        minimum, previous = self.min_losses.tolist(), self.previous_losses.tolist()
        active = [m > 0 for m in self.multipliers.tolist()]  # a muted task must not move the others' weights
        if not any(active):
            self._active()  # its clear error: every task is muted
        if not any(a and math.isnan(p) for a, p in zip(active, previous, strict=True)):  # a muted loss may be NaN
            drop = [
                _log(p - m + 1e-8) - _log(c - m + 1e-8) if a else 0.0
                for a, p, c, m in zip(active, previous, current, minimum, strict=True)
            ]
            z = _softmax(self.logits.tolist())
            mean_drop = sum(zi * d for zi, d in zip(z, drop, strict=True))
            # (∂z/∂ξ)ᵀ·drop for z = softmax(ξ): zᵢ(dropᵢ − Σⱼ zⱼdropⱼ)
            grad = [zi * (d - mean_drop) for zi, d in zip(z, drop, strict=True)]
            self._adam_step(torch.tensor(grad, dtype=self.logits.dtype, device=self.logits.device))
        self.previous_losses.copy_(losses)
        z = _softmax(self.logits.tolist())  # a muted task's share is 0 below; the normalisation covers the rest
        shares = [zi / (c - m + 1e-8) if a else 0.0 for zi, a, c, m in zip(z, active, current, minimum, strict=True)]
        total = sum(shares)  # c = Σ zⱼ / gapⱼ: the weights are zᵢ / (c·gapᵢ)
        return torch.tensor([share / total for share in shares], dtype=losses.dtype, device=losses.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints from before ξ became buffers held ξ and a torch.optim.Adam's state dict as extra state.
        earlier = state_dict.pop(prefix + "_extra_state", None)
        if earlier is not None:
            adam_state = earlier["optimizer"]["state"].get(0, {})  # empty before the first update
            state_dict[prefix + "logits"] = earlier["logits"]
            for name in ("exp_avg", "exp_avg_sq", "step"):
                state_dict[prefix + "logits_" + ("steps" if name == "step" else name)] = adam_state.get(
                    name, torch.zeros(() if name == "step" else self.num_tasks, dtype=torch.float64)
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _adam_step(self, grad: torch.Tensor) -> None:
        """One step of torch's Adam on ξ, through its functional form (torch.optim.Adam.step's own
        machinery, for a 3-vector, cost 6% of the benchmark's step)."""
        adam(
            [self.logits], [grad], [self.logits_exp_avg], [self.logits_exp_avg_sq], [], [self.logits_steps],
            fused=_FUSED_ADAM, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.w_lr, weight_decay=self.gamma,
            eps=1e-8, maximize=False,
        )  # fmt: skip


# One kernel where torch has a fused Adam for the CPU (2.4 on); the loop before.
_FUSED_ADAM = True if TorchVersion(torch.__version__) >= (2, 4) else None


def _log(x: float) -> float:
    """math.log with torch's answers where math raises: -inf at 0, NaN below."""
    return math.log(x) if x > 0 else -math.inf if x == 0 else math.nan


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)  # shifted by the largest, for stability
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]
