"""Wrapping layers: the glue nodes of a task graph (torchMTL's signatures, plus sum, mean, any function).

Plain callables, as in torchMTL: they hold no parameters, and skipping
`nn.Module.__call__` saves about 3 µs per node and step, which is 1% of a
small model's step. `torch.compile` traces through them all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Concat", "Lambda", "Mean", "SimpleSelect", "SliceSelect", "Sum"]


class WrappingLayer:
    """A parameter-free graph node; `repr` shows how it was built."""

    def _arguments(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._arguments()})"


class Concat(WrappingLayer):
    """Concatenate the outputs of all anchors along `dim` (torch.cat)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def _arguments(self) -> str:
        return f"dim={self.dim}"


class SimpleSelect(WrappingLayer):
    """Pick one element of the input: `X[selection_axis]` (an input tuple, a dict key, a row)."""

    def __init__(self, selection_axis: Any) -> None:
        self.sel = selection_axis

    def __call__(self, inputs: Any) -> Any:
        return inputs[self.sel]

    def _arguments(self) -> str:
        return f"selection_axis={self.sel!r}"


class SliceSelect(WrappingLayer):
    """Index the input with a slice: `X[sel_slice]`."""

    def __init__(self, sel_slice: slice) -> None:
        self.slice = sel_slice

    def __call__(self, inputs: Any) -> Any:
        return inputs[self.slice]

    def _arguments(self) -> str:
        return f"sel_slice={self.slice!r}"


class Sum(WrappingLayer):
    """Element-wise sum of the outputs of all anchors (same shapes, or broadcastable)."""

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class Mean(Sum):
    """Element-wise mean of the outputs of all anchors."""

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().__call__(*inputs) / len(inputs)


class Lambda(WrappingLayer):
    """Wrap a plain function as a graph node, e.g. `Lambda(torch.relu)` or `Lambda(lambda a, b: a * b)`.

    A lambda cannot be pickled; use a named function if you pickle or `deepcopy` the model across processes.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            from .errors import SpecError

            raise SpecError([f"Lambda: the wrapped object must be callable; got {type(fn).__name__} {fn!r}"])
        self.fn = fn
        self.fn_name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *inputs: Any) -> Any:
        return self.fn(*inputs)

    def _arguments(self) -> str:
        return self.fn_name
