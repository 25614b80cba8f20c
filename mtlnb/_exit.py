"""Background threads end before Python does.

A daemon thread still training or drawing when the interpreter finalises is
stopped inside native code (matplotlib's FreeType reading a font, measured here:
1 script in 3 aborted with "terminate called without an active exception"). So
at exit, dashboards end their render threads (no last frame: nobody is left to
see it), then runs stop at a step boundary and are joined.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from typing import Any

_RUNS: weakref.WeakSet[Any] = weakref.WeakSet()
_VIEWS: weakref.WeakSet[Any] = weakref.WeakSet()


def end_run_at_exit(run: Any) -> None:
    """`run._end_at_exit()` is called at interpreter exit while `run` lives (after every view's)."""
    _RUNS.add(run)


def end_view_at_exit(view: Any) -> None:
    _VIEWS.add(view)


@atexit.register
def _end_all() -> None:
    for owners in (_VIEWS, _RUNS):
        for owner in list(owners):
            # At exit nobody is left to tell of a failure; the next owner still ends.
            with contextlib.suppress(Exception):
                owner._end_at_exit()
