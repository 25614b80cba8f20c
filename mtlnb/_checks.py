"""Checks of user-given numbers, shared by every layer, so that every refusal reads the same."""

from __future__ import annotations

import math
from typing import Any

from .errors import MTLError


def is_real(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_non_negative(value: Any) -> bool:
    return is_real(value) and value >= 0


def is_positive(value: Any) -> bool:
    return is_real(value) and value > 0


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def non_negative(what: str, value: Any) -> float:
    """`value` as a float if it is a finite number >= 0; else an MTLError naming `what` and the value."""
    if not is_non_negative(value):
        raise MTLError(f"{what} should be a finite number >= 0. Found {value!r}.")
    return float(value)
