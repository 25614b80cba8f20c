"""Training under `torchrun`: the same model, strategies and Trainer on several processes.

Under `torchrun`, `Trainer` notices the process group (`init()` starts it from the
environment torchrun sets) and then, every step:

- agrees with the other ranks whether all still have a batch, and on the total batch
  size, so an uneven last batch ends the epoch everywhere instead of hanging, and each
  rank's gradients count in proportion to its batch (exactly the full-batch mean);
- averages what each strategy needs before it is used: the per-task gradients of a
  gradient method (before they are combined), the task losses that drive loss-level
  weights (DWA, FAMO, GradNorm), and the final gradients of a loss-level step. So a
  2-rank step equals a 1-process step on the full batch, and learned weights stay
  identical on every rank;
- applies the same live changes at the same step: rank 0 reads them (from a control
  file a notebook writes) and broadcasts them.

DistributedDataParallel's reducer is not used: it averages one gradient per step, where
a gradient method needs each task's gradient averaged before combining them (the reason
LibMTL's gradient methods break under DDP); it also needs `find_unused_parameters` once
a task is muted, and averages uneven batches with equal weight. The collectives are
torch.distributed's own (gloo on CPU, NCCL on GPUs), one flat buffer a step.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import MTLError

__all__ = ["ControlFile", "averaging", "init", "is_active", "rank", "world_size"]

# The weight of this rank's batch in the global mean (n_local / n_total), while a step averages.
_STEP_WEIGHT: contextvars.ContextVar[float | None] = contextvars.ContextVar("mtlnb_step_weight", default=None)


def is_active() -> bool:
    """True inside a process group of more than one rank."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def rank() -> int:
    return (
        torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    )


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def init(backend: str | None = None) -> bool:
    """Join the process group `torchrun` describes in the environment (no-op outside torchrun); whether it is active.

    The backend is NCCL when CUDA is available, else gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        # torch._dynamo (imported by the first optimizer) keeps references to a process group that exists
        # when it is imported, so destroy_process_group could not end gloo's worker threads; one still
        # releasing its last collective while Python shuts down aborts the rank ("terminate called
        # without an active exception", ~1 job in 6 here). Imported first, it holds none.
        importlib.import_module("torch._dynamo")

        torch.distributed.init_process_group(backend)
        atexit.register(_leave_process_group)
    return is_active()


def _leave_process_group() -> None:
    """At exit, while Python is still whole: end the process group and join its threads (scripts rarely do)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def averaging(local_batch: int, total_batch: int) -> Iterator[None]:
    """Within this block, strategies average what they compute across ranks, rank-weighted by batch size."""
    token = _STEP_WEIGHT.set(local_batch / total_batch)
    try:
        yield
    finally:
        _STEP_WEIGHT.reset(token)


def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by the batch-weighted mean over ranks, in one collective (no-op when not averaging)."""
    weight = _STEP_WEIGHT.get()
    if weight is None or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).mul_(weight)
    torch.distributed.all_reduce(flat)
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def broadcast_state_(*modules: nn.Module) -> None:
    """Give every rank rank 0's parameters, buffers and random generators (what DDP does when it wraps a model)."""
    if not is_active():
        return
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    if tensors:
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        torch.distributed.broadcast(flat, 0)
        offset = 0
        with torch.no_grad():
            for t in tensors:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
    for module in modules:
        for sub in module.modules():
            generator = getattr(sub, "generator", None)
            if isinstance(generator, torch.Generator):
                state = [generator.get_state()]
                torch.distributed.broadcast_object_list(state, 0)
                generator.set_state(state[0])


class ControlFile:
    """Changes for a running job, one JSON object a line, appended by a notebook and read by rank 0.

    A line is `{"kind": "weight", "task": "Task2", "value": 0.5}`, or kind mute/unmute
    (with task), lr (with value), pause, resume or stop.
    """

    KINDS = ("weight", "mute", "unmute", "lr", "option", "pause", "resume", "stop")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._size = -1

    def send(self, kind: str, task: str | None = None, value: Any = None) -> None:
        if kind not in self.KINDS:
            raise MTLError(f"unknown control {kind!r}; valid: {list(self.KINDS)}")
        line = json.dumps({"kind": kind, "task": task, "value": value}) + "\n"
        with self.path.open("a", encoding="utf-8") as file:  # one write: a reader never sees half a line
            file.write(line)

    def read_new(self) -> list[dict[str, Any]]:
        """The complete lines written since the last call (cheap when nothing changed: one stat)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size == self._size:
            return []
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        self._size = self._offset if len(complete) == len(data) else -1
        records = []
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    records.append({"kind": "invalid", "line": line})
        return records
