"""The one exception family of mtlnb: catch `MTLError` to catch them all."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MTLError", "SpecError", "SpecWarning"]


class MTLError(Exception):
    """Root of every error mtlnb raises on purpose."""


class SpecError(MTLError, ValueError):
    """A task spec (or an example input run through it) has problems the user can fix.

    `problems` holds one line per problem; the message lists them all, so a spec
    with three mistakes is reported once, with three lines.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{len(self.problems)} problems in the task spec:\n{lines}"
        super().__init__(message)


class SpecWarning(UserWarning):
    """A task spec that works but probably does not do what its author meant."""
