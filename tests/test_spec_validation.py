"""Every mistake in a task spec is reported at construction, in one SpecError that names the task and the key."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import Linear, MSELoss

from mtlnb import MTLError, MTLModel, SpecError, SpecWarning

from .conftest import README_OUTPUTS, readme_tasks


def spec_error(tasks, output_tasks=README_OUTPUTS, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        MTLModel(tasks, output_tasks, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MTLError)
    return info.value


def with_change(index: int, **changes) -> list[dict]:
    tasks = readme_tasks()
    tasks[index] = {**tasks[index], **changes}
    for key, value in changes.items():
        if value is _DELETE:
            del tasks[index][key]
    return tasks


_DELETE = object()


# (case, tasks, output_tasks, fragments the single problem line must contain)
SINGLE_MISTAKES = [
    ("spec not a list", readme_tasks()[0], README_OUTPUTS, ["list of task dicts", "dict", "wrap it in a list"]),
    ("empty spec", [], README_OUTPUTS, ["empty"]),
    ("task not a dict", [*readme_tasks(), "Task4"], README_OUTPUTS, ["tasks[7]", "must be a dict", "'Task4'"]),
    ("missing name", with_change(3, name=_DELETE), ["Task2", "Task3"], ["tasks[3]", "'name'", "missing"]),
    ("missing layers", with_change(3, layers=_DELETE), README_OUTPUTS, ["'Task1'", "'layers'", "missing"]),
    ("name not a string", with_change(3, name=3), ["Task2", "Task3"], ["tasks[3]", "'name'", "got 3"]),
    (
        "duplicate name",
        with_change(4, name="Task1"),
        ["Task1", "Task3"],
        ["'Task1' (tasks[4])", "duplicate", "tasks[3]"],
    ),
    ("reserved root", with_change(4, name="root"), ["Task1", "Task3"], ["'root'", "'name'", "reserved"]),
    (
        "name taken by the model",
        with_change(4, name="forward"),
        ["Task1", "Task3"],
        ["'forward'", "'name'", "attribute"],
    ),
    (
        "unknown key anchor_layers",
        with_change(3, anchor_layers="Embed1"),
        README_OUTPUTS,
        ["'Task1'", "'anchor_layers'", "did you mean 'anchor_layer'", "valid keys"],
    ),
    (
        "unknown key loss_weigth",
        with_change(4, loss_weigth=2.0),
        README_OUTPUTS,
        ["'Task2'", "'loss_weigth'", "did you mean 'loss_weight'"],
    ),
    (
        "unknown anchor",
        with_change(3, anchor_layer="Embd1"),
        README_OUTPUTS,
        ["'Task1'", "'anchor_layer'", "'Embd1'", "did you mean 'Embed1'", "known tasks"],
    ),
    (
        "unknown anchor in a list",
        with_change(2, anchor_layer=["Embed1", "Embed3"]),
        README_OUTPUTS,
        ["'CatTask'", "'anchor_layer'", "'Embed3'"],
    ),
    ("empty anchor list", with_change(2, anchor_layer=[]), README_OUTPUTS, ["'CatTask'", "'anchor_layer'", "got []"]),
    ("anchor not a name", with_change(2, anchor_layer=5), README_OUTPUTS, ["'CatTask'", "'anchor_layer'", "got 5"]),
    ("self loop", with_change(5, anchor_layer="FNN"), README_OUTPUTS, ["'FNN'", "'anchor_layer'", "cycle FNN -> FNN"]),
    ("output_tasks empty", readme_tasks(), [], ["output_tasks", "empty"]),
    ("output_tasks unknown", readme_tasks(), ["Task1", "Tsak2"], ["output_tasks", "'Tsak2'", "did you mean 'Task2'"]),
    ("output_tasks a string", readme_tasks(), "Task1", ["output_tasks", "list", "['Task1']"]),
    ("output_tasks twice", readme_tasks(), ["Task1", "Task1"], ["output_tasks", "'Task1'", "twice"]),
    (
        "layers not callable",
        with_change(3, layers="linear"),
        README_OUTPUTS,
        ["'Task1'", "'layers'", "callable", "str"],
    ),
    ("layers a class", with_change(3, layers=nn.ReLU), README_OUTPUTS, ["'Task1'", "'layers'", "class", "ReLU(...)"]),
    ("loss not callable", with_change(3, loss="mse"), README_OUTPUTS, ["'Task1'", "'loss'", "callable"]),
    ("loss a class", with_change(3, loss=MSELoss), README_OUTPUTS, ["'Task1'", "'loss'", "MSELoss(...)"]),
    (
        "negative weight",
        with_change(3, loss_weight=-1.0),
        README_OUTPUTS,
        ["'Task1'", "'loss_weight'", "-1.0", "'auto'"],
    ),
    ("nan weight", with_change(3, loss_weight=math.nan), README_OUTPUTS, ["'Task1'", "'loss_weight'", "nan"]),
    ("infinite weight", with_change(3, loss_weight=math.inf), README_OUTPUTS, ["'Task1'", "'loss_weight'", "inf"]),
    ("bool weight", with_change(3, loss_weight=True), README_OUTPUTS, ["'Task1'", "'loss_weight'", "True"]),
    (
        "misspelled auto",
        with_change(3, loss_weight="Auto"),
        README_OUTPUTS,
        ["'Task1'", "'loss_weight'", "'Auto'", "did you mean 'auto'"],
    ),
    (
        "non-positive init value",
        with_change(6, loss_init_val=0.0),
        README_OUTPUTS,
        ["'Task3'", "'loss_init_val'", "0.0"],
    ),
]


@pytest.mark.parametrize(
    ("case", "tasks", "outputs", "fragments"), SINGLE_MISTAKES, ids=[c[0] for c in SINGLE_MISTAKES]
)
def test_each_mistake_raises_one_spec_error_naming_task_and_key(case, tasks, outputs, fragments):
    error = spec_error(tasks, outputs)
    assert len(error.problems) == 1, error.problems
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} not in: {error}"


def test_cycle_through_several_tasks_is_named_in_order():
    tasks = [
        {"name": "A", "layers": Linear(4, 4), "anchor_layer": "C"},
        {"name": "B", "layers": Linear(4, 4), "anchor_layer": "A"},
        {"name": "C", "layers": Linear(4, 4), "anchor_layer": "B"},
        {"name": "D", "layers": Linear(4, 1), "anchor_layer": "C"},
    ]
    error = spec_error(tasks, ["D"])
    assert len(error.problems) == 1
    cycle = error.problems[0]
    assert "cycle" in cycle and "'anchor_layer'" in cycle
    # The cycle is named as a path that returns to its start, whichever task it starts from.
    path = cycle.split("cycle ")[1].split(";")[0].split(" -> ")
    assert path[0] == path[-1] and sorted(path[:-1]) == ["A", "B", "C"]
    assert all(path[i + 1] == {"A": "B", "B": "C", "C": "A"}[path[i]] for i in range(3))


def test_three_mistakes_are_reported_together():
    tasks = readme_tasks()
    tasks[3] = {**tasks[3], "anchor_layer": "Embd1"}
    tasks[4] = {**tasks[4], "loss_weigth": 2.0}
    tasks[6] = {**tasks[6], "loss_weight": -1}
    error = spec_error(tasks)
    assert len(error.problems) == 3
    text = str(error)
    assert text.startswith("3 problems in the task spec")
    assert "'Task1'" in text and "'Embd1'" in text
    assert "'Task2'" in text and "'loss_weigth'" in text
    assert "'Task3'" in text and "'loss_weight'" in text
    assert [p.split("'")[1] for p in error.problems] == ["Task1", "Task2", "Task3"]  # in spec order


def test_a_task_with_a_bad_key_still_counts_as_a_known_anchor():
    tasks = readme_tasks()
    tasks[5] = {**tasks[5], "loss_weight": "heavy"}  # FNN is broken, Task3 anchors on it
    error = spec_error(tasks)
    assert len(error.problems) == 1 and "'FNN'" in str(error)


def test_weights_accept_plain_numpy_and_tensor_numbers():
    import numpy as np

    for weight in (0, 2, 0.5, np.float32(0.25), torch.tensor(3.0)):
        model = MTLModel(with_change(3, loss_weight=weight), README_OUTPUTS)
        assert model(torch.randn(2, 16))[2][0] == pytest.approx(float(weight))


def test_init_value_without_auto_warns_instead_of_failing():
    with pytest.warns(SpecWarning, match="only used with loss_weight='auto'"):
        MTLModel(with_change(3, loss_init_val=2.0), README_OUTPUTS)


def test_dry_run_names_the_edge_and_the_shapes():
    tasks = readme_tasks()
    tasks[6] = {**tasks[6], "layers": nn.Sequential(Linear(16, 16), Linear(16, 1))}  # FNN gives 32 features
    error = spec_error(tasks, example_input=torch.randn(8, 16))
    (problem,) = error.problems
    assert "'Task3'" in problem
    assert "FNN -> Task3" in problem and "(8, 32)" in problem
    assert "expects 16 input features" in problem


def test_dry_run_with_several_anchors_names_every_edge():
    tasks = readme_tasks()
    tasks[2] = {**tasks[2], "layers": lambda a, b: torch.cat([a, b[:, :3]], 0)}  # row counts differ
    model = MTLModel(tasks, README_OUTPUTS)
    with pytest.raises(SpecError) as info:
        model.check(torch.randn(8, 16))
    problem = str(info.value)
    assert "Embed1 -> CatTask carries (8, 8)" in problem and "Embed2 -> CatTask carries (8, 8)" in problem


def test_dry_run_returns_every_shape_and_leaves_the_model_unchanged():
    tasks = readme_tasks()
    tasks[5] = {**tasks[5], "layers": nn.Sequential(Linear(16, 32), nn.BatchNorm1d(32), nn.Dropout(0.5))}
    model = MTLModel(tasks, README_OUTPUTS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = model.check(torch.randn(8, 16))
    assert shapes == {
        "root": "(8, 16)",
        "Embed1": "(8, 8)",
        "Embed2": "(8, 8)",
        "CatTask": "(8, 16)",
        "Task1": "(8, 1)",
        "Task2": "(8, 1)",
        "FNN": "(8, 32)",
        "Task3": "(8, 1)",
    }
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
