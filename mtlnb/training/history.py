"""What happened, step by step, in bounded memory.

Recent steps are kept exactly; older ones are folded into buckets that keep each
series' minimum and maximum (so a plot of a million steps still shows every spike),
the buckets doubling in size as they fill. 10⁶ steps of 6 tasks take about 4 MB.

The training thread writes while a render thread reads: a reader takes a
`HistoryView`, one moment of the history in which every column has the same steps.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class History:
    """Per-step losses (raw and weighted), total, effective weights, learning rate and step time; events; epochs."""

    def __init__(self, task_names: Sequence[str], recent: int = 8192, archive: int = 4096) -> None:
        self.task_names = tuple(task_names)
        self.columns = (
            "total", "lr", "step_seconds",
            *(f"loss/{t}" for t in self.task_names),
            *(f"weighted/{t}" for t in self.task_names),
            *(f"weight/{t}" for t in self.task_names),
        )  # fmt: skip
        width = len(self.columns)
        # Recent rows stay Python tuples (one append a step, measured 10x cheaper inside a
        # training step than writing a numpy row); arrays are built when folding or reading.
        # A row is (step, total, lr, seconds, *losses, *weights): the weighted losses, their
        # products, are computed for all rows at once when arrays are built.
        self._capacity = max(recent, 2)
        self._rows: list[tuple[float, ...]] = []
        # Appends are atomic; a fold (archive written, then rows dropped) is not, so a fold and a
        # reader's copy take this lock. It is never taken on a step that does not fold.
        self._fold_lock = threading.Lock()
        self._folds = 0
        self._archive_copy: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._view: HistoryView | None = None
        self._low = np.full((max(archive, 2), width), math.nan)
        self._high = np.full((max(archive, 2), width), math.nan)
        self._spans = np.zeros((max(archive, 2), 2), dtype=np.int64)  # first and last step of each bucket
        self._archived = 0
        self._bucket = 1
        self.events: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.steps_logged = 0

    # ------------------------------------------------------------ writing

    def log(
        self, step: int, total: float, lr: float, seconds: float, losses: Sequence[float], weights: Sequence[float]
    ) -> None:
        self._rows.append((step, total, lr, seconds, *losses, *weights))
        self.steps_logged += 1
        if len(self._rows) >= self._capacity:
            self._fold()

    def log_event(
        self, step: int, kind: str, task: str | None = None, value: Any = None, **extra: Any
    ) -> dict[str, Any]:
        event = {"step": step, "kind": kind, "task": task, "value": value, **extra}
        self.events.append(event)
        return event

    def log_epoch(self, epoch: int, step: int, validation: dict[str, float] | None) -> None:
        self.epochs.append({"epoch": epoch, "step": step, "validation": validation})

    def _fold(self) -> None:
        """Move the oldest half of the exact rows into min/max buckets, as many buckets at once as fit."""
        with self._fold_lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        half = len(self._rows) // 2
        steps, rows = self._as_arrays(self._rows[:half])
        start = 0
        while start < half:
            if self._archived == len(self._low):
                self._merge_archive()
            bucket = self._bucket
            whole = min(len(self._low) - self._archived, (half - start) // bucket)
            if whole:  # whole buckets side by side, each reduced in one call
                end = start + whole * bucket
                blocks = rows[start:end].reshape(whole, bucket, -1)
                firsts = np.arange(start, end, bucket)
                found = _min_max(blocks, axis=1)
                count, lasts = whole, firsts + bucket - 1
            else:  # the rest, shorter than a bucket, becomes one
                end = half
                found = tuple(m[None] for m in _min_max(rows[start:end], axis=0))
                count, firsts, lasts = 1, np.array([start]), np.array([end - 1])
            span = slice(self._archived, self._archived + count)
            self._low[span], self._high[span] = found
            self._spans[span, 0], self._spans[span, 1] = steps[firsts], steps[lasts]
            self._archived += count
            start = end
        del self._rows[:half]
        self._folds += 1

    def _as_arrays(self, rows: list[tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Recent rows as an array of steps and a 2-D array of every column's values."""
        n = len(self.task_names)
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.columns)))
        table = np.array(rows, dtype=np.float64)
        losses, weights = table[:, 4 : 4 + n], table[:, 4 + n :]
        return table[:, 0].astype(np.int64), np.hstack([table[:, 1 : 4 + n], losses * weights, weights])

    def _merge_archive(self) -> None:
        """Halve the archive by merging neighbouring buckets; new buckets are twice as long."""
        n = self._archived - self._archived % 2
        self._low[: n // 2] = np.fmin(self._low[0:n:2], self._low[1:n:2])
        self._high[: n // 2] = np.fmax(self._high[0:n:2], self._high[1:n:2])
        self._spans[: n // 2] = np.stack([self._spans[0:n:2, 0], self._spans[1:n:2, 1]], axis=1)
        if n < self._archived:  # an odd bucket out moves down too
            self._low[n // 2], self._high[n // 2], self._spans[n // 2] = self._low[n], self._high[n], self._spans[n]
        self._archived = n // 2 + (self._archived - n)
        self._bucket *= 2

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self.steps_logged

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes (recent rows counted as Python tuples of floats)."""
        width = 4 + 2 * len(self.task_names)
        row = sys.getsizeof((0.0,) * width) + 24 * width
        return row * len(self._rows) + sum(a.nbytes for a in (self._low, self._high, self._spans))

    def last(self) -> dict[str, float]:
        """The most recent step's values by column, with its `step`; empty before the first step."""
        rows = self._rows  # read once: a checkpoint being loaded replaces the list
        if not rows:
            return {}
        steps, values = self._as_arrays(rows[-1:])
        return {"step": int(steps[0]), **dict(zip(self.columns, values[0].tolist(), strict=True))}

    def view(self) -> HistoryView:
        """The history as of now, unchanged by later steps: read every column of one frame from one view."""
        view = self._view  # read once: another reader may replace it meanwhile
        logged = self.steps_logged  # before the rows are copied, so the rows are at least this new
        if view is not None and view.steps_logged == logged:
            return view
        with self._fold_lock:
            rows = self._rows[:]
            if self._archive_copy is None or self._archive_copy[0] != self._folds:  # copied once a fold
                a = self._archived
                self._archive_copy = (self._folds, self._low[:a].copy(), self._high[:a].copy(), self._spans[:a].copy())
            _, low, high, spans = self._archive_copy
        steps, values = self._as_arrays(rows)
        self._view = view = HistoryView(self.columns, logged, low, high, spans, steps, values)
        return view

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one column for plotting: every bucket of old steps as its minimum and maximum."""
        return self.view().series(column)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data: exact recent steps, min/max buckets for older ones, events and epochs."""
        view = self.view()
        return {
            "task_names": list(self.task_names),
            "columns": list(self.columns),
            "steps_logged": view.steps_logged,
            "recent": {
                "step": view.steps.tolist(),
                **{c: view.values[:, j].tolist() for j, c in enumerate(self.columns)},
            },
            "decimated": {
                "first_step": view.spans[:, 0].tolist(),
                "last_step": view.spans[:, 1].tolist(),
                "min": {c: view.low[:, j].tolist() for j, c in enumerate(self.columns)},
                "max": {c: view.high[:, j].tolist() for j, c in enumerate(self.columns)},
            },
            "events": list(self.events),
            "epochs": list(self.epochs),
        }

    def to_jsonl(self, path: str | Path) -> Path:
        """One JSON object a line: decimated ranges, exact steps, events and epochs, in step order."""
        data = self.to_dict()
        lines = []
        old = data["decimated"]
        for i, (first, last) in enumerate(zip(old["first_step"], old["last_step"], strict=True)):
            lines.append({"type": "range", "first_step": first, "last_step": last,
                          "min": {c: old["min"][c][i] for c in self.columns}, "max": {c: old["max"][c][i] for c in self.columns}})  # fmt: skip
        recent = data["recent"]
        for i, step in enumerate(recent["step"]):
            lines.append({"type": "step", "step": step, **{c: recent[c][i] for c in self.columns}})
        lines += [{"type": "event", **e} for e in self.events] + [{"type": "epoch", **e} for e in self.epochs]
        path = Path(path)
        path.write_text("".join(json.dumps(line, default=_jsonable) + "\n" for line in lines), encoding="utf-8")
        return path

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        import torch

        steps, values = self._as_arrays(self._rows)
        return {
            "rows": torch.from_numpy(np.column_stack([steps.astype(np.float64), values])),
            "low": torch.from_numpy(self._low.copy()),
            "high": torch.from_numpy(self._high.copy()), "spans": torch.from_numpy(self._spans.copy()),
            "archived": self._archived, "bucket": self._bucket, "steps_logged": self.steps_logged,
            "events": json.loads(json.dumps(self.events, default=_jsonable)), "epochs": json.loads(json.dumps(self.epochs, default=_jsonable)),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._fold_lock:
            n = len(self.task_names)  # a checkpoint's rows hold every column; ours leave out the products
            self._rows = [(*row[: 4 + n], *row[4 + 2 * n :]) for row in state["rows"].tolist()]
            self._low, self._high, self._spans = (
                state["low"].numpy().copy(),
                state["high"].numpy().copy(),
                state["spans"].numpy().copy(),
            )
            self._archived, self._bucket = state["archived"], state["bucket"]
            self.steps_logged, self.events, self.epochs = (
                state["steps_logged"],
                list(state["events"]),
                list(state["epochs"]),
            )
            self._folds += 1
            self._view = None


class HistoryView:
    """One moment of a `History`: exact recent steps and min/max buckets of older ones, all columns alike."""

    def __init__(
        self,
        columns: tuple[str, ...],
        steps_logged: int,
        low: np.ndarray,
        high: np.ndarray,
        spans: np.ndarray,
        steps: np.ndarray,
        values: np.ndarray,
    ) -> None:
        self.columns, self.steps_logged = columns, steps_logged
        self.low, self.high, self.spans = low, high, spans  # one row per bucket of old steps
        self.steps, self.values = steps, values  # one row per recent step

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one column: each bucket of old steps as its minimum and maximum, then the exact steps."""
        j = self.columns.index(column)
        old_steps = np.repeat(self.spans.mean(axis=1), 2)
        old_values = np.stack([self.low[:, j], self.high[:, j]], axis=1).reshape(-1)
        return np.concatenate([old_steps, self.steps]), np.concatenate([old_values, self.values[:, j]])


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _min_max(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring minimum and maximum along `axis`; a slice of NaNs only (a muted task) stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(values, axis=axis), np.nanmax(values, axis=axis)
