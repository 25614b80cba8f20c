"""Changes asked for while training runs (a slider, a button, a method call from another thread).

`Controls` is their one owner: callers append under a lock, and the training loop
takes everything pending once per step, at the step boundary, so a change is in
effect from the very next optimizer step and never in the middle of one.
Invalid values are refused at the call, with nothing queued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._checks import non_negative
from ..errors import MTLError


@dataclass(frozen=True)
class Change:
    """One requested change: `kind` is weight, mute, unmute, lr or option."""

    kind: str
    task: str | None
    value: Any


class Controls:
    """Thread-safe requests for the training loop, and its pause/stop state."""

    def __init__(self, task_names: Sequence[str], option_check: Callable[[str, Any], None] | None = None) -> None:
        self.task_names = tuple(task_names)
        self._option_check = option_check
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[Change] = []
        self._paused = False
        self._stopping = False
        # True while anything waits for the loop (a change, a pause, a stop): the one attribute a
        # step reads when nothing does. Set under the lock by every request, cleared by `take`.
        self.attention = False

    # ------------------------------------------------------------ asked from any thread

    def set_weight(self, task: str, value: float) -> None:
        """Set a task's multiplier (its effective weight is multiplier × the strategy's weight); 0 mutes."""
        self._queue(Change("weight", self._task(task), non_negative(f"the weight of task {task!r}", value)))

    def mute(self, task: str) -> None:
        self._queue(Change("mute", self._task(task), None))

    def unmute(self, task: str) -> None:
        self._queue(Change("unmute", self._task(task), None))

    def set_lr(self, value: float) -> None:
        number = non_negative("the learning rate", value)
        if number == 0:
            raise MTLError("the learning rate should be a finite number > 0. Found 0.")
        self._queue(Change("lr", None, number))

    def set_option(self, name: str, value: Any) -> None:
        """Change a knob of the weighting strategy (for example CAGrad's `c`)."""
        if self._option_check is not None:
            self._option_check(name, value)
        self._queue(Change("option", name, value))

    def pause(self) -> None:
        with self._lock:
            self._paused = self.attention = True

    def resume(self) -> None:
        with self._wake:
            self._paused = False
            self._wake.notify_all()

    def stop(self) -> None:
        with self._wake:
            self._stopping = self.attention = True
            self._wake.notify_all()

    # ------------------------------------------------------------ read by the training loop

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)  # a racy read is fine: a change missed now is taken next step

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stopping

    def take(self) -> list[Change]:
        with self._lock:
            pending, self._pending = self._pending, []
            self.attention = self._paused or self._stopping
        return pending

    def wait_while_paused(self, timeout: float | None = None) -> None:
        with self._wake:
            while self._paused and not self._stopping:
                if not self._wake.wait(timeout):
                    return

    def reset(self) -> None:
        """Clear stop and pause before a new run."""
        with self._lock:
            self._stopping = False
            self._paused = False
            self.attention = bool(self._pending)

    # ------------------------------------------------------------ checks

    def _queue(self, change: Change) -> None:
        with self._lock:
            self._pending.append(change)
            self.attention = True

    def _task(self, task: str) -> str:
        if task not in self.task_names:
            raise MTLError(f"unknown task {task!r}; the tasks with a loss are {list(self.task_names)}")
        return task


def multiplier_after(change: Change, current: float, unmuted: dict[str, float]) -> float:
    """The multiplier a weight, mute or unmute change sets; `unmuted` remembers what each mute replaced."""
    fallback = current if current > 0 else 1.0
    if change.kind == "mute":
        unmuted.setdefault(change.task, fallback)
        return 0.0
    if change.kind == "unmute":
        return unmuted.pop(change.task, fallback)
    unmuted.pop(change.task, None)
    return change.value
