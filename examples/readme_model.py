"""The model of notebook 03 (torchMTL's README graph) and its data, for `python -m mtlnb.train`.

    torchrun --nproc_per_node=2 -m mtlnb.train --model examples/readme_model.py:build --steps 300 --history run.jsonl

`build()` returns the model and a map-style dataset of `(x, [y1, y2, y3])` samples;
mtlnb.train shards it across ranks with a DistributedSampler.
"""

from __future__ import annotations

import torch
from torch.nn import BCEWithLogitsLoss, Linear, MSELoss, Sequential
from torch.utils.data import Dataset

from mtlnb import Concat, MTLModel


class ThreeTasks(Dataset):
    """x ~ N(0, I) in 16-D; a linear regression, a linear classification and a noisy tanh regression."""

    def __init__(self, n: int = 4096, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 16, generator=g)
        a, b, c = (torch.randn(16, 1, generator=g) for _ in range(3))
        self.y = [
            self.x @ a + 0.1 * torch.randn(n, 1, generator=g),
            (self.x @ b > 0).float(),
            torch.tanh(self.x @ c) + 0.3 * torch.randn(n, 1, generator=g),
        ]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.x[i], [y[i] for y in self.y]


def build(seed: int = 0) -> tuple[MTLModel, Dataset]:
    torch.manual_seed(seed)
    tasks = [
        {"name": "Embed1", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "Embed2", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "CatTask", "layers": Concat(dim=1), "anchor_layer": ["Embed1", "Embed2"]},
        {
            "name": "Task1",
            "layers": Sequential(Linear(8, 32), Linear(32, 1)),
            "loss": MSELoss(),
            "anchor_layer": "Embed1",
        },
        {
            "name": "Task2",
            "layers": Sequential(Linear(8, 64), Linear(64, 1)),
            "loss": BCEWithLogitsLoss(),
            "anchor_layer": "Embed2",
        },
        {"name": "FNN", "layers": Sequential(Linear(16, 32), Linear(32, 32)), "anchor_layer": "CatTask"},
        {
            "name": "Task3",
            "layers": Sequential(Linear(32, 16), Linear(16, 1)),
            "loss": MSELoss(),
            "anchor_layer": "FNN",
        },
    ]
    model = MTLModel(tasks, output_tasks=["Task1", "Task2", "Task3"], example_input=torch.randn(8, 16))
    return model, ThreeTasks(seed=seed)
