"""torchMTL code runs on mtlnb with only its import changed.

Each test body is torchMTL's own code (its test suite, README and uncertainty
notebook) and runs against a `lib` namespace: mtlnb, and torchmtl 0.1.9 itself
when it is installed, so that "the same behaviour" is checked, not assumed.
"""

from __future__ import annotations

import importlib.util
import types

import networkx as nx
import numpy as np
import pytest
import torch
from networkx.algorithms import is_isomorphic
from torch import nn, optim
from torch.nn import BCEWithLogitsLoss, Linear, MSELoss, Sequential


def mtlnb_namespace() -> types.SimpleNamespace:
    from mtlnb import Concat, MTLModel, SimpleSelect, SliceSelect

    return types.SimpleNamespace(MTLModel=MTLModel, Concat=Concat, SimpleSelect=SimpleSelect, SliceSelect=SliceSelect)


def torchmtl_namespace() -> types.SimpleNamespace:
    from torchmtl import MTLModel
    from torchmtl.wrapping_layers import Concat, SimpleSelect, SliceSelect

    return types.SimpleNamespace(MTLModel=MTLModel, Concat=Concat, SimpleSelect=SimpleSelect, SliceSelect=SliceSelect)


HAVE_TORCHMTL = importlib.util.find_spec("torchmtl") is not None
needs_torchmtl = pytest.mark.skipif(not HAVE_TORCHMTL, reason="torchmtl is not installed (make test installs it)")


@pytest.fixture(params=["mtlnb", pytest.param("torchmtl", marks=needs_torchmtl)])
def lib(request) -> types.SimpleNamespace:
    return mtlnb_namespace() if request.param == "mtlnb" else torchmtl_namespace()


def complex_tasks(lib):
    """torchMTL's tests/test_meta_comp_graph.py fixture, verbatim."""
    return [
        {
            'name': "InputTask2",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 8)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
        },
        {
            'name': "InputTask1",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 8)]),
            'loss_weight': 1.0
        },
        {
            'name': "CombTask",
            'layers': lib.Concat(dim=1),
            'loss_weight': 1.0,
            'anchor_layer': ['InputTask1', 'InputTask2']
        },
        {
            'name': "AuxTask1",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 1)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'CombTask'
        },
        {
            'name': "MiddleTask1",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 8)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'CombTask'
        },
        {
            'name': "AuxTask2",
            'layers': Sequential(*[Linear(8, 32), Linear(32, 1)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'MiddleTask1'
        },
        {
            'name': "MiddleTask2",
            'layers': Sequential(*[Linear(8, 32), Linear(32, 4)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'MiddleTask1'
        },
        {
            'name': "AuxTask3",
            'layers': Sequential(*[Linear(4, 32), Linear(32, 1)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'MiddleTask2'
        }
    ]


def test_graph_generation_is_isomorphic_to_the_ground_truth(lib):
    ground_truth_graph = nx.DiGraph()
    ground_truth_graph.add_nodes_from(['root', 'InputTask1', 'InputTask2', 'CombTask', 'AuxTask1',
                                       'MiddleTask1', 'AuxTask2', 'MiddleTask2', 'AuxTask3'])
    ground_truth_graph.add_edges_from([('root', 'InputTask1'), ('root', 'InputTask2'),
                                       ('InputTask1', 'CombTask'), ('InputTask2', 'CombTask'),
                                       ('CombTask', 'AuxTask1'), ('CombTask', 'MiddleTask1'),
                                       ('MiddleTask1', 'AuxTask2'), ('MiddleTask1', 'MiddleTask2'),
                                       ('MiddleTask2', 'AuxTask3')])
    model = lib.MTLModel(complex_tasks(lib), output_tasks=['AuxTask1', 'AuxTask2', 'AuxTask3'])
    assert is_isomorphic(model.g, ground_truth_graph)


def train_three_mse_tasks(lib, losses_used=(0, 1, 2)):
    """torchMTL's test_3_mse_tasks loop. Its repository version reads `preds = model(X)`, written before
    forward returned the triple; torchmtl 0.1.9 (and mtlnb) return `(y_hat, losses, weights)`."""
    torch.manual_seed(0)
    model = lib.MTLModel(complex_tasks(lib), output_tasks=['AuxTask1', 'AuxTask2', 'AuxTask3'])
    sample_size = 16
    X = torch.rand((sample_size, 16))
    truths = [torch.ones(sample_size, 1) * 10., torch.ones(sample_size, 1) * 20., torch.ones(sample_size, 1) * 30.]
    mse = nn.MSELoss()
    optimizer = optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(1000):
        optimizer.zero_grad()
        preds, _, _ = model(X)
        loss = sum(mse(truths[i], preds[i]) for i in losses_used)
        loss.backward()
        optimizer.step()
    return preds, truths


def test_3_mse_tasks_converge(lib):
    preds, truths = train_three_mse_tasks(lib)
    for pred, truth in zip(preds, truths):
        assert torch.isclose(pred, truth, atol=1.0).all()


def test_3_mse_tasks_2_losses_leave_the_untrained_task_off(lib):
    preds, truths = train_three_mse_tasks(lib, losses_used=(0, 2))
    assert torch.isclose(preds[0], truths[0], atol=1.0).all()
    assert not torch.isclose(preds[1], truths[1], atol=1.0).all()
    assert torch.isclose(preds[2], truths[2], atol=1.0).all()


@needs_torchmtl
def test_same_seed_same_training_as_torchmtl():
    ours, _ = train_three_mse_tasks(mtlnb_namespace())
    theirs, _ = train_three_mse_tasks(torchmtl_namespace())
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)


def readme_tasks(lib):
    """torchMTL's README quickstart, verbatim."""
    return [
        {
            'name': "Embed1",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 8)]),
            # No anchor_layer means this layer receives input directly
        },
        {
            'name': "Embed2",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 8)]),
            # No anchor_layer means this layer receives input directly
        },
        {
            'name': "CatTask",
            'layers': lib.Concat(dim=1),
            'loss_weight': 1.0,
            'anchor_layer': ['Embed1', 'Embed2']
        },
        {
            'name': "Task1",
            'layers': Sequential(*[Linear(8, 32), Linear(32, 1)]),
            'loss': MSELoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'Embed1'
        },
        {
            'name': "Task2",
            'layers': Sequential(*[Linear(8, 64), Linear(64, 1)]),
            'loss': BCEWithLogitsLoss(),
            'loss_weight': 1.0,
            'anchor_layer': 'Embed2'
        },
        {
            'name': "FNN",
            'layers': Sequential(*[Linear(16, 32), Linear(32, 32)]),
            'anchor_layer': 'CatTask'
        },
        {
            'name': "Task3",
            'layers': Sequential(*[Linear(32, 16), Linear(16, 1)]),
            'anchor_layer': 'FNN',
            'loss': MSELoss(),
            'loss_weight': 'auto',
            'loss_init_val': 1.0
        }
    ]


def readme_training_loop(model, data_loader, optimizer):
    """torchMTL's README training loop, verbatim."""
    for X, y in data_loader:
        optimizer.zero_grad()

        # Our model will return a list of predictions,
        # loss functions, and regularization parameters (as defined in the tasks variable)
        y_hat, l_funcs, l_weights = model(X)

        loss = None
        # We can now iterate over the tasks and accumulate the losses
        for i in range(len(y_hat)):
            if not loss:
                loss = l_weights[i] * l_funcs[i](y_hat[i], y[i])
            else:
                loss += l_weights[i] * l_funcs[i](y_hat[i], y[i])

        loss.backward()
        optimizer.step()


def readme_data_loader(batches=3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 16, generator=g),
         [torch.randn(8, 1, generator=g), torch.randint(0, 2, (8, 1), generator=g).float(), torch.randn(8, 1, generator=g)])
        for _ in range(batches)
    ]


def test_readme_example_builds_and_its_loop_runs():
    lib = mtlnb_namespace()
    model = lib.MTLModel(readme_tasks(lib), output_tasks=['Task1', 'Task2', 'Task3'])
    optimizer = optim.Adam(model.parameters())
    with pytest.warns(UserWarning, match="model.loss"):  # the loop works; mtlnb says how to weight 'auto' soundly
        readme_training_loop(model, readme_data_loader(), optimizer)


@needs_torchmtl
def test_the_readme_loop_crashes_on_torchmtl_itself():
    """The fact mtlnb fixes: torchMTL's 'auto' weight has shape (1,), and `loss +=` cannot broadcast into shape []."""
    lib = torchmtl_namespace()
    model = lib.MTLModel(readme_tasks(lib), output_tasks=['Task1', 'Task2', 'Task3'])
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        readme_training_loop(model, readme_data_loader(), optim.Adam(model.parameters()))


def uncertainty_notebook(lib, nb_epoch):
    """torchMTL's examples/uncertainty_weighted_loss.ipynb: a node that returns `(log_vars, X)`."""
    np.random.seed(0)
    torch.manual_seed(0)
    input_size, hidden_size, output1_size, output2_size = 1, 2, 1, 1

    def gen_data(N):
        X = np.random.randn(N, input_size)
        Y1 = X.dot(2.) + 8. + 1e1 * np.random.randn(N, output1_size)
        Y2 = X.dot(3.) + 3. + 1e0 * np.random.randn(N, output2_size)
        return X, Y1, Y2

    def shuffle_data(X, Y1, Y2):
        s = np.arange(X.shape[0])
        np.random.shuffle(s)
        return X[s], Y1[s], Y2[s]

    class MultiTaskLossWrapper(nn.Module):
        def __init__(self, num_tasks):
            super().__init__()
            self.num_tasks = num_tasks
            self.log_vars = nn.Parameter(torch.zeros(num_tasks))

        def forward(self, *X):
            return self.log_vars, X

    tasks = [
        {'name': "InputTask", 'layers': Sequential(*[nn.Linear(input_size, hidden_size), nn.ReLU()])},
        {'name': "Lin1", 'layers': nn.Linear(hidden_size, output1_size), 'anchor_layer': "InputTask"},
        {'name': "Lin2", 'layers': nn.Linear(hidden_size, output2_size), 'anchor_layer': "InputTask"},
        {'name': "MultiLoss", 'layers': MultiTaskLossWrapper(num_tasks=2), 'anchor_layer': ['Lin1', 'Lin2']},
    ]
    model = lib.MTLModel(tasks, output_tasks=['MultiLoss'])
    optimizer = optim.Adam(model.parameters())
    N, batch_size = 100, 20
    X, Y1, Y2 = gen_data(N)
    X, Y1, Y2 = X.astype('float32'), Y1.astype('float32'), Y2.astype('float32')
    for _ in range(nb_epoch):
        X, Y1, Y2 = shuffle_data(X, Y1, Y2)
        for j in range(N // batch_size):
            optimizer.zero_grad()
            X_ = torch.from_numpy(X[(j * batch_size):((j + 1) * batch_size)])
            y = [torch.from_numpy(Y1[(j * batch_size):((j + 1) * batch_size)]),
                 torch.from_numpy(Y2[(j * batch_size):((j + 1) * batch_size)])]
            multi_loss_out, _, _ = model(X_)
            log_vars = multi_loss_out[0][0]
            y_hat = multi_loss_out[0][1]
            loss = 0
            for i in range(len(y)):
                precision = torch.exp(-log_vars[i])
                diff = (y_hat[i] - y[i]) ** 2.
                loss += torch.sum(precision * diff + log_vars[i], -1)
            loss = torch.mean(loss)
            loss.backward()
            optimizer.step()
    return torch.exp(log_vars.detach()) ** 0.5


def test_uncertainty_notebook_model_reproduces_the_sigmas_its_notebook_printed():
    """The notebook's committed output is `[8.153119087219238, 1.0081149339675903]` (ground truth 10 and 1)."""
    sigmas = uncertainty_notebook(mtlnb_namespace(), nb_epoch=2000)
    assert sigmas.tolist() == pytest.approx([8.153119087219238, 1.0081149339675903], rel=1e-3)


@needs_torchmtl
def test_uncertainty_notebook_gives_torchmtls_numbers():
    ours = uncertainty_notebook(mtlnb_namespace(), nb_epoch=50)
    theirs = uncertainty_notebook(torchmtl_namespace(), nb_epoch=50)
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_select_layers_keep_torchmtls_signatures():
    lib = mtlnb_namespace()
    tasks = [
        {'name': "First", 'layers': lib.SimpleSelect(selection_axis=0)},
        {'name': "Second", 'layers': lib.SimpleSelect(selection_axis=1)},
        {'name': "Half", 'layers': lib.SliceSelect(sel_slice=slice(0, 2)), 'anchor_layer': 'First'},
    ]
    model = lib.MTLModel(tasks, output_tasks=['Half', 'Second'])
    (half, second), _, _ = model([torch.arange(4), torch.ones(3)])
    assert half.tolist() == [0, 1] and second.tolist() == [1.0, 1.0, 1.0]
