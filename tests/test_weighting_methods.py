"""Each strategy against its paper's definition, with numbers a reader can check."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import mtlnb.weighting as weighting
from mtlnb.weighting.aligned_mtl import AlignedMTL
from mtlnb.weighting.base import GradientWeighting

from .weighting_helpers import HardSharing, batch, train


def conflicting_gradients(seed: int, tasks: int, params: int = 40, spread: float = 100.0) -> torch.Tensor:
    """Random task gradients with norms spread `spread`× and at least one conflicting pair."""
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(tasks, params)) * np.exp(rng.uniform(0, math.log(spread), size=(tasks, 1)))
    grads[0] -= 1.5 * grads[1] * np.linalg.norm(grads[0]) / np.linalg.norm(grads[1])
    return torch.tensor(grads, dtype=torch.float64)


def exact_min_norm(grads: np.ndarray) -> np.ndarray:
    """The min-norm point of the convex hull by enumerating every support (exact, slow, for k <= 10)."""
    gramian = grads @ grads.T
    k = len(gramian)
    best, best_value = None, math.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            kkt = np.block([[gramian[np.ix_(s, s)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            try:
                solution = np.linalg.solve(kkt, np.r_[np.zeros(size), 1.0])
            except np.linalg.LinAlgError:
                continue
            if (solution[:size] >= -1e-12).all():
                weights = np.zeros(k)
                weights[s] = solution[:size]
                value = weights @ gramian @ weights
                if value < best_value:
                    best, best_value = weights, value
    return best @ grads


@pytest.mark.parametrize("seed", range(40))
def test_mgda_is_the_exact_min_norm_point(seed):
    tasks = 2 + seed % 9  # 2 to 10 tasks
    grads = conflicting_gradients(seed, tasks)
    d = weighting.get("mgda", tasks=tasks).aggregate(grads).numpy()
    exact = exact_min_norm(grads.numpy())
    assert np.linalg.norm(d - exact) <= 1e-5 * np.linalg.norm(exact)
    assert (grads.numpy() @ d >= (d @ d) * (1 - 1e-5)).all()  # no task is left behind


def test_pcgrad_is_the_papers_projection_for_a_given_order():
    grads = conflicting_gradients(1, 4).float()
    # The paper's algorithm on the vectors themselves, tasks in index order.
    projected = []
    for i in range(4):
        g = grads[i].clone()
        for j in range(4):
            if j != i and g @ grads[j] < 0:
                g = g - (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        projected.append(g)
    expected = torch.stack(projected).sum(0)
    fixed = weighting.get("pcgrad", tasks=4, order="fixed").aggregate(grads)
    torch.testing.assert_close(fixed, expected, rtol=1e-5, atol=1e-5)
    seeded = [weighting.get("pcgrad", tasks=4, seed=7).aggregate(grads) for _ in range(2)]
    torch.testing.assert_close(seeded[0], seeded[1], rtol=0, atol=0)  # deterministic for a given seed


@pytest.mark.parametrize("inside", [False, True], ids=["conflicting", "inside-the-simplex"])
@pytest.mark.parametrize("seed", range(10))
def test_cagrad_is_the_papers_update_with_the_inner_problem_solved(seed, inside, monkeypatch):
    """Conflicting gradients of spread norms put the inner minimiser on the simplex's boundary,
    the cases `inside` inside it. Solved from the centre and from other starting points."""
    from scipy.optimize import minimize

    from mtlnb.weighting import _solvers

    tasks, c = 2 + seed % 5, 0.1 + 0.1 * (seed % 9)
    if inside:  # nearly orthogonal, of nearly equal norms (like the benchmark's tasks), and c >= 0.5
        c = 0.5 + 0.1 * (seed % 6)
        rng = np.random.default_rng(seed)
        grads = rng.normal(size=(tasks, 400)) * rng.uniform(0.9, 1.1, (tasks, 1))
    else:
        grads = conflicting_gradients(seed, tasks, spread=20).numpy()
    gramian = grads @ grads.T
    g0 = grads.mean(0)
    sqrt_phi = c * np.linalg.norm(g0)

    def inner(w):
        return (w @ grads) @ g0 + sqrt_phi * np.linalg.norm(w @ grads)

    constraint = {"type": "eq", "fun": lambda v: v.sum() - 1}
    starts = [np.full(tasks, 1 / tasks), *np.random.default_rng(seed).dirichlet(np.ones(tasks), 3)]
    options = {"ftol": 1e-15, "maxiter": 500}

    def feasible(v):  # SLSQP may end slightly off the simplex, where F can be lower: project back
        v = np.clip(v, 0, None)
        return v / v.sum()

    reference = min(
        inner(
            feasible(
                minimize(inner, x0, method="SLSQP", bounds=[(0, 1)] * tasks, constraints=constraint, options=options).x
            )
        )
        for x0 in starts
    )
    closed_forms = []
    closed_form = _solvers._cagrad_closed_form
    monkeypatch.setattr(
        _solvers, "_cagrad_closed_form", lambda *a: closed_forms.append(closed_form(*a)) or closed_forms[-1]
    )

    w = _solvers.cagrad_weights(gramian, c)
    assert inner(w) <= reference + 1e-6 * max(1.0, abs(reference))
    if tasks <= 5:  # every face is tried in closed form; beyond, the start's face and the whole simplex
        assert closed_forms[-1] is not None, "found in closed form, not by the Newton fallback"
    if inside:
        assert np.all(w > 1e-9)
    rng = np.random.default_rng(seed + 100)
    for start in [rng.dirichlet(np.ones(tasks)), np.eye(tasks)[tasks - 1], w]:  # anywhere, a vertex, the answer
        np.testing.assert_allclose(_solvers.cagrad_weights(gramian, c, start=start), w, atol=1e-8)
    assert closed_forms[-1] is not None, "from the answer: its face's closed form"

    # The strategy's step: d = g0 + (√φ/‖g_w‖) g_w.
    d = weighting.get("cagrad", tasks=tasks, c=c).aggregate(torch.tensor(grads)).numpy()
    gw = w @ grads
    np.testing.assert_allclose(d, g0 + sqrt_phi / np.linalg.norm(gw) * gw, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_imtl_g_projects_equally_on_every_unit_gradient(seed):
    tasks = 2 + seed % 6
    grads = conflicting_gradients(seed, tasks)
    d = weighting.get("imtl_g", tasks=tasks).aggregate(grads)
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(projections, projections.mean().expand(tasks), rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", range(10))
def test_nash_mtl_meets_the_bargaining_condition(seed):
    tasks = 2 + seed % 7
    grads = conflicting_gradients(seed, tasks, spread=30)
    strategy = weighting.get("nash_mtl", tasks=tasks)
    gramian = (grads @ grads.T).numpy()
    alpha = strategy.coefficients(gramian)
    assert (alpha > 0).all()
    np.testing.assert_allclose(gramian @ alpha, 1 / alpha, rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_aligned_mtl_balances_the_gradients_to_condition_number_one(seed):
    grads = conflicting_gradients(seed, 4).numpy()
    gramian = grads @ grads.T
    balance = AlignedMTL.balance_matrix(gramian)
    aligned = balance.T @ grads  # the aligned task gradients, one per row
    singular = np.linalg.svd(aligned, compute_uv=False)
    np.testing.assert_allclose(singular, singular.min() * np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(singular.min() ** 2, np.linalg.eigvalsh(gramian).min(), rtol=1e-6)


def test_fixed_weights_give_the_weighted_sum():
    model = HardSharing()
    x, ys = batch()
    strategy = weighting.get("fixed", tasks=3, weights=[0.5, 2.0, 0.0])
    total = strategy.backward(model.losses(x, ys))
    expected = sum(w * loss for w, loss in zip([0.5, 2.0, 0.0], model.losses(x, ys)))
    torch.testing.assert_close(total, expected.detach())
    assert strategy.weights.tolist() == [0.5, 2.0, 0.0]


def test_dwa_weights_follow_the_ratio_of_the_last_two_periods():
    strategy = weighting.get("dwa", tasks=3, temperature=2.0, period=2)
    history = [[4.0, 1.0, 2.0], [4.0, 1.0, 2.0], [2.0, 1.0, 3.0], [2.0, 1.0, 3.0]]
    for losses in history:  # two periods of two steps
        assert strategy.compute_weights(torch.tensor(losses)).tolist() == [1.0, 1.0, 1.0]
    ratios = torch.tensor([2.0 / 4.0, 1.0, 3.0 / 2.0])
    expected = 3 * torch.softmax(ratios / 2.0, 0)
    torch.testing.assert_close(strategy.compute_weights(torch.tensor([1.0, 1.0, 1.0])), expected.float())


def test_rlw_weights_are_a_reproducible_softmax_of_a_normal_draw():
    strategy = weighting.get("rlw", tasks=3, seed=3)
    weights = strategy.compute_weights(torch.zeros(3))
    expected = torch.softmax(torch.randn(3, generator=torch.Generator().manual_seed(3)), 0)
    torch.testing.assert_close(weights, expected)
    assert weights.sum().item() == pytest.approx(1.0)


def test_famo_step_follows_the_gradient_of_its_weighted_log_loss():
    model = HardSharing()
    strategy = weighting.get("famo", tasks=3)
    x, ys = batch()
    strategy.backward(model.losses(x, ys))  # first step: z uniform
    losses = model.losses(x, ys)
    z = torch.full((3,), 1 / 3)
    gaps = torch.stack([loss.detach() for loss in losses]) + 1e-8
    reference_loss = (z * torch.log(torch.stack(losses) + 1e-8)).sum() / (z / gaps).sum()
    expected = torch.autograd.grad(reference_loss, list(model.trunk.parameters()))
    model.zero_grad(set_to_none=True)
    fresh = weighting.get("famo", tasks=3)
    fresh.backward(model.losses(x, ys))
    for p, e in zip(model.trunk.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)


class FamoReference:
    """The paper's FAMO written with autograd and torch.optim.Adam: ξ a leaf tensor, its own optimizer."""

    def __init__(self, minimum: list[float], gamma: float, w_lr: float) -> None:
        self.minimum = torch.tensor(minimum, dtype=torch.float64)
        self.logits = torch.zeros(len(minimum), dtype=torch.float64, requires_grad=True)
        self.adam = torch.optim.Adam([self.logits], lr=w_lr, weight_decay=gamma)
        self.previous: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor, multipliers: list[float]) -> torch.Tensor:
        active = torch.tensor(multipliers) > 0
        now = losses.double()
        if self.previous is not None:  # d = log(L_prev − min) − log(L_now − min), 0 for a muted task
            previous_log_gap, log_gap = (torch.log(loss - self.minimum + 1e-8) for loss in (self.previous, now))
            d = torch.where(active, previous_log_gap - log_gap, 0.0)
            self.adam.zero_grad()
            (self.logits.grad,) = torch.autograd.grad(torch.softmax(self.logits, 0), self.logits, grad_outputs=d)
            self.adam.step()
        self.previous = now
        z = torch.softmax(self.logits.detach().masked_fill(~active, -math.inf), 0)
        shares = torch.where(active, z / (now - self.minimum + 1e-8), 0.0)
        return (shares / shares.sum()).float()


def famo_steps(strategy, reference: FamoReference, steps: range, seed: int = 4) -> None:
    """Run both on the same random losses, task 1 muted at steps 3 and 4; ξ and the weights must agree."""
    g = torch.Generator().manual_seed(seed)
    for step in steps:
        losses = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).float()
        multipliers = [1.0, 0.0 if step in (3, 4) else 1.0, 1.0]
        for task, value in enumerate(multipliers):
            strategy.set_multiplier(task, value)
        weights = strategy.compute_weights(losses)
        expected = reference.weights(losses, multipliers)
        torch.testing.assert_close(strategy.logits, reference.logits.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(weights, expected, rtol=1e-6, atol=0.0)
        assert weights.dtype == losses.dtype


def test_famo_logits_take_adam_steps_on_the_softmax_gradient_of_the_log_loss_drop():
    """The paper's ξ update: d = log(L_prev − min) − log(L_now − min), ξ ← Adam(ξ, (∂z/∂ξ)ᵀ d), weight decay γ.

    Over several steps, with min_losses, a task muted in the middle (its entry of d is 0 and
    its z left out of the weights) and unmuted again.
    """
    minimum = [0.1, 0.0, 0.2]
    strategy = weighting.get("famo", tasks=3, gamma=0.01, w_lr=0.05, min_losses=minimum)
    famo_steps(strategy, FamoReference(minimum, gamma=0.01, w_lr=0.05), range(8))


def test_famo_resumes_from_a_checkpoint_of_the_earlier_layout():
    """Checkpoints written before ξ became buffers held ξ and an Adam state dict as extra state."""
    minimum = [0.1, 0.0, 0.2]
    reference = FamoReference(minimum, gamma=0.01, w_lr=0.05)
    strategy = weighting.get("famo", tasks=3, gamma=0.01, w_lr=0.05, min_losses=minimum)
    famo_steps(strategy, reference, range(5), seed=7)
    earlier = {k: v for k, v in strategy.state_dict().items() if not k.startswith("logits")}
    earlier["_extra_state"] = {"logits": reference.logits.detach().clone(), "optimizer": reference.adam.state_dict()}

    resumed = weighting.get("famo", tasks=3, gamma=0.01, w_lr=0.05, min_losses=minimum)
    resumed.load_state_dict(earlier)
    famo_steps(resumed, reference, range(5, 9), seed=8)


def test_famo_moves_weight_towards_the_task_that_improves_least():
    strategy = weighting.get("famo", tasks=2, gamma=0.0)
    strategy.compute_weights(torch.tensor([1.0, 1.0]))
    for _ in range(20):  # task 0 stalls, task 1 keeps halving
        strategy.compute_weights(torch.tensor([1.0, 1.0]))
        strategy.previous_losses[1] *= 2
    logits = strategy.logits
    assert logits[0] > logits[1]


def test_gradnorm_weight_gradient_is_that_of_the_papers_objective():
    model = HardSharing()
    strategy = weighting.get("gradnorm", tasks=3, alpha=1.5)
    x, ys = batch()
    last = list(model.trunk[0].parameters())
    strategy.backward(model.losses(x, ys), shared_parameters=last)  # sets the initial losses
    got = strategy.loss_scales.grad.clone()
    # The paper's L_grad = Σ |‖∇_W wᵢLᵢ‖ − mean‖∇_W wⱼLⱼ‖ · rᵢ^α| with the target held constant.
    w = strategy.loss_scales.detach().clone().requires_grad_(True)
    losses = model.losses(x, ys)
    norms = torch.stack(
        [torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(loss, last, retain_graph=True))) for loss in losses]
    )
    weighted = w * norms
    ratios = torch.ones(3)  # first step: every loss equals its initial value
    target = (weighted.mean() * ratios**1.5).detach()
    (expected,) = torch.autograd.grad((weighted - target).abs().sum(), w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gradnorm_later_steps_pull_each_weight_toward_its_relative_loss_ratio():
    model = HardSharing()
    strategy = weighting.get("gradnorm", tasks=3, alpha=1.5)
    last = list(model.trunk[0].parameters())
    first_losses = [loss.item() for loss in model.losses(*batch(seed=0))]
    strategy.backward(model.losses(*batch(seed=0)), shared_parameters=last)  # the losses Lᵢ(0)
    x, ys = batch(seed=1)
    losses = model.losses(x, ys)
    norms = torch.stack(
        [torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(loss, last, retain_graph=True))) for loss in losses]
    ).detach()
    ratios = torch.tensor([loss.item() / first for loss, first in zip(losses, first_losses, strict=True)])
    relative = ratios / ratios.mean()

    def paper_gradient(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """∂/∂w of Σ |wᵢ‖∇_W Lᵢ‖ − mean_j(wⱼ‖∇_W Lⱼ‖) · rᵢ^α|, the target held constant."""
        w = w.clone().requires_grad_(True)
        weighted = w * norms
        target = (weighted.mean() * r**1.5).detach()
        return torch.autograd.grad((weighted - target).abs().sum(), w)[0]

    # Weights that put each weighted norm 3% above or below its target, so that only the paper's
    # ratios (relative to their mean) give these signs: raw ratios shift every target alike.
    w = relative**1.5 / norms * torch.tensor([1.03, 0.97, 1.03])
    w = w * 3 / w.sum()  # as the strategy renormalises them
    expected = paper_gradient(w, relative)
    assert not torch.equal(expected.sign(), paper_gradient(w, ratios).sign()), "a case that tells the ratios apart"
    with torch.no_grad():  # as an optimizer step would have moved them
        strategy.loss_scales.copy_(w)
    strategy.loss_scales.grad = None
    strategy.backward(model.losses(x, ys), shared_parameters=last)
    torch.testing.assert_close(strategy.loss_scales.grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(strategy.weights, w, rtol=1e-6, atol=0)  # the weights it reports


@pytest.mark.parametrize("muted", [None, 1])
@pytest.mark.parametrize("given", ["last shared layer", "found"])
def test_gradnorm_leaves_the_models_gradients_of_its_weighted_loss(given, muted):
    """Every parameter's gradient, W's included, is that of Σ wᵢLᵢ with the weights it reports."""
    model, twin = HardSharing(), HardSharing()
    strategy = weighting.get("gradnorm", tasks=3)
    with torch.no_grad():
        strategy.loss_scales.copy_(torch.tensor([0.5, 1.7, 0.8]))
    if muted is not None:
        strategy.set_multiplier(muted, 0.0)
    strategy.set_multiplier(2, 1.5)
    shared = list(model.trunk[0].parameters()) if given == "last shared layer" else None
    x, ys = batch(seed=2)
    strategy.backward(model.losses(x, ys), shared_parameters=shared)
    weights = strategy.weights.tolist()
    assert weights[2] == pytest.approx(0.8 * 1.5, rel=1e-5)  # scale × multiplier (the scales already sum to 3)
    sum(w * loss for w, loss in zip(weights, twin.losses(x, ys), strict=True)).backward()
    for (name, got), expected in zip(model.named_parameters(), twin.parameters(), strict=True):
        if got.grad is None:  # a muted task's head: 0·L leaves zeros on the twin
            assert muted is not None and not expected.grad.any(), name
        else:
            torch.testing.assert_close(got.grad, expected.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_gradnorm_renormalises_its_weights_to_sum_to_the_task_count():
    _, strategy = train("gradnorm", steps=5)
    strategy.backward(HardSharing().losses(*batch()))
    assert strategy.loss_scales.sum().item() == pytest.approx(3.0, rel=1e-5)


def kendall_data(n: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kendall et al.'s toy problem: y1 = 2x + 8 + 10·noise, y2 = 3x + 3 + 1·noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    y1 = 2 * x + 8 + 10 * torch.randn(n, 1, generator=g)
    y2 = 3 * x + 3 + 1 * torch.randn(n, 1, generator=g)
    return x, y1, y2


def least_squares_sigma(x: torch.Tensor, y: torch.Tensor) -> float:
    design = torch.cat([x, torch.ones_like(x)], 1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution
    return (y.double() - design @ solution).pow(2).mean().sqrt().item()


def test_uncertainty_learns_the_least_squares_residual_sigmas_on_kendalls_toy_problem():
    x, y1, y2 = kendall_data()
    torch.manual_seed(0)
    heads = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    strategy = weighting.get("uncertainty", tasks=["y1", "y2"])
    optimizer = torch.optim.Adam([*heads.parameters(), *strategy.parameters()], lr=0.05)
    for _ in range(3000):
        optimizer.zero_grad()
        losses = [nn.functional.mse_loss(heads[0](x), y1), nn.functional.mse_loss(heads[1](x), y2)]
        strategy.backward(losses)
        optimizer.step()
    truth = [least_squares_sigma(x, y1), least_squares_sigma(x, y2)]
    assert strategy.sigmas.tolist() == pytest.approx(truth, rel=0.03)
    assert truth[0] > 5 * truth[1]  # the problem is the paper's: one noisy task, one clean


def test_a_gradient_method_in_a_plain_loop_is_three_lines():
    model = HardSharing()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    mgda = weighting.get("mgda", tasks=3)  # 1
    start = [loss.item() for loss in model.losses(*batch(0))]
    for step in range(30):
        x, ys = batch(step % 2)
        optimizer.zero_grad()
        mgda.backward(model.losses(x, ys))  # 2
        optimizer.step()  # 3
    end = [loss.item() for loss in model.losses(*batch(0))]
    assert all(e < s for s, e in zip(start, end)), "MGDA's step lowers every task's loss"
    assert isinstance(mgda, GradientWeighting)
