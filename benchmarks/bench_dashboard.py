"""Cost of watching: training with a live dashboard attached, and the cost of one frame of the plots.

1. torchMTL's README model, batch 8, 2000 steps in the background (`start` + `wait`),
   with and without a Dashboard attached, alternated, median of repeats.
2. One frame of the training figure with 6 tasks and 10^5 steps of history: the
   dashboard's blitted frame against a plain full redraw of the same figure.

    python benchmarks/bench_dashboard.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import data, model
from common import markdown_table

from mtlnb import Trainer
from mtlnb.drawing.training_plots import TrainingFigure
from mtlnb.training import History


def train_seconds(with_dashboard: bool, steps: int = 2000) -> float:
    net = model()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=1e-3), data(256), outputs=[])
    if with_dashboard:
        from mtlnb.widgets import Dashboard

        dashboard = Dashboard(trainer)
    start = time.perf_counter()
    trainer.start(steps=steps)
    trainer.wait()
    seconds = time.perf_counter() - start
    if with_dashboard:
        dashboard._render_thread.join(10)
        assert dashboard.frames > 2, "the dashboard drew while training"
    return seconds


def frame_times(frames: int = 30) -> tuple[float, float]:
    names = [f"task{i}" for i in range(6)]
    history = History(names)
    rng = random.Random(0)
    for step in range(100_000):
        history.log(
            step,
            6 * math.exp(-step / 3e4),
            1e-3,
            0.001,
            [math.exp(-step / 3e4) * (1 + 0.1 * rng.random()) for _ in names],
            [1.0] * 6,
        )
    figure = TrainingFigure(names)
    figure.update(history)
    figure.render()
    blitted, full = [], []
    for i in range(frames):
        history.log(100_000 + i, 0.3, 1e-3, 0.001, [0.2] * 6, [1.0] * 6)
        start = time.perf_counter()
        figure.update(history)
        figure.render()
        figure.png()
        blitted.append(time.perf_counter() - start)
        start = time.perf_counter()
        figure.configure()  # forget the background: the next frame is a full redraw
        figure.update(history)
        figure.render()
        figure.png()
        full.append(time.perf_counter() - start)
    return statistics.median(blitted), statistics.median(full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, watched = [], []
    for _ in range(args.repeats):
        plain.append(train_seconds(False))
        watched.append(train_seconds(True))
    base = statistics.median(plain)
    blitted, full = frame_times()
    print(
        f"torch {torch.__version__}, README model, batch 8, 2000 steps, 1 training thread, {args.repeats} alternated repeats, median\n"
    )
    print(
        markdown_table(
            ["", "seconds", "vs without"],
            [
                ["training, no dashboard", f"{base:.2f}", "1.000x"],
                [
                    "training, live dashboard",
                    f"{statistics.median(watched):.2f}",
                    f"{statistics.median(watched) / base:.3f}x",
                ],
            ],
        )
    )
    print()
    print(
        markdown_table(
            ["one frame, 6 tasks, 10^5 steps", "ms (median of 30)"],
            [["dashboard frame (blit + PNG)", f"{blitted * 1e3:.0f}"], ["full redraw (+ PNG)", f"{full * 1e3:.0f}"]],
        )
    )


if __name__ == "__main__":
    main()
