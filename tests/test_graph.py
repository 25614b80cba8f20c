"""Executing the task graph: order, inputs, outputs, the loss, and playing well with PyTorch."""

from __future__ import annotations

import copy
import pickle
import sys
import warnings

import networkx as nx
import pytest
import torch
from torch import nn
from torch.nn import Linear, MSELoss

from mtlnb import Concat, Lambda, Mean, MTLError, MTLModel, SimpleSelect, SliceSelect, Sum

from .conftest import README_OUTPUTS, readme_data, readme_tasks


class Recorder(nn.Module):
    """Returns its inputs as a tuple and logs which node ran, to observe order and arguments."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, *inputs):
        self.log.append(self.name)
        return (self.name, *inputs)


def test_graph_is_torchmtls_digraph_with_root():
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    assert isinstance(model.g, nx.DiGraph)
    assert set(model.g.nodes) == {"root", "Embed1", "Embed2", "CatTask", "Task1", "Task2", "FNN", "Task3"}
    assert set(model.g.edges) == {
        ("root", "Embed1"),
        ("root", "Embed2"),
        ("Embed1", "CatTask"),
        ("Embed2", "CatTask"),
        ("Embed1", "Task1"),
        ("Embed2", "Task2"),
        ("CatTask", "FNN"),
        ("FNN", "Task3"),
    }
    assert model.layer_names == ["Embed1", "Embed2", "CatTask", "Task1", "Task2", "FNN", "Task3"]


def test_anchors_arrive_in_the_order_listed_and_nodes_run_after_their_anchors():
    log: list[str] = []
    tasks = [
        {
            "name": "Head",
            "layers": Recorder("Head", log),
            "anchor_layer": ["B", "A", "B"],
        },  # defined before its anchors
        {"name": "A", "layers": Recorder("A", log)},
        {"name": "B", "layers": Recorder("B", log), "anchor_layer": "A"},
    ]
    model = MTLModel(tasks, ["Head"])
    (out,), _, _ = model("x")
    assert log == ["A", "B", "Head"]
    a = ("A", "x")
    b = ("B", a)
    assert out == ("Head", b, a, b)


def test_nodes_may_return_anything_and_the_input_may_be_a_tuple_or_a_dict():
    tasks = [
        {"name": "Images", "layers": SimpleSelect(selection_axis=0)},
        {"name": "Meta", "layers": SimpleSelect(selection_axis=1)},
        {
            "name": "Both",
            "layers": Lambda(lambda i, m: (i.sum(1, keepdim=True), m)),
            "anchor_layer": ["Images", "Meta"],
        },
        {"name": "Pick", "layers": SimpleSelect(1), "anchor_layer": "Both"},
    ]
    model = MTLModel(tasks, ["Both", "Pick"])
    images, meta = torch.ones(2, 3), torch.zeros(2, 5)
    (both, pick), _, _ = model((images, meta))
    assert torch.equal(both[0], torch.full((2, 1), 3.0)) and pick is meta

    dict_tasks = [
        {"name": "Text", "layers": SimpleSelect("text")},
        {"name": "Len", "layers": Lambda(len, name="len"), "anchor_layer": "Text"},
    ]
    (length,), _, _ = MTLModel(dict_tasks, ["Len"])({"text": "hello", "other": 1})
    assert length == 5


def test_forward_keeps_no_state_on_the_module_and_skips_nodes_no_output_needs():
    log: list[str] = []
    tasks = [
        {"name": "Trunk", "layers": Recorder("Trunk", log)},
        {"name": "Used", "layers": Recorder("Used", log), "anchor_layer": "Trunk"},
        {"name": "Unused", "layers": Recorder("Unused", log), "anchor_layer": "Trunk"},
    ]
    model = MTLModel(tasks, ["Used"])
    before = dict(vars(model))
    model(1)
    assert log == ["Trunk", "Used"]
    assert dict(vars(model)) == before  # no model.outputs as in torchMTL
    assert set(model.all_outputs(1)) == {"Trunk", "Used", "Unused"}


def test_wrapping_layers():
    a, b = torch.ones(2, 3), 2 * torch.ones(2, 3)
    assert Concat(dim=1)(a, b).shape == (2, 6)
    assert torch.equal(Sum()(a, b, b), 5 * torch.ones(2, 3))
    assert torch.equal(Mean()(a, b, b * 3), 3 * torch.ones(2, 3))
    assert SliceSelect(slice(1, 3))([0, 1, 2, 3]) == [1, 2]
    assert SimpleSelect(selection_axis=1)((a, b)) is b
    seq = nn.Sequential(Linear(2, 2), nn.ReLU(), Linear(2, 1))
    assert isinstance(SliceSelect(slice(0, 2))(seq), nn.Sequential)


def test_triple_weights_are_positive_scalars_and_the_readme_loop_runs_as_written():
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), output_tasks=README_OUTPUTS)
    x, y = readme_data(8)
    y_hat, l_funcs, l_weights = model(x)
    assert l_weights[:2] == [1.0, 1.0]
    learned = l_weights[2]
    assert isinstance(learned, torch.Tensor) and learned.shape == () and learned.item() == pytest.approx(1.0)
    assert isinstance(l_funcs[1], nn.BCEWithLogitsLoss)

    # torchMTL's README loop, verbatim: it crashed there on the 'auto' weight's shape (1,).
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.warns(UserWarning, match="multiplied into a loss by hand"):
        for _ in range(2):
            optimizer.zero_grad()
            y_hat, l_funcs, l_weights = model(x)
            loss = None
            for i in range(len(y_hat)):
                if not loss:
                    loss = l_weights[i] * l_funcs[i](y_hat[i], y[i])
                else:
                    loss += l_weights[i] * l_funcs[i](y_hat[i], y[i])
            loss.backward()
            optimizer.step()


def test_hand_weighting_warning_comes_once_and_never_from_model_loss():
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    x, y = readme_data(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            y_hat, _, _ = model(x)
            model.loss(y_hat, y).total.backward()
    assert caught == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            y_hat, l_funcs, l_weights = model(x)
            sum(w * f(p, t) for w, f, p, t in zip(l_weights, l_funcs, y_hat, y)).backward()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'Task3'" in message and "model.loss(y_hat, targets)" in message
    assert caught[0].filename == __file__


def test_loss_is_the_weighted_sum_with_kendalls_form_for_auto_tasks():
    torch.manual_seed(0)
    tasks = readme_tasks()
    tasks[3]["loss_weight"] = 0.5
    tasks[6]["loss_init_val"] = 0.25
    model = MTLModel(tasks, README_OUTPUTS)
    x, y = readme_data(8)
    y_hat, l_funcs, _ = model(x)
    total, per_task = model.loss(y_hat, y)
    raw = [f(p, t) for f, p, t in zip(l_funcs, y_hat, y)]
    s = model.log_vars["Task3"]
    assert s.item() == pytest.approx(-torch.log(torch.tensor(0.25)).item())  # starts at weight 0.25
    expected = 0.5 * raw[0] + raw[1] + torch.exp(-s) * raw[2] + s
    assert torch.allclose(total, expected)
    assert list(per_task) == README_OUTPUTS
    assert all(torch.equal(per_task[n], r) for n, r in zip(README_OUTPUTS, raw))
    # targets and predictions may also be given by task name
    by_name = model.loss(dict(zip(README_OUTPUTS, y_hat)), dict(zip(README_OUTPUTS, y)))
    assert torch.allclose(by_name.total, total)


def test_loss_errors_name_what_is_missing():
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    x, y = readme_data(8)
    y_hat, _, _ = model(x)
    with pytest.raises(MTLError, match="2 entries but there are 3 output tasks"):
        model.loss(y_hat, y[:2])
    with pytest.raises(MTLError, match="no entry for task 'Task3'"):
        model.loss(y_hat, {"Task1": y[0], "Task2": y[1]})
    no_loss = MTLModel([{"name": "A", "layers": Linear(2, 1)}], ["A"])
    with pytest.raises(MTLError, match="has a 'loss'"):
        no_loss.loss(no_loss(torch.ones(1, 2))[0], [torch.ones(1, 1)])


def test_auto_weight_trains_3000_adam_steps_without_diverging_and_settles():
    """torchMTL's 'auto' went 1.0 -> -0.83 by step 1250 here; Kendall's form keeps it positive and settles it."""
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    x, y = readme_data(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights, task3_losses = [], []
    for step in range(3000):
        rows = torch.arange(step * 32, step * 32 + 32) % 256
        optimizer.zero_grad()
        y_hat, _, l_weights = model(x[rows])
        total, per_task = model.loss(y_hat, [t[rows] for t in y])
        total.backward()
        optimizer.step()
        weights.append(l_weights[2].item())
        task3_losses.append(per_task["Task3"].item())
    weights_t, losses_t = torch.tensor(weights), torch.tensor(task3_losses)
    assert torch.isfinite(losses_t).all() and losses_t[-500:].mean() < losses_t[:100].mean()
    assert (weights_t > 0).all()
    late = weights_t[-500:]
    assert (late.max() - late.min()) / late.mean() < 0.1, "the learned weight should have settled"
    # At the optimum of exp(-s)*L + s, the weight exp(-s) equals 1/L.
    assert late.mean().item() == pytest.approx(1 / losses_t[-500:].mean().item(), rel=0.15)


def test_to_dtype_and_device():
    model = MTLModel(readme_tasks(), README_OUTPUTS).to(torch.float64).to("cpu")
    x, y = readme_data(4)
    y_hat, _, weights = model(x.double())
    assert y_hat[0].dtype == torch.float64 and weights[2].dtype == torch.float64
    assert model.loss(y_hat, [t.double() for t in y]).total.dtype == torch.float64
    meta = MTLModel(readme_tasks(), README_OUTPUTS).to("meta")
    assert meta(torch.empty(4, 16, device="meta"))[0][2].device.type == "meta"


def test_state_dict_round_trip_into_a_fresh_model():
    torch.manual_seed(0)
    trained = MTLModel(readme_tasks(), README_OUTPUTS)
    with torch.no_grad():
        trained.log_vars["Task3"].fill_(0.7)
    torch.manual_seed(1)
    fresh = MTLModel(readme_tasks(), README_OUTPUTS)
    x, _ = readme_data(4)
    assert not torch.equal(fresh(x)[0][0], trained(x)[0][0])
    assert fresh.load_state_dict(trained.state_dict()) is not None
    for a, b in zip(fresh(x)[0], trained(x)[0]):
        assert torch.equal(a, b)
    assert fresh(x)[2][2].item() == pytest.approx(torch.exp(torch.tensor(-0.7)).item())
    assert "Embed1.0.weight" in trained.state_dict() and "log_vars.Task3" in trained.state_dict()


def test_deepcopy_and_pickle_give_independent_working_models():
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    x, _ = readme_data(4)
    reference = model(x)[0]
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert all(torch.equal(a, b) for a, b in zip(clone(x)[0], reference))
        with torch.no_grad():
            clone.Task1[0].weight.add_(1.0)
        assert torch.equal(model(x)[0][0], reference[0])  # the original is untouched
        assert not torch.equal(clone(x)[0][0], reference[0])  # the clone's own module runs


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    x, y = readme_data(8)

    def training_loss(inputs, targets):
        y_hat, _, _ = model(inputs)
        return model.loss(y_hat, targets).total

    compiled = torch.compile(training_loss, fullgraph=True, backend="aot_eager")
    eager = training_loss(x, y)
    assert torch.allclose(compiled(x, y), eager)
    compiled(x, y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager.backward()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, model.parameters()))


def test_shared_module_in_two_tasks_is_one_set_of_parameters():
    shared = Linear(4, 4)
    tasks = [
        {"name": "A", "layers": shared},
        {"name": "B", "layers": shared, "anchor_layer": "A"},
        {"name": "Out", "layers": Linear(4, 1), "anchor_layer": "B", "loss": MSELoss()},
    ]
    model = MTLModel(tasks)
    assert model.output_tasks == ["Out"]  # default: the tasks that have a loss
    assert sum(p.numel() for p in model.parameters()) == 4 * 4 + 4 + 4 + 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
def test_a_layer_or_loss_that_fails_is_named_with_what_it_was_given():
    spec = [
        {"name": "trunk", "layers": nn.Linear(4, 8), "anchor_layer": None},
        {"name": "head", "layers": nn.Linear(7, 1), "anchor_layer": "trunk", "loss": nn.MSELoss(), "loss_weight": 1.0},
    ]
    model = MTLModel(spec, ["head"])
    with pytest.raises(RuntimeError, match="cannot be multiplied") as caught:  # torch's own error, kept
        model(torch.randn(2, 4))
    assert caught.value.__notes__ == [
        "mtlnb: raised in task 'head', given from task 'trunk': a float32 tensor of shape (2, 8)"
    ]
    with pytest.raises(RuntimeError) as caught:
        model(torch.randn(3, 5, dtype=torch.float64))
    assert caught.value.__notes__ == [
        "mtlnb: raised in task 'trunk', given from the model's input: a float64 tensor of shape (3, 5)"
    ]
    spec[1]["layers"] = nn.Linear(8, 1)
    spec.append({"name": "kind", "layers": nn.Linear(8, 3), "anchor_layer": "trunk", "loss": nn.CrossEntropyLoss()})
    model = MTLModel(spec, ["head", "kind"])
    y_hat = model(torch.randn(2, 4))[0]
    with pytest.raises(RuntimeError) as caught:
        model.task_losses(y_hat, [torch.randn(2, 1), torch.randn(2, 1)])  # class indices were meant
    assert caught.value.__notes__ == [
        "mtlnb: raised in the loss of task 'kind' (CrossEntropyLoss), given the prediction a float32 tensor of "
        "shape (2, 3) and the target a float32 tensor of shape (2, 1)"
    ]
