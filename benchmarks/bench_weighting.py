"""Cost of every weighting strategy: one training step of a hard-parameter-sharing model, relative to `fixed`.

Shared MLP 64→256→256, 3 task heads, batch 256, Adam; every strategy of
mtlnb.weighting and, where it has the method, torchjd's, interleaved in short
rounds, median; peak memory of each in a fresh process.

    python benchmarks/bench_weighting.py [--rounds 60] [--threads 2] [--skip-memory]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, markdown_table

import mtlnb.weighting as weighting

TASKS, BATCH = 3, 256
# torchjd's aggregator for each method it has, with mtlnb's defaults.
TORCHJD = {
    "pcgrad": lambda a: a.PCGrad(),
    "mgda": lambda a: a.MGDA(),
    "cagrad": lambda a: a.CAGrad(c=0.5),
    "imtl_g": lambda a: a.IMTLG(),
    "aligned_mtl": lambda a: a.AlignedMTL(),
    "nash_mtl": lambda a: a.NashMTL(n_tasks=TASKS),
}


class HardSharing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 1)) for _ in range(TASKS))


def problem(seed: int = 0):
    torch.manual_seed(seed)
    model = HardSharing()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 64, generator=g)
    ys = [torch.randn(BATCH, 1, generator=g) for _ in range(TASKS)]
    return model, x, ys


def mtlnb_step(name: str) -> Callable[[], None]:
    model, x, ys = problem()
    kwargs = {"seed": 0} if name in ("pcgrad", "rlw") else {}
    strategy = weighting.get(name, tasks=TASKS, **kwargs)
    optimizer = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=1e-3)
    # GradNorm's paper measures gradient norms on the last shared layer.
    shared = list(model.trunk[2].parameters()) if name == "gradnorm" else list(model.trunk.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        z = model.trunk(x)
        losses = [nn.functional.mse_loss(head(z), y) for head, y in zip(model.heads, ys)]
        strategy.backward(losses, shared_parameters=shared)
        optimizer.step()

    return step


def torchjd_step(name: str) -> Callable[[], None]:
    import torchjd.aggregation as aggregation
    from torchjd.autojac import jac_to_grad, mtl_backward

    model, x, ys = problem()
    aggregator = TORCHJD[name](aggregation)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    shared = list(model.trunk.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        z = model.trunk(x)
        losses = [nn.functional.mse_loss(head(z), y) for head, y in zip(model.heads, ys)]
        mtl_backward(losses, features=z)
        jac_to_grad(shared, aggregator)
        optimizer.step()

    return step


def gradnorm_floor_step() -> Callable[[], None]:
    """A `fixed` step plus the least GradNorm's definition adds: the per-task gradients of the last
    shared layer's weight (δᵢᵀh, 256×batch by batch×256), one per task beyond the one backward makes."""
    step = mtlnb_step("fixed")
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(TASKS - 1, BATCH, 256, generator=g)
    features = torch.randn(BATCH, 256, generator=g)

    def floor() -> None:
        step()
        for delta in deltas:
            torch.mm(delta.T, features)

    return floor


def contenders(have_torchjd: bool) -> dict[str, Callable[[], Callable[[], None]]]:
    found = {f"mtlnb {name}": (lambda n=name: mtlnb_step(n)) for name in weighting.list_weightings()}
    found["gradnorm floor"] = gradnorm_floor_step
    if have_torchjd:
        found.update({f"torchjd {name}": (lambda n=name: torchjd_step(n)) for name in TORCHJD})
    return found


def peak_memory_mb(label: str, steps: int = 20) -> float:
    """Peak resident memory above the built model while `label` trains `steps` steps, in a fresh interpreter.

    Linux's peak counter (VmHWM) is reset after the model is built, so the figure is
    what the steps themselves add: activations, per-task gradients, optimizer state.
    """
    here = str(Path(__file__).resolve().parent)
    code = f"""
import sys; sys.path.insert(0, {here!r})
import bench_weighting as b, torch
torch.set_num_threads(1)
step = b.contenders(True)[{label!r}]()
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
for _ in range({steps}):
    step()
print((status("VmHWM:") - base) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    have_torchjd = importlib.util.find_spec("torchjd") is not None
    steps = {label: make() for label, make in contenders(have_torchjd).items()}
    for step in steps.values():
        for _ in range(5):
            step()
    medians = interleaved_medians(steps, steps=3, repeats=args.rounds)
    base = medians["mtlnb fixed"]
    memory = {} if args.skip_memory else {label: peak_memory_mb(label) for label in steps if "floor" not in label}
    rows = []
    for name in weighting.list_weightings():
        row = [name, f"{medians[f'mtlnb {name}'] * 1e3:.2f}", f"{medians[f'mtlnb {name}'] / base:.2f}x"]
        theirs = medians.get(f"torchjd {name}")
        row.append(f"{theirs / base:.2f}x" if theirs else "")
        if memory:
            row += [f"{memory[f'mtlnb {name}']:.1f}", f"{memory[f'torchjd {name}']:.1f}" if theirs else ""]
        rows.append(row)
    header = ["strategy", "mtlnb ms/step", "mtlnb vs fixed", "torchjd vs fixed"]
    if memory:
        header += ["mtlnb peak MB", "torchjd peak MB"]
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, {args.rounds} interleaved rounds of 3 steps, median\n"
    )
    print(markdown_table(header, rows))
    print(
        f"\ngradnorm floor: {medians['gradnorm floor'] / base:.2f}x, a fixed step plus the {TASKS - 1} per-task "
        "gradient products on the 256x256 layer that GradNorm's norms need beyond what backward computes"
    )
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
