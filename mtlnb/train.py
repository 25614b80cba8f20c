"""`python -m mtlnb.train`: train a model file's `build()` with the Trainer, in one process or under torchrun.

    torchrun --nproc_per_node=2 -m mtlnb.train --model examples/readme_model.py:build \\
        --weighting pcgrad --steps 300 --batch 64 --history run.jsonl --control run.control

`build(seed)` returns `(model, dataset)`: an MTLModel and a map-style dataset of
`(inputs, targets)` samples. Each rank trains on its shard (a `DistributedSampler`,
in order, so that ranks together see exactly the batches one process would) with
`--batch` samples a step in total. Rank 0 writes the history to `--history` as JSON
Lines; rank r > 0 to `<log>.rank<r>.jsonl`. `--control` is a file of changes that
rank 0 reads every step and broadcasts (see `mtlnb.distributed.ControlFile`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import MTLError
from .outputs import JsonLinesLogger
from .training import Trainer
from .weighting import options


def rank_path(path: str | Path, rank: int) -> Path:
    """The file rank `rank` writes: `path` itself for rank 0, `<stem>.rank<r><suffix>` for the others."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def split_model_spec(spec: Any, prefix: str = "mtlnb.train --model: ") -> tuple[str, str]:
    """`path/to/file.py:function` or `package.module:function` to (target, function), the file checked to exist."""
    target, _, name = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not target or not name:
        raise MTLError(f"{prefix}model should be 'FILE.py:FUNCTION' or 'MODULE:FUNCTION'. Found {spec!r}.")
    if target.endswith(".py") and not Path(target).is_file():
        raise MTLError(f"{prefix}model file {target!r} does not exist (relative paths start at {Path.cwd()})")
    return target, name


def load_builder(spec: str) -> Any:
    """`path/to/file.py:function` or `package.module:function` to the function."""
    target, name = split_model_spec(spec)
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, name):
        raise MTLError(f"--model: {target} has no {name!r}")
    return getattr(module, name)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mtlnb.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="FILE.py:FUNCTION or MODULE:FUNCTION returning (model, dataset)")
    parser.add_argument("--weighting", default="fixed", help="a name from mtlnb.weighting.list_weightings()")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (or --epochs)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64, help="samples per step over all ranks")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history", type=Path, default=None, help="JSON Lines history (rank 0; others get .rank<r>)")
    parser.add_argument("--control", type=Path, default=None, help="control file read by rank 0 every step")
    parser.add_argument("--save", type=Path, default=None, help="final model parameters (per rank: .rank<r>)")
    parser.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: a slow job
    args = parser.parse_args(argv)
    if (args.steps is None) == (args.epochs is None):
        parser.error("give exactly one of --steps or --epochs")
    try:
        options(args.weighting)
    except MTLError as error:  # a typo: say so in one line, not with a traceback from every rank
        parser.error(f"--weighting: {error}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # torchrun ends the surviving ranks with SIGTERM when one fails: end like an exception, so the
    # history records the failure and its last step instead of stopping mid-line.
    signal.signal(
        signal.SIGTERM,
        lambda *_: (_ for _ in ()).throw(SystemExit("ended by SIGTERM (torchrun ends every rank when one fails)")),
    )
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    if args.batch % world:
        raise MTLError(f"--batch {args.batch} does not split over {world} ranks; use a multiple of {world}")

    model, dataset = load_builder(args.model)(seed=args.seed)
    sampler = (
        torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        if world > 1
        else None
    )
    data = torch.utils.data.DataLoader(dataset, batch_size=args.batch // world, sampler=sampler, shuffle=False)
    optimizer_class = torch.optim.Adam if args.optimizer == "adam" else torch.optim.SGD
    optimizer = optimizer_class(model.parameters(), lr=args.lr)
    outputs = []
    if args.history:
        rank_path(args.history, rank).unlink(missing_ok=True)  # a new run: a follower must not read an old one
        outputs.append(JsonLinesLogger(rank_path(args.history, rank), flush_every=0.2))
    if args.step_delay:
        outputs.append(_Delay(args.step_delay))
    trainer = Trainer(model, optimizer, data, weighting=args.weighting, outputs=outputs, control_file=args.control)
    try:
        trainer.fit(epochs=args.epochs, steps=args.steps)
    except BaseException as error:
        print(f"mtlnb.train: rank {rank} of {world} failed at step {trainer.step}: {error}", file=sys.stderr)
        raise
    finally:
        if args.save:
            torch.save(model.state_dict(), rank_path(args.save, rank))
    if rank == 0:
        print(f"mtlnb.train: {trainer.state} after {trainer.step} steps on {world} rank(s)")
    return 0  # distributed.init() ends the process group at exit


class _Delay:
    """Slows every step down (so that tests can act on a running job)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def send(self, update: Any) -> None:
        if update.kind == "step":
            import time

            time.sleep(self.seconds)


if __name__ == "__main__":
    sys.exit(main())
