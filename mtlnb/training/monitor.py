"""`LoopMonitor`: the Trainer's history, controls and dashboard for a training loop of your own.

Your loop calls `monitor.log(losses)` once per step; the monitor records the step,
then applies what the user changed meanwhile (weights, mute, learning rate, pause,
stop) so that it holds from the next step on. Read `monitor.weights` to weight your
losses, or pass your `weighting` strategy and the monitor sets its multipliers.

A loop that runs in its notebook cell blocks the kernel: the dashboard's plots still
update (they are drawn from another thread), but no slider move reaches Python until
the cell ends. The monitor notices that (`blocking`) and the dashboard says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import MTLError
from ..outputs import Output, Update, step_outputs
from .controls import Change, Controls, multiplier_after
from .history import History


class LoopMonitor:
    """History and live controls for `tasks` (names, or an MTLModel's loss tasks), fed by your loop."""

    def __init__(
        self,
        tasks: Sequence[str] | Any,
        weighting: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        total_steps: int | None = None,
    ) -> None:
        names = list(tasks.loss_tasks) if hasattr(tasks, "loss_tasks") else list(tasks)
        if not names or not all(isinstance(n, str) for n in names):
            raise MTLError(f"LoopMonitor needs the task names (or an MTLModel); got {tasks!r}")
        self.task_names = tuple(names)
        self.model = tasks if hasattr(tasks, "loss_tasks") else None  # drawn by the dashboard when known
        self.weighting, self.optimizer = weighting, optimizer
        self.total_steps = total_steps
        self.controls = Controls(self.task_names)
        self.history = History(self.task_names)
        self.outputs: list[Output] = []
        self.step = 0
        self.state = "idle"
        self.error: BaseException | None = None
        self.blocking = False  # True once `log` was called from the kernel's main thread
        self._multipliers = [1.0] * len(names)
        self._unmuted: dict[str, float] = {}
        self._last = time.perf_counter()

    # ------------------------------------------------------------ read by your loop

    @property
    def weights(self) -> dict[str, float]:
        """The multiplier of each task now (1.0 unless the user changed it; 0 when muted)."""
        source = self.weighting.multipliers.tolist() if self.weighting is not None else self._multipliers
        return dict(zip(self.task_names, source, strict=True))

    multipliers = weights  # the name the Trainer and the dashboard use

    @property
    def lr(self) -> float | None:
        return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None

    @property
    def stopping(self) -> bool:
        return self.controls.stopping

    @property
    def status(self) -> str:
        return f"{self.state} at step {self.step}"

    # ------------------------------------------------------------ steering (any thread), as on a Trainer

    def set_weight(self, task: str, value: float) -> None:
        self.controls.set_weight(task, value)

    def mute(self, task: str) -> None:
        self.controls.mute(task)

    def unmute(self, task: str) -> None:
        self.controls.unmute(task)

    def set_lr(self, value: float) -> None:
        if self.optimizer is None:
            raise MTLError("this LoopMonitor has no optimizer: pass optimizer= to let it set the learning rate")
        self.controls.set_lr(value)

    def pause(self) -> None:
        """Hold your loop inside its next `log` call until `resume()` (only reachable if the loop runs in a thread)."""
        self.controls.pause()

    def resume(self) -> None:
        self.controls.resume()

    def stop(self) -> None:
        """Make the next `log` return False: your loop ends at its step boundary."""
        self.controls.stop()

    # ------------------------------------------------------------ called by your loop

    def log(self, losses: Sequence[Any] | Mapping[str, Any], total: float | None = None) -> bool:
        """Record this step's raw task losses; apply pending changes for the next step. False once stop was asked."""
        values = self._values(losses)
        if self.state != "running" and self.state != "paused":  # the first step of a run (a cell run again, too)
            if self.state != "idle":
                self.controls.reset()  # a Stop of the last run does not end this one
            self.state = "running"
            self.blocking = threading.current_thread() is threading.main_thread()
            self._send(Update("start", self.step, {"state": self.state}, self.total_steps))
        multipliers = list(self.weights.values())
        weights = self.weighting.weights.tolist() if self.weighting is not None else multipliers
        now = time.perf_counter()
        lr = self.lr if self.lr is not None else math.nan
        shown_total = total if total is not None else sum(w * v for w, v in zip(weights, values, strict=True))
        self.history.log(self.step, float(shown_total), lr, now - self._last, values, weights)
        self._last = now
        self.step += 1
        for change in self.controls.take():
            self._apply(change)
        if self.controls.paused and not self.controls.stopping:
            self.state = "paused"
            self._send(Update("event", self.step, {"kind": "pause", "state": "paused"}))
            self.controls.wait_while_paused()
            for change in self.controls.take():
                self._apply(change)
            self.state = "running"
        watching = step_outputs(self.outputs)
        if watching:
            update = Update("step", self.step, {"losses": dict(zip(self.task_names, values, strict=True))})
            for output in watching:
                output.send(update)
        if self.controls.stopping:
            self.finish("stopped")
            return False
        return True

    def _values(self, losses: Sequence[Any] | Mapping[str, Any]) -> list[float]:
        """The raw losses as floats in task order; a clear error for what is not one scalar a task."""
        if isinstance(losses, Mapping):
            missing = [n for n in self.task_names if n not in losses]
            if missing:
                raise MTLError(
                    f"log: no loss for tasks {missing}; got keys {list(losses)}, expected {list(self.task_names)}"
                )
            items = [losses[n] for n in self.task_names]
        else:
            items = list(losses)
        if len(items) != len(self.task_names):
            raise MTLError(
                f"log: expected {len(self.task_names)} losses (tasks {list(self.task_names)}), got {len(items)}"
            )
        values = []
        for name, value in zip(self.task_names, items, strict=True):
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                raise MTLError(
                    f"log: the loss of task {name!r} should be one number; got a tensor of shape {tuple(value.shape)} "
                    "(reduce it, e.g. with .mean())"
                )
            try:
                values.append(float(value.detach()) if isinstance(value, torch.Tensor) else float(value))
            except (TypeError, ValueError):
                raise MTLError(f"log: the loss of task {name!r} should be a number; got {value!r}") from None
        return values

    def finish(self, state: str = "done") -> None:
        """Tell the outputs (the dashboard) that your loop has ended, so they draw the last frame."""
        if self.state in ("done", "stopped"):
            return
        self.state = state
        self._send(Update("end", self.step, {"state": state, "error": None}))

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
        event = self.history.log_event(self.step, change.kind, change.task, value)
        self._send(Update("event", self.step, event))

    def _send(self, update: Update) -> None:
        for output in self.outputs:
            output.send(update)
