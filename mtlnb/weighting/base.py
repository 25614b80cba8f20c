"""One interface for every weighting strategy: per-task losses in, gradients ready for `optimizer.step()` out.

Two families share it:
- `LossWeighting`: weights the losses (fixed, learned, or computed from loss
  history), then one backward pass of the weighted sum;
- `GradientWeighting`: computes each task's gradient of the shared parameters,
  combines them through coefficients that depend only on the task Gramian
  (G = J Jᵀ), and writes the combined gradient.

Both honour per-task multipliers (a notebook slider): the effective weight of a
task is its multiplier times what the strategy computes, and a multiplier of 0
leaves the task out of the step entirely, so its gradient reaches no parameter.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from .. import distributed
from .._checks import non_negative
from ..errors import MTLError

__all__ = ["GradientWeighting", "LossWeighting", "Weighting", "register"]

Losses = Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | torch.Tensor

REGISTRY: dict[str, type[Weighting]] = {}


def register(cls: type[Weighting]) -> type[Weighting]:
    """Class decorator: make a strategy available under `cls.name` to `mtlnb.weighting.get`.

    Its instances also keep the options they were built with in `built_with` (plain
    data only: a generator's state is in `state_dict()`), so that a checkpoint can
    rebuild the same strategy for a model that does not have it yet.
    """
    build = cls.__init__
    signature = inspect.signature(build)

    @functools.wraps(build)
    def __init__(self: Weighting, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        given = signature.bind(self, *args, **kwargs).arguments
        # A registered subclass's __init__ returns last: its own options win.
        self.built_with = {
            key: plain
            for key, value in given.items()
            if key not in ("self", "tasks") and (plain := _plain(value)) is not _UNSAVED
        }

    cls.__init__ = __init__
    REGISTRY[cls.name] = cls
    return cls


_UNSAVED = object()


def _plain(value: Any) -> Any:
    """`value` as data a checkpoint holds (numbers, strings, lists of them), else _UNSAVED."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_plain(item) for item in value]
        return _UNSAVED if any(item is _UNSAVED for item in items) else items
    return _UNSAVED


class Weighting(nn.Module):
    """Base of every strategy. `backward(losses)` leaves the gradients of one step in `.grad`."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, tasks: int | Sequence[str]) -> None:
        super().__init__()
        if isinstance(tasks, int) and not isinstance(tasks, bool):
            if tasks < 1:
                raise MTLError(f"{type(self).__name__}: `tasks` should be a positive number of tasks. Found {tasks}.")
            names = [f"task{i}" for i in range(tasks)]
        elif (
            isinstance(tasks, Sequence)
            and not isinstance(tasks, str)
            and tasks
            and all(isinstance(t, str) for t in tasks)
        ):
            names = list(tasks)
        else:
            raise MTLError(
                f"{type(self).__name__}: `tasks` should be a number of tasks or a list of task names. Found {tasks!r}."
            )
        self.task_names: tuple[str, ...] = tuple(names)
        self.register_buffer("multipliers", torch.ones(len(names)))
        # The effective weights of the last step, after multipliers (NaN before the first step).
        self.register_buffer("weights", torch.full((len(names),), math.nan))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    # ------------------------------------------------------------ user controls

    def task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.task_names:
                raise MTLError(f"unknown task {task!r}; the tasks are {list(self.task_names)}")
            return self.task_names.index(task)
        if isinstance(task, int) and not isinstance(task, bool) and -self.num_tasks <= task < self.num_tasks:
            return task % self.num_tasks
        raise MTLError(
            f"task should be a name in {list(self.task_names)} or an index below {self.num_tasks}. Found {task!r}."
        )

    def set_multiplier(self, task: int | str, value: float) -> None:
        """Scale a task's effective weight by `value` >= 0 from the next step on; 0 mutes the task."""
        index = self.task_index(task)
        self.multipliers[index] = non_negative(f"the multiplier of task {self.task_names[index]!r}", value)

    # ------------------------------------------------------------ the step

    def backward(self, losses: Losses, shared_parameters: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        """Accumulate this step's gradients into `.grad`; return the (detached) weighted total for logging."""
        raise NotImplementedError

    def _loss_list(self, losses: Losses) -> list[torch.Tensor]:
        """The losses as a list in task order, each a scalar tensor; a clear error otherwise."""
        if isinstance(losses, Mapping):
            missing = [n for n in self.task_names if n not in losses]
            if missing:
                raise MTLError(f"{self.name}: losses has no entry for tasks {missing}; it has {list(losses)}")
            items = [losses[n] for n in self.task_names]
        elif isinstance(losses, torch.Tensor):
            items = list(losses.reshape(-1)) if losses.dim() <= 1 else [losses]
        else:
            items = list(losses)
        if len(items) != self.num_tasks:
            raise MTLError(
                f"{self.name}: expected {self.num_tasks} losses (tasks {list(self.task_names)}), got {len(items)}"
            )
        for name, loss in zip(self.task_names, items, strict=True):
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise MTLError(f"{self.name}: the loss of task {name!r} should be a scalar tensor; got {loss!r:.80}")
        return [loss.reshape(()) for loss in items]

    def _active(self) -> list[int]:
        active = [i for i, m in enumerate(self.multipliers.tolist()) if m > 0]
        if not active:
            raise MTLError(f"{self.name}: every task is muted (all multipliers are 0); unmute one to train")
        return active

    def extra_repr(self) -> str:
        return f"tasks={list(self.task_names)}"


class LossWeighting(Weighting):
    """Weights on the losses: `backward` runs once through `Σ multiplier_i · weight_i · L_i` (+ any extra term)."""

    def weighted_loss(self, losses: Losses) -> torch.Tensor:
        """The differentiable total of this step (for loops that call backward themselves, e.g. with AMP)."""
        items = self._loss_list(losses)
        active = self._active()
        detached = torch.stack([loss.detach() for loss in items])
        distributed.average_([detached])  # under torchrun: weights from the full batch's losses, alike on all ranks
        weights = self.compute_weights(detached)
        multipliers = self.multipliers.to(weights)
        total = None
        for i in active:
            term = self.task_term(i, items[i], multipliers[i] * weights[i])
            total = term if total is None else total + term
        self.weights.copy_(torch.where(self.multipliers > 0, multipliers * weights.detach(), 0.0))
        return total

    def backward(self, losses: Losses, shared_parameters: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        total = self.weighted_loss(losses)
        total.backward()
        return total.detach()

    def compute_weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Per-task weights for this step from the detached losses, shape (tasks,)."""
        raise NotImplementedError

    def task_term(self, index: int, loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """What task `index` adds to the total; `weight` already includes its multiplier."""
        return weight * loss


class GradientWeighting(Weighting):
    """A combination `Σ c_i g_i` of the task gradients of the shared parameters, `c` computed from the Gramian."""

    def coefficients(self, gramian: Any) -> Any:
        """Coefficients c (k,) from the k×k Gramian of the active tasks' gradients (numpy float64)."""
        raise NotImplementedError

    def aggregate(self, grads: torch.Tensor) -> torch.Tensor:
        """The combination step alone: a (tasks, params) gradient matrix to the combined (params,) gradient."""
        if grads.dim() != 2 or grads.shape[0] != self.num_tasks:
            raise MTLError(
                f"{self.name}.aggregate: expected a ({self.num_tasks}, params) matrix, got shape {tuple(grads.shape)}"
            )
        active = self._active()
        rows = grads[active]
        effective = self._effective(rows @ rows.T, active)
        return effective.to(grads) @ rows

    def _effective(self, gramian: torch.Tensor, active: list[int]) -> torch.Tensor:
        """Multiplier × coefficient per active task, from the active tasks' Gramian (float64)."""
        coefficients = torch.as_tensor(self.coefficients(gramian.double().cpu().numpy()), dtype=torch.float64)
        return self.multipliers[active].double() * coefficients

    def backward(self, losses: Losses, shared_parameters: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        from ._autograd import per_task_gradients

        items = self._loss_list(losses)
        active = self._active()
        gradients = per_task_gradients([items[i] for i in active], shared_parameters)
        effective = self._effective(gradients.gramian(), active)
        gradients.combine_into_grad(effective)
        weights = torch.zeros(self.num_tasks, dtype=torch.float64)
        weights[active] = effective
        self.weights.copy_(weights)
        return sum(
            float(w) * loss.detach()
            for w, loss in zip(weights[active].tolist(), [items[i] for i in active], strict=True)
        )


def check_option(strategy: str, option: str, value: Any, valid: Callable[[Any], bool], expected: str) -> None:
    """TorchJD-style option check: 'Parameter `c` should be a non-negative float. Found `c = -1`.'"""
    if not valid(value):
        raise MTLError(f"{strategy}: parameter `{option}` should be {expected}. Found `{option} = {value!r}`.")
