"""Cost of mtlnb's graph machinery: one training step of torchMTL's README model.

mtlnb, an equivalent hand-written nn.Module with the same weights, and torchmtl
0.1.9, one thread, batch 8 and 1024, interleaved, median of repeats; the same in
compiled form; and what `import mtlnb` adds to `import torch`.

    python benchmarks/bench_graph.py [--repeats 15] [--skip-compile]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, Linear, MSELoss, Sequential

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, markdown_table

import mtlnb


def readme_tasks(concat) -> list[dict]:
    return [
        {"name": "Embed1", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "Embed2", "layers": Sequential(Linear(16, 32), Linear(32, 8))},
        {"name": "CatTask", "layers": concat(dim=1), "anchor_layer": ["Embed1", "Embed2"]},
        {"name": "Task1", "layers": Sequential(Linear(8, 32), Linear(32, 1)), "loss": MSELoss(), "loss_weight": 1.0, "anchor_layer": "Embed1"},
        {"name": "Task2", "layers": Sequential(Linear(8, 64), Linear(64, 1)), "loss": BCEWithLogitsLoss(), "loss_weight": 1.0, "anchor_layer": "Embed2"},
        {"name": "FNN", "layers": Sequential(Linear(16, 32), Linear(32, 32)), "anchor_layer": "CatTask"},
        {"name": "Task3", "layers": Sequential(Linear(32, 16), Linear(16, 1)), "anchor_layer": "FNN", "loss": MSELoss(), "loss_weight": "auto", "loss_init_val": 1.0},
    ]  # fmt: skip


class HandWritten(nn.Module):
    """What a user would write by hand for the README architecture."""

    def __init__(self) -> None:
        super().__init__()
        self.Embed1 = Sequential(Linear(16, 32), Linear(32, 8))
        self.Embed2 = Sequential(Linear(16, 32), Linear(32, 8))
        self.Task1 = Sequential(Linear(8, 32), Linear(32, 1))
        self.Task2 = Sequential(Linear(8, 64), Linear(64, 1))
        self.FNN = Sequential(Linear(16, 32), Linear(32, 32))
        self.Task3 = Sequential(Linear(32, 16), Linear(16, 1))
        self.log_var3 = nn.Parameter(torch.zeros(()))
        self.mse, self.bce = MSELoss(), BCEWithLogitsLoss()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1, e2 = self.Embed1(x), self.Embed2(x)
        return [self.Task1(e1), self.Task2(e2), self.Task3(self.FNN(torch.cat([e1, e2], dim=1)))]

    def loss(self, y_hat: list[torch.Tensor], y: list[torch.Tensor]) -> torch.Tensor:
        s = self.log_var3
        return self.mse(y_hat[0], y[0]) + self.bce(y_hat[1], y[1]) + torch.exp(-s) * self.mse(y_hat[2], y[2]) + s


def build_models() -> dict[str, tuple[nn.Module, object]]:
    """The three implementations with identical weights, each with a `(forward, loss)` pair."""
    torch.manual_seed(0)
    ours = mtlnb.MTLModel(readme_tasks(mtlnb.Concat), ["Task1", "Task2", "Task3"])
    hand = HandWritten()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("log_vars")}
    hand.load_state_dict({**state, "log_var3": ours.log_vars["Task3"].detach()}, strict=False)
    models = {
        "mtlnb": (ours, lambda m, x, y: m.loss(m(x)[0], y).total),
        "hand-written": (hand, lambda m, x, y: m.loss(m(x), y)),
    }
    if importlib.util.find_spec("torchmtl"):
        from torchmtl import MTLModel as TorchMTLModel
        from torchmtl.wrapping_layers import Concat as TorchMTLConcat

        theirs = TorchMTLModel(readme_tasks(TorchMTLConcat), ["Task1", "Task2", "Task3"])
        theirs.load_state_dict(state, strict=False)
        with torch.no_grad():
            theirs.Task3_loss.zero_()  # used as Kendall's s, for the same arithmetic

        def torchmtl_loss(m, x, y):
            y_hat, l_funcs, _ = m(x)
            s = m.Task3_loss[0]
            return (
                l_funcs[0](y_hat[0], y[0]) + l_funcs[1](y_hat[1], y[1]) + torch.exp(-s) * l_funcs[2](y_hat[2], y[2]) + s
            )

        models["torchmtl 0.1.9"] = (theirs, torchmtl_loss)
    return models


def training_step(model: nn.Module, loss_fn, x, y) -> callable:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        optimizer.step()

    return step


def data(batch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 16, generator=g)
    return x, [
        torch.randn(batch, 1, generator=g),
        torch.randint(0, 2, (batch, 1), generator=g).float(),
        torch.randn(batch, 1, generator=g),
    ]


def check_same_numbers(models) -> None:
    x, y = data(8)
    losses = {name: loss_fn(model, x, y).item() for name, (model, loss_fn) in models.items()}
    reference = losses["hand-written"]
    for name, value in losses.items():
        if abs(value - reference) > 1e-5 * max(1.0, abs(reference)):
            raise SystemExit(f"{name} computes a different loss ({value}) than the hand-written model ({reference})")


def bench_steps(repeats: int, compiled: bool) -> list[list[str]]:
    rows = []
    for batch, steps in ((8, 10), (1024, 2)):
        models = build_models()
        check_same_numbers(models)
        x, y = data(batch)
        contenders = {}
        for name, (model, loss_fn) in models.items():
            if compiled:
                if name.startswith("torchmtl"):
                    continue
                model = torch.compile(model, fullgraph=True)
            contenders[name] = training_step(model, loss_fn, x, y)
        for fn in contenders.values():  # warm up (and compile)
            for _ in range(20):
                fn()
        medians = interleaved_medians(contenders, steps, repeats)
        base = medians["hand-written"]
        for name, seconds in medians.items():
            label = f"{name} (compiled)" if compiled else name
            rows.append([label, str(batch), f"{seconds * 1e6:.0f}", f"{seconds / base:.3f}x"])
    return rows


def import_overhead(repeats: int) -> float:
    """Median seconds that `import mtlnb` takes in a fresh interpreter that already imported torch."""
    code = "import time, torch; t = time.perf_counter(); import mtlnb; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300, help="interleaved rounds of a few steps each")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, mtlnb {mtlnb.__version__}, 1 thread, {args.repeats} interleaved repeats, median\n"
    )
    rows = bench_steps(args.repeats, compiled=False)
    if not args.skip_compile:
        rows += bench_steps(args.repeats, compiled=True)
    print(markdown_table(["training step", "batch", "µs per step", "vs hand-written"], rows))
    print(
        f"\n`import mtlnb` after `import torch`: {import_overhead(15) * 1000:.0f} ms (median of 15 fresh interpreters)"
    )


if __name__ == "__main__":
    main()
