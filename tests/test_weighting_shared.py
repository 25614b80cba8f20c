"""Properties every registered weighting strategy must have (parametrized over the registry)."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import mtlnb.weighting as weighting
from mtlnb import MTLError

from .weighting_helpers import RANDOM, TASKS, HardSharing, batch, build, train

ALL = weighting.list_weightings()
GRADIENT = [n for n in ALL if issubclass(weighting.REGISTRY[n], weighting.GradientWeighting)]


def test_the_twelve_strategies_are_registered_in_order():
    assert ALL == [
        "fixed", "uncertainty", "gradnorm", "dwa", "rlw", "famo",
        "pcgrad", "mgda", "cagrad", "imtl_g", "aligned_mtl", "nash_mtl",
    ]  # fmt: skip
    assert GRADIENT == ["pcgrad", "mgda", "cagrad", "imtl_g", "aligned_mtl", "nash_mtl"]


@pytest.mark.parametrize("name", [n for n in ALL if n != "fixed"])  # a weighted sum has no paper
def test_each_strategy_names_its_paper(name):
    cls = weighting.REGISTRY[name]
    assert cls.paper and cls.__doc__
    assert re.search(r"(19|20)\d\d", cls.__doc__.splitlines()[0] + cls.paper), (
        "the docstring names the paper and its year"
    )


def test_unknown_names_and_options_list_what_is_valid():
    with pytest.raises(MTLError, match=r"no weighting is named 'mgd' \(did you mean 'mgda'\?\); available: fixed, "):
        weighting.get("mgd", tasks=3)
    with pytest.raises(MTLError, match=r"'cagrad' has no option 'alpha'; its options: c=0.5, rescale=False"):
        weighting.get("cagrad", tasks=3, alpha=1)
    with pytest.raises(MTLError, match=r"cagrad: parameter `c` should be a non-negative float. Found `c = -1`."):
        weighting.get("cagrad", tasks=3, c=-1)
    with pytest.raises(MTLError, match="number of tasks or a list of task names"):
        weighting.get("fixed", tasks="abc")


@pytest.mark.parametrize("name", ALL)
def test_backward_leaves_finite_gradients_and_reports_weights(name):
    model, strategy = HardSharing(), build(name)
    assert torch.isnan(strategy.weights).all()  # nothing to report before the first step
    x, ys = batch()
    total = strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
    assert total.shape == () and torch.isfinite(total)
    for parameter in model.parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape
        assert torch.isfinite(parameter.grad).all()
    assert strategy.weights.shape == (TASKS,) and torch.isfinite(strategy.weights).all()
    assert (strategy.weights > 0).all()


@pytest.mark.parametrize("name", ALL)
def test_shared_parameters_are_found_when_not_given(name):
    model, strategy = HardSharing(), build(name)
    twin, twin_strategy = copy.deepcopy(model), build(name)
    x, ys = batch()
    strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
    twin_strategy.backward(twin.losses(x, ys))
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name", GRADIENT)
def test_every_parameter_gets_its_tasks_gradients_times_their_coefficients(name):
    """Σ cᵢ gᵢ for shared parameters (as `aggregate` combines them) and cᵢ gᵢ for a task's own.

    The own parameters are reached through a sum and a shared addition, where autograd
    hands back an expanded tensor and one tensor for two leaves.
    """
    g = torch.Generator().manual_seed(3)
    trunk = torch.randn(5, generator=g, requires_grad=True)
    heads = [(torch.randn(4, generator=g, requires_grad=True), torch.randn(4, generator=g, requires_grad=True))]
    heads += [(torch.randn(4, generator=g, requires_grad=True),) for _ in range(TASKS - 1)]
    x, v = torch.randn(TASKS, 5, generator=g), torch.randn(4, generator=g)

    def losses():
        # ∂/∂head of (Σ head · v).sum() is v for each leaf of the first head, 1 for the others'
        own = [((sum(head) * v).sum() if len(head) > 1 else head[0].sum()) for head in heads]
        return [(trunk * x[i]).sum() ** 2 * (i + 1) + own[i] for i in range(TASKS)]

    task_grads = torch.stack([torch.autograd.grad(loss, trunk)[0] for loss in losses()])
    strategy = build(name)
    strategy.backward(losses(), shared_parameters=[trunk])
    torch.testing.assert_close(trunk.grad, build(name).aggregate(task_grads))  # a twin: pcgrad's same first order
    for weight, head in zip(strategy.weights.tolist(), heads):
        for parameter in head:
            torch.testing.assert_close(parameter.grad, weight * (v if len(head) > 1 else torch.ones(4)))


@pytest.mark.parametrize("name", [n for n in GRADIENT if n not in RANDOM])
def test_small_and_large_shared_parameters_and_one_that_a_task_does_not_reach(name):
    """Small shared tensors are combined as one block, large ones one by one; a task that does not
    reach a shared tensor counts as a zero gradient there, as in `aggregate`."""
    from mtlnb.weighting._autograd import SMALL

    g = torch.Generator().manual_seed(5)
    small_a, small_b = (torch.randn(7, generator=g, requires_grad=True) for _ in range(2))
    large = torch.randn(SMALL + 1, generator=g, requires_grad=True)
    x = torch.randn(TASKS, SMALL + 1, generator=g)

    def losses():
        reach_b = [0.0, 1.0, 2.0]  # task 0 does not reach small_b at all
        return [
            (large * x[i]).sum().tanh()
            + (small_a * (i + 1)).sin().sum()
            + (small_b.cos().sum() * reach_b[i] if i else 0)
            for i in range(TASKS)
        ]

    shared = [small_a, large, small_b]
    rows = []
    for loss in losses():
        grads = torch.autograd.grad(loss, shared, allow_unused=True)
        rows.append(
            torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)])
        )
    build(name).backward(losses(), shared_parameters=shared)
    combined = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(combined, build(name).aggregate(torch.stack(rows)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in GRADIENT if n not in RANDOM])
def test_shared_parameters_of_two_dtypes_are_combined_as_one_gradient(name):
    """A trunk half in float32, half in float64: one Gramian over both, each gradient in its own dtype."""
    torch.manual_seed(0)
    first, second = torch.nn.Linear(4, 8), torch.nn.Linear(8, 8).double()
    heads = [torch.nn.Linear(8, 1).double() for _ in range(TASKS)]
    x = torch.randn(16, 4)

    def losses():
        z = second(torch.tanh(first(x)).double())
        return [head(z).pow(2).mean() * (i + 1) for i, head in enumerate(heads)]

    shared = [*first.parameters(), *second.parameters()]
    jacobian = torch.stack(
        [
            torch.cat([g.double().reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
            for loss in losses()
        ]
    )
    build(name).backward(losses(), shared_parameters=shared)
    combined = torch.cat([p.grad.double().reshape(-1) for p in shared])
    torch.testing.assert_close(combined, build(name).aggregate(jacobian), rtol=1e-5, atol=1e-7)
    assert [p.grad.dtype for p in shared] == [p.dtype for p in shared]


@pytest.mark.parametrize("name", GRADIENT)
def test_aggregate_maps_a_gradient_matrix_to_one_gradient(name):
    grads = torch.randn(TASKS, 50, generator=torch.Generator().manual_seed(0))
    combined = build(name).aggregate(grads)
    assert combined.shape == (50,) and torch.isfinite(combined).all()
    with pytest.raises(MTLError, match=r"expected a \(3, params\) matrix"):
        build(name).aggregate(grads[:2])


@pytest.mark.parametrize("name", [n for n in ALL if n not in RANDOM])
def test_permuting_the_tasks_permutes_the_weights(name):
    order = [2, 0, 1]
    _, plain = train(name, steps=4)
    _, permuted = train(name, steps=4, order=order)
    torch.testing.assert_close(permuted.weights, plain.weights[order], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_a_muted_task_reaches_no_parameter(name):
    """Multiplier 0: its head gets no gradient, and its loss changes nothing anywhere, over several steps."""
    results = []
    for scale in (1.0, 100.0):
        model, strategy = HardSharing(), build(name)
        strategy.set_multiplier(1, 0.0)
        optimizer = torch.optim.SGD([*model.parameters(), *strategy.parameters()], lr=0.01)
        for step in range(4):
            x, ys = batch(step)
            ys[1] = ys[1] * scale
            optimizer.zero_grad(set_to_none=True)
            strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
            assert all(p.grad is None for p in model.heads[1].parameters())
            assert strategy.weights[1] == 0
            optimizer.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ALL)
def test_a_multiplier_scales_the_effective_weight(name):
    model, strategy = HardSharing(), build(name)
    x, ys = batch()
    strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
    reference = strategy.weights.clone()
    model, strategy = HardSharing(), build(name)
    strategy.set_multiplier("task2", 3.0)
    strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
    torch.testing.assert_close(strategy.weights, reference * torch.tensor([1.0, 1.0, 3.0]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "2", True])
def test_invalid_multipliers_are_refused_and_change_nothing(value):
    strategy = build("fixed")
    with pytest.raises(MTLError, match="multiplier of task 'task0' should be a finite number >= 0"):
        strategy.set_multiplier(0, value)
    with pytest.raises(MTLError, match="unknown task 'nope'"):
        strategy.set_multiplier("nope", 1.0)
    assert strategy.multipliers.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ALL)
def test_state_dict_resumes_the_strategy_exactly(name):
    model, strategy = train(name, steps=3)
    model.zero_grad(set_to_none=True)
    resumed = build(name, seed=12345)  # a different seed: the state must carry the generator
    resumed.load_state_dict(strategy.state_dict())
    twin = copy.deepcopy(model)
    x, ys = batch(99)
    strategy.backward(model.losses(x, ys), shared_parameters=model.trunk.parameters())
    resumed.backward(twin.losses(x, ys), shared_parameters=twin.trunk.parameters())
    torch.testing.assert_close(resumed.weights, strategy.weights)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
