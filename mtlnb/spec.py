"""Task specs: torchMTL's task dicts in, typed frozen `Task`s out, every mistake reported at once.

This layer knows nothing about execution: it checks what can be checked without
running a layer (keys, names, anchors, cycles, weights) and returns a `TaskGraph`
with the networkx graph and the execution order, computed once.
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import SpecError, SpecWarning

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["AUTO", "ROOT", "TASK_KEYS", "Task", "TaskGraph", "parse_tasks"]

ROOT = "root"
"""The graph node that stands for the model input (torchMTL's name)."""

AUTO = "auto"
"""`loss_weight: 'auto'`: learn the weight by uncertainty weighting."""

TASK_KEYS = ("name", "layers", "anchor_layer", "loss", "loss_weight", "loss_init_val")

LossWeight = float | Literal["auto"] | None


@dataclass(frozen=True)
class Task:
    """One node of the task graph, as validated from a torchMTL task dict."""

    name: str
    layers: Callable[..., Any]
    anchors: tuple[str, ...] = ()
    """Names whose outputs feed this node, in the order listed; () means the model input."""
    loss: Callable[..., Any] | None = None
    loss_weight: LossWeight = None
    """A fixed weight >= 0, `'auto'` (learned), or None (1.0 when the task has a loss)."""
    loss_init_val: float | None = None
    """For `'auto'`: the weight at the start of training (default 1.0)."""
    index: int = 0
    """Position in the user's spec list, for messages."""

    @property
    def learns_weight(self) -> bool:
        return self.loss_weight == AUTO

    @property
    def fixed_weight(self) -> float:
        """The weight a fixed-weight task's loss is multiplied by."""
        if self.loss_weight is None:
            return 1.0
        if self.loss_weight == AUTO:
            raise ValueError(f"task {self.name!r} learns its weight; it has no fixed weight")
        return float(self.loss_weight)


@dataclass(frozen=True)
class TaskGraph:
    """A validated spec: tasks, the outputs asked for, the graph and its execution order."""

    tasks: tuple[Task, ...]
    output_tasks: tuple[str, ...]
    graph: nx.DiGraph
    """torchMTL's graph: a `'root'` node for the input, an edge anchor -> task."""
    order: tuple[str, ...]
    """Every task in a topological order (stable: ties keep the spec order)."""

    def __getitem__(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def needed_for(self, outputs: Collection[str]) -> tuple[str, ...]:
        """The execution order restricted to the tasks `outputs` depend on."""
        import networkx as nx

        needed = set(outputs)
        for name in outputs:
            needed |= nx.ancestors(self.graph, name)
        return tuple(name for name in self.order if name in needed)


def parse_tasks(
    tasks: Any,
    output_tasks: Any = None,
    reserved_names: Collection[str] = (),
) -> TaskGraph:
    """Validate a torchMTL-style spec and build its graph.

    Raises one `SpecError` listing every problem found. `reserved_names` are names
    a task may not take (attributes of the model class that will hold the tasks).
    """
    # (position in the spec, text): reported in spec order, output_tasks last.
    problems: list[tuple[float, str]] = []
    if not isinstance(tasks, (list, tuple)):
        hint = " (a single task? wrap it in a list: [task])" if isinstance(tasks, Mapping) else ""
        raise SpecError([f"the task spec must be a list of task dicts; got {_kind(tasks)}{hint}"])
    if not tasks:
        raise SpecError(["the task spec is empty; give at least one task dict"])

    named = []
    for index, raw in enumerate(tasks):
        task_problems: list[str] = []
        task = _parse_task(index, raw, task_problems)
        problems += [(index, text) for text in task_problems]
        if task is not None:
            named.append(task)
    _check_names(named, set(reserved_names), problems)

    known = [t.name for t in named]
    for task in named:
        for anchor in task.anchors:
            if anchor != ROOT and anchor not in known:
                problems.append(
                    (
                        task.index,
                        f"{_where(task)}, key 'anchor_layer': no task is named {anchor!r}"
                        f"{_suggest(anchor, known)}; known tasks: {_listing(known)}",
                    )
                )

    graph = _build_graph(named)
    position = {t.name: t.index for t in named}
    problems += [(min(position[n] for n in cycle), text) for cycle, text in _cycle_problems(graph)]
    output_problems: list[str] = []
    outputs = _parse_output_tasks(output_tasks, named, graph, output_problems)
    problems += [(math.inf, text) for text in output_problems]

    if problems:
        raise SpecError([text for _, text in sorted(problems, key=lambda p: p[0])])
    _warn_about_oddities(named, outputs)

    import networkx as nx

    order = [n for n in nx.lexicographical_topological_sort(graph, key=lambda n: position.get(n, -1)) if n != ROOT]
    return TaskGraph(tuple(named), tuple(outputs), graph, tuple(order))


# ---------------------------------------------------------------- one task at a time


def _parse_task(index: int, raw: Any, problems: list[str]) -> Task | None:
    where = f"tasks[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: a task must be a dict with keys {_listing(TASK_KEYS)}; got {_kind(raw)}")
        return None

    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"task {name!r} ({where})"

    for key in raw:
        if key not in TASK_KEYS:
            problems.append(
                f"{where}: unknown key {key!r}{_suggest(str(key), TASK_KEYS)}; valid keys: {_listing(TASK_KEYS)}"
            )

    if "name" not in raw:
        problems.append(f"{where}, key 'name': missing; every task needs a 'name' (a non-empty string)")
    elif not isinstance(name, str) or not name:
        problems.append(f"{where}, key 'name': must be a non-empty string; got {name!r}")
    elif "." in name:
        problems.append(f"{where}, key 'name': {name!r} contains '.', which PyTorch forbids in module names")

    layers = raw.get("layers")
    if "layers" not in raw:
        problems.append(f"{where}, key 'layers': missing; give a module or callable, e.g. nn.Linear(16, 8)")
    else:
        _check_callable(where, "layers", layers, problems)

    anchors = _parse_anchors(where, raw.get("anchor_layer"), problems)

    loss = raw.get("loss")
    if loss is not None:
        _check_callable(where, "loss", loss, problems)

    loss_weight = _parse_weight(where, raw.get("loss_weight"), problems)
    loss_init_val = _parse_init_val(where, raw.get("loss_init_val"), problems)

    # A task with a usable name stays in play even when other keys are wrong, so
    # that anchors pointing at it are not reported as unknown on top.
    if not isinstance(name, str) or not name:
        return None
    return Task(name, layers, anchors, loss, loss_weight, loss_init_val, index)


def _check_callable(where: str, key: str, value: Any, problems: list[str]) -> None:
    if isinstance(value, type):
        problems.append(
            f"{where}, key {key!r}: got the class {value.__module__}.{value.__qualname__}, "
            f"not an instance; write {value.__name__}(...)"
        )
    elif not callable(value):
        problems.append(f"{where}, key {key!r}: must be callable (an nn.Module or a function); got {_kind(value)}")


def _parse_anchors(where: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    problems.append(
        f"{where}, key 'anchor_layer': must be a task name or a non-empty list of task names; got {value!r}"
    )
    return ()


def _parse_weight(where: str, value: Any, problems: list[str]) -> LossWeight:
    if value is None or value == AUTO:
        return value
    number = _as_real(value)
    if number is not None and math.isfinite(number) and number >= 0:
        return number
    hint = _suggest(value, [AUTO]) if isinstance(value, str) else ""
    problems.append(f"{where}, key 'loss_weight': must be a finite number >= 0, 'auto' or None; got {value!r}{hint}")
    return None


def _parse_init_val(where: str, value: Any, problems: list[str]) -> float | None:
    if value is None:
        return None
    number = _as_real(value)
    if number is not None and math.isfinite(number) and number > 0:
        return number
    problems.append(
        f"{where}, key 'loss_init_val': must be a finite number > 0 (the starting weight of an 'auto' task); "
        f"got {value!r}"
    )
    return None


def _as_real(value: Any) -> float | None:
    """A plain or numpy number, or a one-element tensor, as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if type(value).__name__ == "Tensor" and getattr(value, "numel", lambda: 0)() == 1:
        return float(value)
    return None


# ---------------------------------------------------------------- the tasks together


def _check_names(tasks: list[Task], reserved: set[str], problems: list[tuple[float, str]]) -> None:
    """Report name clashes and drop the clashing tasks, so later checks speak of each name once."""
    first_seen: dict[str, Task] = {}
    for task in tasks:
        if task.name == ROOT:
            text = f"{_where(task)}, key 'name': 'root' is reserved for the model input; choose another name"
        elif task.name in reserved:
            text = (
                f"{_where(task)}, key 'name': {task.name!r} is taken by an attribute of the model itself; "
                f"choose another name, e.g. {task.name + '_task'!r}"
            )
        elif task.name in first_seen:
            text = (
                f"{_where(task)}, key 'name': duplicate name {task.name!r} "
                f"(also tasks[{first_seen[task.name].index}]); names must be unique"
            )
        else:
            first_seen[task.name] = task
            continue
        problems.append((task.index, text))
    tasks[:] = [t for t in tasks if first_seen.get(t.name) is t]


def _build_graph(tasks: list[Task]) -> nx.DiGraph:
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_node(ROOT)
    graph.add_nodes_from(t.name for t in tasks)
    known = set(graph.nodes)
    for task in tasks:
        if not task.anchors:
            graph.add_edge(ROOT, task.name)
        for anchor in task.anchors:
            if anchor in known:
                graph.add_edge(anchor, task.name)
    return graph


def _cycle_problems(graph: nx.DiGraph, most: int = 5) -> list[tuple[list[str], str]]:
    """(the tasks of a cycle, the problem text) for at most `most` cycles."""
    import itertools

    import networkx as nx

    problems = []
    for cycle in itertools.islice(nx.simple_cycles(graph), most):
        path = " -> ".join([*cycle, cycle[0]])
        names = ", ".join(repr(n) for n in cycle)
        text = f"tasks {names}, key 'anchor_layer': the anchors form a cycle {path}; a task cannot depend on its own output"
        problems.append((cycle, text))
    return problems


def _parse_output_tasks(value: Any, tasks: list[Task], graph: nx.DiGraph, problems: list[str]) -> list[str]:
    names = [t.name for t in tasks]
    if value is None:
        with_loss = [t.name for t in tasks if t.loss is not None]
        return with_loss or [n for n in names if graph.out_degree(n) == 0]
    if isinstance(value, str):
        problems.append(f"output_tasks: must be a list of task names; got the string {value!r} (write [{value!r}])")
        return []
    if not isinstance(value, (list, tuple)):
        problems.append(f"output_tasks: must be a list of task names; got {_kind(value)}")
        return []
    if not value:
        problems.append(f"output_tasks: is empty; name at least one task whose output you want, from {_listing(names)}")
        return []
    outputs = []
    for name in value:
        if not isinstance(name, str) or name not in names:
            problems.append(
                f"output_tasks: no task is named {name!r}{_suggest(str(name), names)}; known tasks: {_listing(names)}"
            )
        elif name in outputs:
            problems.append(f"output_tasks: {name!r} is listed twice")
        else:
            outputs.append(name)
    return outputs


def _warn_about_oddities(tasks: list[Task], outputs: list[str]) -> None:
    for task in tasks:
        if task.loss_init_val is not None and not task.learns_weight:
            warnings.warn(
                f"{_where(task)}: 'loss_init_val' is only used with loss_weight='auto'; it is ignored here",
                SpecWarning,
                stacklevel=4,
            )
        if task.learns_weight and task.loss is None:
            warnings.warn(
                f"{_where(task)}: loss_weight='auto' but the task has no 'loss', so the weight is never used",
                SpecWarning,
                stacklevel=4,
            )


# ---------------------------------------------------------------- message helpers


def _where(task: Task) -> str:
    return f"task {task.name!r} (tasks[{task.index}])"


def _kind(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _listing(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _suggest(given: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=1, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = [lowered[given.lower()]] if given.lower() in lowered else []
    return f" (did you mean {close[0]!r}?)" if close else ""
