"""Loss weighting and gradient methods behind one interface.

    weighting = mtlnb.weighting.get("mgda", tasks=3)
    ...
    weighting.backward(losses)          # per-task losses of this step; gradients land in .grad
    optimizer.step()

`list_weightings()` names what exists; `get(name, tasks=..., **options)` builds one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

from ..errors import MTLError
from . import aligned_mtl, cagrad, dwa, famo, fixed, gradnorm, imtl_g, mgda, nash_mtl, pcgrad, rlw, uncertainty  # noqa: F401  (registration)
from .aligned_mtl import AlignedMTL
from .base import REGISTRY, GradientWeighting, LossWeighting, Weighting
from .cagrad import CAGrad
from .dwa import DynamicWeightAverage
from .famo import FAMO
from .fixed import Fixed
from .gradnorm import GradNorm
from .imtl_g import IMTLG
from .mgda import MGDA
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RandomLossWeighting
from .uncertainty import Uncertainty

__all__ = [
    "FAMO", "IMTLG", "MGDA", "AlignedMTL", "CAGrad", "DynamicWeightAverage", "Fixed", "GradNorm",
    "GradientWeighting", "LossWeighting", "NashMTL", "PCGrad", "RandomLossWeighting", "Uncertainty",
    "Weighting", "get", "list_weightings",
]  # fmt: skip


def list_weightings() -> list[str]:
    """The registered strategy names: loss-level first, then gradient-level."""
    return sorted(
        REGISTRY,
        key=lambda name: (
            issubclass(REGISTRY[name], GradientWeighting),
            _ORDER.index(name) if name in _ORDER else 99,
            name,
        ),
    )


_ORDER = [
    "fixed",
    "uncertainty",
    "gradnorm",
    "dwa",
    "rlw",
    "famo",
    "pcgrad",
    "mgda",
    "cagrad",
    "imtl_g",
    "aligned_mtl",
    "nash_mtl",
]


def options(name: str) -> dict[str, Any]:
    """The options a strategy takes (besides `tasks`), with their defaults."""
    cls = _lookup(name)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return {p.name: p.default for p in parameters}


def get(name: str, tasks: int | Sequence[str], **options_: Any) -> Weighting:
    """Build the strategy registered as `name` for `tasks` (a count or a list of names)."""
    cls = _lookup(name)
    valid = options(name)
    unknown = [key for key in options_ if key not in valid]
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise MTLError(f"weighting {name!r} has no option {', '.join(map(repr, unknown))}; its options: {listed}")
    return cls(tasks, **options_)


def _lookup(name: str) -> type[Weighting]:
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise MTLError(f"no weighting is named {name!r}{hint}; available: {', '.join(list_weightings())}")
    return REGISTRY[name]
