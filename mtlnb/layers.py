"""Wrapping layers: the glue nodes of a task graph (torchMTL's signatures, plus sum, mean, any function).

They are `nn.Module`s without parameters, so `print(model)` shows them and
`torch.compile` traces through them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["Concat", "Lambda", "Mean", "SimpleSelect", "SliceSelect", "Sum"]


class Concat(nn.Module):
    """Concatenate the outputs of all anchors along `dim` (torch.cat)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SimpleSelect(nn.Module):
    """Pick one element of the input: `X[selection_axis]` (an input tuple, a dict key, a row)."""

    def __init__(self, selection_axis: Any) -> None:
        super().__init__()
        self.sel = selection_axis

    def forward(self, inputs: Any) -> Any:
        return inputs[self.sel]

    def extra_repr(self) -> str:
        return f"selection_axis={self.sel!r}"


class SliceSelect(nn.Module):
    """Index the input with a slice: `X[sel_slice]`."""

    def __init__(self, sel_slice: slice) -> None:
        super().__init__()
        self.slice = sel_slice

    def forward(self, inputs: Any) -> Any:
        return inputs[self.slice]

    def extra_repr(self) -> str:
        return f"sel_slice={self.slice!r}"


class Sum(nn.Module):
    """Element-wise sum of the outputs of all anchors (same shapes, or broadcastable)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class Mean(Sum):
    """Element-wise mean of the outputs of all anchors."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(*inputs) / len(inputs)


class Lambda(nn.Module):
    """Wrap a plain function as a graph node, e.g. `Lambda(torch.relu)` or `Lambda(lambda a, b: a * b)`.

    A lambda cannot be pickled; use a named function if you pickle or `deepcopy` the model across processes.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        super().__init__()
        if not callable(fn):
            from .errors import SpecError

            raise SpecError([f"Lambda: the wrapped object must be callable; got {type(fn).__name__} {fn!r}"])
        self.fn = fn
        self.fn_name = name or getattr(fn, "__name__", type(fn).__name__)

    def forward(self, *inputs: Any) -> Any:
        return self.fn(*inputs)

    def extra_repr(self) -> str:
        return self.fn_name
