"""Pictures without a browser: the task graph as DOT/SVG (and, later, training plots as PNG/SVG).

Everything a widget shows is drawn here first, so it can be tested headless,
written to files from scripts, and committed in notebooks for GitHub to show.
"""

from .render import render_svg
from .task_graph import task_graph_digraph

__all__ = ["render_svg", "task_graph_digraph"]
