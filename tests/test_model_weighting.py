"""MTLModel with a weighting strategy: `weighting=` by name or instance, trained through `model.backward`."""

from __future__ import annotations

import pytest
import torch

import mtlnb.weighting as weighting
from mtlnb import MTLError, MTLModel, SpecError

from .conftest import README_OUTPUTS, readme_data, readme_tasks


def fixed_spec() -> list[dict]:
    return readme_tasks(task3_weight=2.0)


def test_shared_parameters_come_from_the_graph():
    model = MTLModel(fixed_spec(), README_OUTPUTS)
    shared = {id(p) for p in model.shared_parameters()}
    # Embed1 feeds Task1 and Task3, Embed2 feeds Task2 and Task3; FNN serves Task3 alone.
    assert shared == {id(p) for p in [*model.Embed1.parameters(), *model.Embed2.parameters()]}


@pytest.mark.parametrize("name", weighting.list_weightings())
def test_every_strategy_trains_the_model_through_backward(name):
    torch.manual_seed(0)
    options = {"seed": 0} if name in ("pcgrad", "rlw") else {}
    choice = weighting.get(name, tasks=README_OUTPUTS, **options)
    model = MTLModel(fixed_spec(), README_OUTPUTS, weighting=choice)
    assert model.weighting is choice and "weighting." in "".join(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # holds the strategy's own parameters too
    x, y = readme_data(64)
    for _ in range(3):
        optimizer.zero_grad()
        y_hat, _, _ = model(x)
        total, per_task = model.backward(y_hat, y)
        optimizer.step()
    assert torch.isfinite(total) and list(per_task) == README_OUTPUTS
    assert all(p.grad is not None for p in model.Task3.parameters())
    # Task3's spec weight 2.0 became its multiplier.
    assert model.weighting.multipliers.tolist() == [1.0, 1.0, 2.0]


def test_a_gradient_method_has_no_single_loss():
    model = MTLModel(fixed_spec(), README_OUTPUTS, weighting="mgda")
    x, y = readme_data(8)
    with pytest.raises(MTLError, match=r"'mgda' combines gradients.*model.backward\(y_hat, targets\)"):
        model.loss(model(x)[0], y)


def test_backward_equals_the_strategy_on_the_graphs_shared_parameters():
    torch.manual_seed(0)
    model = MTLModel(fixed_spec(), README_OUTPUTS, weighting="cagrad")
    x, y = readme_data(16)
    model.backward(model(x)[0], y)
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    strategy = weighting.get("cagrad", tasks=README_OUTPUTS)
    strategy.set_multiplier("Task3", 2.0)
    strategy.backward(model.task_losses(model(x)[0], y), shared_parameters=model.shared_parameters())
    for a, p in zip(got, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_auto_tasks_need_uncertainty_weighting():
    with pytest.raises(
        SpecError, match=r"task 'Task3', key 'loss_weight': 'auto' means uncertainty weighting, but weighting='pcgrad'"
    ):
        MTLModel(readme_tasks(), README_OUTPUTS, weighting="pcgrad")
    tasks = readme_tasks()
    tasks[6]["loss_init_val"] = 0.5
    model = MTLModel(tasks, README_OUTPUTS, weighting="uncertainty")
    assert len(model.log_vars) == 0  # the strategy owns the learned weights
    assert model(torch.randn(2, 16))[2][2].item() == pytest.approx(0.5)


def test_weighting_errors_name_what_is_valid():
    with pytest.raises(MTLError, match="no weighting is named 'pcgard'"):
        MTLModel(fixed_spec(), README_OUTPUTS, weighting="pcgard")
    with pytest.raises(
        SpecError, match=r"built for tasks \['a', 'b'\]; this model's loss tasks are \['Task1', 'Task2', 'Task3'\]"
    ):
        MTLModel(fixed_spec(), README_OUTPUTS, weighting=weighting.get("mgda", tasks=["a", "b"]))
