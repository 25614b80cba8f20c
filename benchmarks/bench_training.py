"""Cost of the Trainer's bookkeeping: its step against a hand-written loop over the same model and data.

torchMTL's README model, batch 8, SGD, one thread; both train the same model in
interleaved rounds of 50 steps, median. The Trainer's step also checks for
non-finite losses and gradients, reads pending controls, times the step and writes
the history. It clears gradients by setting `.grad = None` itself rather than through
`optimizer.zero_grad()` (same effect, without the profiler scope around it): the third
row is the hand-written loop doing the same, so that Trainer against it is the cost
of the bookkeeping alone.

    python benchmarks/bench_training.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import readme_tasks
from common import interleaved_medians, markdown_table

from mtlnb import Concat, MTLModel, Trainer

STEPS_PER_ROUND = 50


def data(n_batches: int = 64, batch: int = 8) -> list:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, 16, generator=g),
            [
                torch.randn(batch, 1, generator=g),
                torch.randint(0, 2, (batch, 1), generator=g).float(),
                torch.randn(batch, 1, generator=g),
            ],
        )
        for _ in range(n_batches)
    ]


def model() -> MTLModel:
    torch.manual_seed(0)
    return MTLModel(readme_tasks(Concat), ["Task1", "Task2", "Task3"])


def hand_loop(net: MTLModel, optimizer: torch.optim.Optimizer, batches: list):
    stream = itertools.cycle(batches)

    def run() -> None:
        for _ in range(STEPS_PER_ROUND):
            x, y = next(stream)
            optimizer.zero_grad(set_to_none=True)
            y_hat, _, _ = net(x)
            net.loss(y_hat, y).total.backward()
            optimizer.step()

    return run


def hand_loop_clearing_directly(net: MTLModel, optimizer: torch.optim.Optimizer, batches: list):
    """The hand-written loop with the Trainer's way of clearing gradients: what the bookkeeping alone costs.

    A copy of `hand_loop` with one line changed rather than a flag: a branch inside the
    baseline's step would slow the baseline and flatter the Trainer.
    """
    stream = itertools.cycle(batches)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def run() -> None:
        for _ in range(STEPS_PER_ROUND):
            x, y = next(stream)
            for parameter in parameters:
                parameter.grad = None
            y_hat, _, _ = net(x)
            net.loss(y_hat, y).total.backward()
            optimizer.step()

    return run


def trainer_loop(net: MTLModel, optimizer: torch.optim.Optimizer, batches: list):
    trainer = Trainer(net, optimizer, batches, outputs=[])

    def run() -> None:
        trainer.fit(steps=STEPS_PER_ROUND)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = data()
    # Both loops train the same model with the same optimizer: which tensors sit where in
    # memory moves a step's time by several percent, more than the bookkeeping measured here.
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    contenders = {
        "hand-written loop": hand_loop(net, optimizer, batches),
        "Trainer.fit": trainer_loop(net, optimizer, batches),
        "hand-written, .grad = None": hand_loop_clearing_directly(net, optimizer, batches),
    }
    for run in contenders.values():
        run()
    # Wall time, and this thread's CPU time: the second leaves out the time other processes held
    # the core, the noise that moved the wall-clock ratio between 1.02x and 1.10x on these machines.
    clocks = {"wall": time.perf_counter, "CPU": time.thread_time}
    medians = {
        clock: interleaved_medians(contenders, steps=1, repeats=args.rounds, clock=read)
        for clock, read in clocks.items()
    }
    rows = []
    for name in contenders:
        cells = [name]
        for clock in clocks:
            seconds, base = medians[clock][name], medians[clock]["hand-written loop"]
            cells += [f"{seconds / STEPS_PER_ROUND * 1e6:.0f}", f"{seconds / base:.3f}x"]
        rows.append(cells)
    print(
        f"torch {torch.__version__}, README model, batch 8, 1 thread, {args.rounds} interleaved rounds of {STEPS_PER_ROUND} steps, median\n"
    )
    header = ["loop", "µs per step (wall)", "vs hand-written (wall)", "µs per step (CPU)", "vs hand-written (CPU)"]
    print(markdown_table(header, rows))
    bookkeeping = {
        clock: medians[clock]["Trainer.fit"] / medians[clock]["hand-written, .grad = None"] for clock in clocks
    }
    print(
        f"\nThe bookkeeping alone (Trainer.fit against the hand-written loop that also sets .grad = None): "
        f"{bookkeeping['wall']:.3f}x wall, {bookkeeping['CPU']:.3f}x CPU"
    )


if __name__ == "__main__":
    main()
