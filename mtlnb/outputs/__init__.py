"""Things that watch a training run: each has one method, `send(update)`.

The Trainer sends an `Update` at start, after every step, at each epoch end, for
every event (a control applied, a non-finite loss) and at the end. Outputs must be
cheap per step: they throttle their own printing and drawing. An output with
`wants_steps = False` (the dashboard, which reads the run's history itself) gets
no step updates: none is even built for it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = ["ConsoleProgress", "JsonLinesLogger", "Output", "Update"]


@dataclass
class Update:
    """kind: 'start', 'step', 'epoch', 'event' or 'end'; `values` depends on the kind."""

    kind: str
    step: int
    values: dict[str, Any] = field(default_factory=dict)
    total_steps: int | None = None


class Output(Protocol):
    def send(self, update: Update) -> None: ...


def step_outputs(outputs: list[Any]) -> list[Any]:
    """The outputs that take step updates (all but those with `wants_steps = False`)."""
    return [output for output in outputs if getattr(output, "wants_steps", True)]


class ConsoleProgress:
    """One self-rewriting line on a terminal: step, steps/s, ETA and the last losses (at most 5 redraws a second)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._start = self._last_draw = 0.0
        self._first_step = 0

    def send(self, update: Update) -> None:
        now = time.perf_counter()
        if update.kind == "start":
            self._start, self._first_step = now, update.step
        elif update.kind == "step" and now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(update, now)
        elif update.kind == "event":
            self.stream.write(f"\n{_describe_event(update.values)}\n")
        elif update.kind == "end":
            self._draw(update, now)
            self.stream.write(f"\n{update.values.get('state', 'done')} after {update.step} steps\n")
            self.stream.flush()

    def _draw(self, update: Update, now: float) -> None:
        done = update.step - self._first_step
        rate = done / max(now - self._start, 1e-9)
        text = f"step {update.step}"
        if update.total_steps:
            remaining = max(update.total_steps - update.step, 0) / max(rate, 1e-9)
            text += f"/{update.total_steps}  ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        text += f"  {rate:.0f} steps/s"
        losses = update.values.get("losses") or {}
        text += "".join(f"  {name} {value:.4g}" for name, value in losses.items())
        self.stream.write("\r" + text[:200].ljust(80))
        self.stream.flush()


class JsonLinesLogger:
    """Every step, event and epoch as a JSON line, written as it happens (for following a run from elsewhere)."""

    def __init__(self, path: str | Path, flush_every: float = 1.0) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        self._file: TextIO | None = None
        self._last_flush = 0.0

    def send(self, update: Update) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        record = {"type": update.kind, "step": update.step, **update.values}
        self._file.write(json.dumps(record, default=str) + "\n")
        now = time.perf_counter()
        if update.kind != "step" or now - self._last_flush >= self.flush_every:
            self._file.flush()
            self._last_flush = now
        if update.kind == "end":
            self._file.close()
            self._file = None


def _describe_event(values: dict[str, Any]) -> str:
    kind, task, value, step = values.get("kind"), values.get("task"), values.get("value"), values.get("step")
    if kind == "nonfinite":
        return f"step {step}: {values.get('message')}"
    target = f" {task}" if task else ""
    return f"step {step}: {kind}{target}" + (f" = {value}" if value is not None else "")
