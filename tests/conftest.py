"""Specs shared by the tests: torchMTL's README example and its multi-branch test spec."""

from __future__ import annotations

import pytest
import torch
from torch.nn import BCEWithLogitsLoss, Linear, MSELoss, Sequential

from mtlnb import Concat


def readme_tasks(task3_weight: object = "auto") -> list[dict]:
    """torchMTL's README quickstart: two embeddings, a concatenation, three tasks."""
    return [
        {"name": "Embed1", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "Embed2", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "CatTask", "layers": Concat(dim=1), "loss_weight": 1.0, "anchor_layer": ["Embed1", "Embed2"]},
        {
            "name": "Task1",
            "layers": Sequential(Linear(8, 32), Linear(32, 1)),
            "loss": MSELoss(),
            "loss_weight": 1.0,
            "anchor_layer": "Embed1",
        },
        {
            "name": "Task2",
            "layers": Sequential(Linear(8, 64), Linear(64, 1)),
            "loss": BCEWithLogitsLoss(),
            "loss_weight": 1.0,
            "anchor_layer": "Embed2",
        },
        {"name": "FNN", "layers": Sequential(Linear(16, 32), Linear(32, 32)), "anchor_layer": "CatTask"},
        {
            "name": "Task3",
            "layers": Sequential(Linear(32, 16), Linear(16, 1)),
            "anchor_layer": "FNN",
            "loss": MSELoss(),
            "loss_weight": task3_weight,
            "loss_init_val": 1.0 if task3_weight == "auto" else None,
        },
    ]


README_OUTPUTS = ["Task1", "Task2", "Task3"]


def readme_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inputs and one target per README task: a regression, a binary label, a noisy regression."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    a, b, c = (torch.randn(16, 1, generator=g) for _ in range(3))
    y1 = x @ a + 0.1 * torch.randn(n, 1, generator=g)
    y2 = (x @ b > 0).float()
    y3 = torch.tanh(x @ c) + 0.3 * torch.randn(n, 1, generator=g)
    return x, [y1, y2, y3]


@pytest.fixture
def readme_spec() -> list[dict]:
    torch.manual_seed(0)
    return readme_tasks()
