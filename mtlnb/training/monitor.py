"""`LoopMonitor`: the Trainer's history and controls for a training loop of your own.

Your loop calls `monitor.log(losses)` once per step; the monitor records the step,
then applies what the user changed meanwhile (weights, mute, learning rate, stop)
so that it holds from the next step on. Read `monitor.weights` to weight your
losses, or pass your `weighting` strategy and the monitor sets its multipliers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import MTLError
from .controls import Change, Controls, multiplier_after
from .history import History


class LoopMonitor:
    """History and live controls for `tasks` (names, or an MTLModel's loss tasks), fed by your loop."""

    def __init__(
        self, tasks: Sequence[str] | Any, weighting: Any = None, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        names = list(tasks.loss_tasks) if hasattr(tasks, "loss_tasks") else list(tasks)
        if not names or not all(isinstance(n, str) for n in names):
            raise MTLError(f"LoopMonitor needs the task names (or an MTLModel); got {tasks!r}")
        self.task_names = tuple(names)
        self.weighting, self.optimizer = weighting, optimizer
        self.controls = Controls(self.task_names)
        self.history = History(self.task_names)
        self.step = 0
        self._multipliers = [1.0] * len(names)
        self._unmuted: dict[str, float] = {}
        self._last = time.perf_counter()

    @property
    def weights(self) -> dict[str, float]:
        """The multiplier of each task now (1.0 unless the user changed it; 0 when muted)."""
        source = self.weighting.multipliers.tolist() if self.weighting is not None else self._multipliers
        return dict(zip(self.task_names, source, strict=True))

    @property
    def stopping(self) -> bool:
        return self.controls.stopping

    def log(self, losses: Sequence[Any] | Mapping[str, Any], total: float | None = None) -> bool:
        """Record this step's raw task losses; apply pending changes for the next step. False once stop was asked."""
        items = [losses[n] for n in self.task_names] if isinstance(losses, Mapping) else list(losses)
        values = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in items]
        if len(values) != len(self.task_names):
            raise MTLError(f"expected {len(self.task_names)} losses (tasks {list(self.task_names)}), got {len(values)}")
        multipliers = list(self.weights.values())
        weights = self.weighting.weights.tolist() if self.weighting is not None else multipliers
        now = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else math.nan
        shown_total = total if total is not None else sum(w * v for w, v in zip(weights, values, strict=True))
        self.history.log(self.step, float(shown_total), lr, now - self._last, values, weights)
        self._last = now
        self.step += 1
        for change in self.controls.take():
            self._apply(change)
        return not self.controls.stopping

    def _apply(self, change: Change) -> None:
        if change.kind in ("weight", "mute", "unmute"):
            index = self.task_names.index(change.task)
            value = multiplier_after(change, self.weights[change.task], self._unmuted)
            if self.weighting is not None:
                self.weighting.set_multiplier(index, value)
            else:
                self._multipliers[index] = value
        else:
            value = change.value
            if change.kind == "lr" and self.optimizer is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = value
        self.history.log_event(self.step, change.kind, change.task, value)
