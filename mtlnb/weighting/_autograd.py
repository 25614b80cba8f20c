"""Per-task gradients: one backward pass per task through the graph the losses share.

Measured on the benchmark model (2 cores): a loop of `autograd.grad` calls costs
2.1× an equal-weighting step, a batched vector-Jacobian product (vmap) 2.75×, so
the loop it is. The gradients are kept as autograd returns them, per leaf and task
(`TaskGradients`); the Gramian and the combined gradient are computed from them,
without a further backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .. import distributed
from ..errors import MTLError


def reachable_leaves(loss: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors that require grad and that `loss` depends on, in a stable order."""
    leaves: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None:
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


# Shared parameters up to this size (biases, norms' scales) go into one (tasks × their total)
# block: one product for all of them instead of a few small ops each, which for a model of
# many small tensors cost more than the tensors' arithmetic (a 50-layer trunk of width 64, 200
# tensors: MGDA 3.42x -> 3.09x a fixed step). Larger ones are used as they are.
SMALL = 4096


@dataclass
class TaskGradients:
    """Each task's gradients of one step, as autograd returned them.

    `grads[leaf]` lists (task, gradient) for the tasks that reach the leaf: a head's
    parameter holds one, a shared one a gradient per task. The large shared gradients
    are not copied into a (tasks × parameters) matrix: in a training step that copy lands
    in fresh memory and cost more (in benchmarks/bench_weighting.py) than the products it
    would have fed. The small ones are (`SMALL`): copying them costs less than the ops saved.
    """

    tasks: int
    shared: list[torch.Tensor]
    grads: dict[torch.Tensor, list[tuple[int, torch.Tensor]]]

    def __post_init__(self) -> None:
        reached = [p for p in self.shared if p in self.grads]
        small = [p for p in reached if p.numel() <= SMALL]
        kind = (small[0].dtype, small[0].device) if small else None
        small = [p for p in small if (p.dtype, p.device) == kind]  # one block holds one dtype on one device
        self.small = small if len(small) > 1 else []
        self._grouped = {id(p) for p in self.small}
        self.large = [p for p in reached if id(p) not in self._grouped]

    @functools.cached_property
    def block(self) -> torch.Tensor | None:
        """(tasks, Σ numel) of the small shared parameters' gradients, zero where a task does not reach one.

        Built on first use: GradNorm reads the gradients alone and needs no block."""
        if not self.small:
            return None
        rows: list[list[torch.Tensor | None]] = [[None] * len(self.small) for _ in range(self.tasks)]
        for n, parameter in enumerate(self.small):
            for task, grad in self.grads[parameter]:
                rows[task][n] = grad.reshape(-1)
        flat = [
            grad if grad is not None else self.small[n].new_zeros(self.small[n].numel())
            for row in rows
            for n, grad in enumerate(row)
        ]
        return torch.cat(flat).view(self.tasks, -1)

    def gramian(self) -> torch.Tensor:
        """G = J Jᵀ over the shared parameters (float64): a dot product per pair of tasks and large parameter,
        one product for the small ones."""
        k, cells, dots = self.tasks, [], []
        for parameter in self.large:
            flat = [(task, grad.reshape(-1)) for task, grad in self.grads[parameter]]
            for n, (i, gi) in enumerate(flat):
                for j, gj in flat[n:]:
                    cells.append(i * k + j)
                    dots.append(torch.dot(gi, gj))
        gramian = torch.zeros(k, k, dtype=torch.float64)
        if dots:
            values = torch.stack(dots).double().cpu()
            upper = torch.zeros(k * k, dtype=torch.float64).index_add_(0, torch.tensor(cells), values).view(k, k)
            gramian += upper + upper.triu(1).T
        if self.block is not None:
            gramian += (self.block @ self.block.T).double().cpu()
        return gramian

    def combine_into_grad(self, coefficients: torch.Tensor) -> None:
        """Add Σᵢ cᵢ gᵢ to every leaf's `.grad`."""
        values = coefficients.tolist()
        if self.block is not None:
            combined = coefficients.to(self.block) @ self.block
            for parameter, grad in zip(self.small, combined.split([p.numel() for p in self.small]), strict=True):
                _accumulate(parameter, grad.view(parameter.shape))
        for parameter, grads in self.grads.items():
            if id(parameter) in self._grouped:
                continue
            # Out of place first: autograd may hand the same tensor to two leaves, or an expanded one.
            total = grads[0][1] * values[grads[0][0]]
            for task, grad in grads[1:]:
                total.add_(grad, alpha=values[task])
            _accumulate(parameter, total)


def _accumulate(parameter: torch.Tensor, grad: torch.Tensor) -> None:
    parameter.grad = grad if parameter.grad is None else parameter.grad + grad


def per_task_gradients(
    losses: list[torch.Tensor],
    shared_parameters: Iterable[torch.Tensor] | None,
    only_shared: bool = False,
    retain_graph: bool = False,
) -> TaskGradients:
    """Each loss's gradients of every leaf any loss reaches, one backward pass per loss.

    Shared parameters are those given, or, if None, the leaves that two or more
    of the losses reach. `only_shared` computes gradients of the shared parameters alone.
    """
    reach = [reachable_leaves(loss) for loss in losses]
    if not any(reach):
        raise MTLError("none of the losses depends on a parameter that requires grad; nothing to train")
    counts: dict[int, int] = {}
    ordered: dict[int, torch.Tensor] = {}
    for leaves in reach:
        for leaf in leaves:
            counts[id(leaf)] = counts.get(id(leaf), 0) + 1
            ordered.setdefault(id(leaf), leaf)
    if shared_parameters is None:
        shared = [leaf for key, leaf in ordered.items() if counts[key] > 1 or len(losses) == 1]
    else:
        shared = [p for p in shared_parameters if p.requires_grad]
        if not shared:
            raise MTLError("shared_parameters holds no parameter that requires grad")
    if not shared:
        raise MTLError("the tasks share no parameter; a gradient method has nothing to combine (use a loss weighting)")

    shared_ids = {id(p) for p in shared}
    wanted = shared_ids if only_shared else shared_ids | ordered.keys()
    per_leaf: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for i, (loss, leaves) in enumerate(zip(losses, reach, strict=True)):
        leaves = [leaf for leaf in leaves if id(leaf) in wanted]
        if not leaves:
            continue
        grads = torch.autograd.grad(loss, leaves, retain_graph=retain_graph or i < len(losses) - 1, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            if grad is None:
                grad = torch.zeros_like(leaf)
            elif not grad.is_contiguous():  # e.g. expanded from a sum: averaging across ranks writes in place
                grad = grad.contiguous()
            per_leaf.setdefault(id(leaf), []).append((i, grad))

    # Under torchrun: each task's gradient averaged across ranks before any strategy combines them.
    distributed.average_([grad for grads in per_leaf.values() for _, grad in grads])
    return TaskGradients(len(losses), shared, {ordered[key]: grads for key, grads in per_leaf.items()})


def task_gradient_norms(
    losses: list[torch.Tensor], shared_parameters: Iterable[torch.Tensor] | None, retain_graph: bool = False
) -> list[float]:
    """‖∇_W Lᵢ‖ for each loss, W the shared parameters (found as in `per_task_gradients` if None).

    With W given, neither a walk of the graph nor a (tasks × W) copy: each task's
    gradients are used as autograd returns them (the two cost GradNorm 4% of its step).
    Under torchrun, of the gradients averaged across ranks.
    """
    if shared_parameters is None:
        gradients = per_task_gradients(losses, None, only_shared=True, retain_graph=retain_graph)
        per_task = [[torch.zeros_like(p) for p in gradients.shared] for _ in losses]
        for n, parameter in enumerate(gradients.shared):
            for task, grad in gradients.grads.get(parameter, []):
                per_task[task][n] = grad
    else:
        shared = [p for p in shared_parameters if p.requires_grad]
        if not shared:
            raise MTLError("shared_parameters holds no parameter that requires grad")
        if not any(loss.requires_grad for loss in losses):
            raise MTLError("none of the losses depends on a parameter that requires grad; nothing to train")
        per_task = []
        for i, loss in enumerate(losses):
            keep = retain_graph or i < len(losses) - 1
            grads = (
                torch.autograd.grad(loss, shared, retain_graph=keep, allow_unused=True)
                if loss.requires_grad
                else [None] * len(shared)
            )
            per_task.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, shared, strict=True)])
        distributed.average_([g for grads in per_task for g in grads])
    # One fused norm per gradient, then per task: get_total_norm, called per task, cost 60 µs
    # each (its compile guard and grouping), 9% of the benchmark's step for three tasks.
    try:
        norms = torch.stack(torch._foreach_norm([g.float() for grads in per_task for g in grads]))
    except RuntimeError:  # parameters on several devices: get_total_norm groups them
        return torch.stack([torch.nn.utils.get_total_norm(grads).cpu() for grads in per_task]).tolist()
    return torch.linalg.vector_norm(norms.view(len(per_task), -1), dim=1).tolist()
