"""Under torchrun (2 ranks, gloo, CPU): the same training as one process, changes at the same step, clean failure.

Each test launches real processes with `python -m torch.distributed.run`, as a user's
`torchrun --nproc_per_node=2` would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mtlnb
from mtlnb.training import launch

REPO = Path(__file__).resolve().parents[1]
MODEL = f"{REPO / 'examples' / 'readme_model.py'}:build"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(command: list[str], timeout: float = 180) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def parameters(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("weighting", mtlnb.weighting.list_weightings())
def test_two_ranks_train_exactly_like_one_process_on_the_full_batches(tmp_path, weighting):
    """For every strategy (the issue names fixed, uncertainty, pcgrad, mgda and cagrad; the others share the code)."""
    common = ["-m", "mtlnb.train", "--model", MODEL, "--weighting", weighting, "--steps", "15", "--batch", "32"]
    run([sys.executable, *common, "--save", str(tmp_path / "single.pt")])
    run([*TORCHRUN, *common, "--save", str(tmp_path / "ranks.pt"), "--history", str(tmp_path / "h.jsonl")])
    single, rank0, rank1 = (parameters(tmp_path / f) for f in ("single.pt", "ranks.pt", "ranks.rank1.pt"))
    assert single.keys() == rank0.keys() == rank1.keys()
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
        assert torch.allclose(rank0[name], value, atol=1e-5, rtol=0), (
            f"{name}: 2 ranks vs 1 process, max difference {(rank0[name] - value).abs().max():.3g}"
        )
    steps = [r for r in records(tmp_path / "h.jsonl") if r["type"] == "step"]
    assert len(steps) == 15 and all(map(torch.isfinite, torch.tensor([r["total"] for r in steps])))


UNEVEN = """
import sys, torch
sys.path.insert(0, {examples!r})
from readme_model import build
from mtlnb import Trainer, distributed

distributed.init()
rank = distributed.rank()
model, data = build(seed=0)
x, y = data.x, data.y
def part(a, b):
    return (x[a:b], [t[a:b] for t in y])
# The full batches are [0:16] and [16:32]. Rank 0 takes 10 and 8 samples of them, rank 1 takes 6 and 8,
# and rank 0 has a third batch that rank 1 lacks: the epoch ends for both when rank 1 runs out.
mine = [part(0, 10), part(16, 24), part(32, 37)] if rank == 0 else [part(10, 16), part(24, 32)]
trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), mine, weighting={weighting!r}, outputs=[])
trainer.fit(epochs=2)
torch.save(model.state_dict(), {out!r} + f".rank{{rank}}.pt")
print("steps", trainer.step, "epochs", trainer.epoch)
"""


@pytest.mark.parametrize("weighting", ["fixed", "pcgrad"])
def test_uneven_batches_count_by_their_size_and_an_uneven_epoch_ends_on_every_rank(tmp_path, weighting):
    script = tmp_path / "uneven.py"
    out = str(tmp_path / "uneven")
    script.write_text(UNEVEN.format(examples=str(REPO / "examples"), weighting=weighting, out=out))
    run([*TORCHRUN, str(script)], timeout=120)

    sys.path.insert(0, str(REPO / "examples"))
    try:
        from readme_model import build
    finally:
        sys.path.remove(str(REPO / "examples"))
    model, data = build(seed=0)
    full = [(data.x[a:b], [t[a:b] for t in data.y]) for a, b in ((0, 16), (16, 32))]
    trainer = mtlnb.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), full, weighting=weighting, outputs=[])
    trainer.fit(epochs=2)
    expected = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    rank0, rank1 = parameters(Path(out + ".rank0.pt")), parameters(Path(out + ".rank1.pt"))
    for name, value in expected.items():
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], value, atol=1e-5, rtol=0), (name, (rank0[name] - value).abs().max())


ENDS_CLEANLY = """
import os, torch
from mtlnb import distributed

def gloo_threads():
    return [t for t in os.listdir("/proc/self/task") if "gloo" in open(f"/proc/self/task/{t}/comm").read()]

distributed.init()
assert gloo_threads(), "expected gloo's threads while the group is up"
torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)  # imports torch._dynamo, as every optimizer does
torch.distributed.all_reduce(torch.ones(2))
torch.distributed.destroy_process_group()
assert not gloo_threads(), f"gloo threads outlive the process group: {gloo_threads()}"
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_a_rank_can_end_its_process_group_so_that_no_gloo_thread_outlives_python(tmp_path):
    """A gloo thread still releasing a collective while Python shuts down aborted ~1 job in 6 (SIGABRT)."""
    script = tmp_path / "ends.py"
    script.write_text(ENDS_CLEANLY)
    run([*TORCHRUN, str(script)], timeout=120)


def test_a_change_through_the_control_file_lands_on_both_ranks_at_the_same_step(tmp_path):
    job = launch(MODEL, nproc=2, steps=3000, directory=tmp_path, extra_args=["--step-delay", "0.005"])
    try:
        deadline = time.time() + 60
        while job.step < 20 and time.time() < deadline:
            time.sleep(0.05)
        job.set_weight("Task2", 0.25)
        job.mute("Task3")
        while len(job.history.events) < 2 and time.time() < deadline:
            time.sleep(0.05)
        job.stop()
        job.wait(60)
    finally:
        job.kill()
    assert job.state == "stopped" and job.step < 3000
    logs = [records(tmp_path / "history.jsonl"), records(tmp_path / "history.rank1.jsonl")]
    changes = [[(r["step"], r["kind"], r["task"], r["value"]) for r in log if r["type"] == "event"] for log in logs]
    assert changes[0] == changes[1], "the ranks applied the changes at different steps"
    (weight_step, *_), (mute_step, *_) = changes[0][:2]
    assert changes[0][:2] == [(weight_step, "weight", "Task2", 0.25), (mute_step, "mute", "Task3", 0.0)]
    for log in logs:
        steps = {r["step"] - 1: r["weights"] for r in log if r["type"] == "step"}  # a row's step index
        assert steps[weight_step - 1]["Task2"] == 1.0 and steps[weight_step]["Task2"] == 0.25
        assert steps[mute_step - 1]["Task3"] == 1.0 and steps[mute_step]["Task3"] == 0.0
        assert log[-1]["type"] == "end" and log[-1]["state"] == "stopped"


def test_killing_one_rank_ends_the_job_with_a_clear_error_not_a_hang(tmp_path):
    job = launch(MODEL, nproc=2, steps=100_000, directory=tmp_path, extra_args=["--step-delay", "0.005"])
    try:
        deadline = time.time() + 60
        while job.step < 10 and time.time() < deadline:
            time.sleep(0.05)
        rank1 = records(tmp_path / "history.rank1.jsonl")[0]
        assert rank1["type"] == "start" and rank1["rank"] == 1
        killed = time.monotonic()
        os.kill(rank1["pid"], signal.SIGKILL)
        with pytest.raises(mtlnb.MTLError) as failure:
            job.wait(60)
        took = time.monotonic() - killed
    finally:
        job.kill()
    assert took < 60, f"the job took {took:.0f} s to end"
    assert job.state == "failed" and job.process.returncode != 0
    message = str(failure.value)
    assert "rank      : 1" in message and "SIGKILL" in message, message
    assert records(tmp_path / "history.jsonl")[-1]["type"] == "end"  # rank 0 recorded how far it got


def test_the_job_follower_refuses_what_the_job_cannot_do(tmp_path):
    job = launch(MODEL, nproc=1, steps=5, directory=tmp_path)
    with pytest.raises(mtlnb.MTLError, match="unknown task 'Task9'"):
        job.set_weight("Task9", 1.0)
    with pytest.raises(mtlnb.MTLError, match="should be a finite number >= 0"):
        job.set_weight("Task1", -1)
    job.wait(60)
    assert job.state == "done" and job.step == 5
    with pytest.raises(mtlnb.MTLError, match="the job has ended"):
        job.stop()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model": "examples/no_such_file.py:build"}, r"model file 'examples/no_such_file.py' does not exist"),
        ({"model": str(REPO / "examples" / "readme_model.py")}, r"'FILE.py:FUNCTION' or 'MODULE:FUNCTION'"),
        ({"weighting": "pcgard"}, r"no weighting is named 'pcgard' \(did you mean 'pcgrad'\?\)"),
        ({"batch": 63}, r"a multiple of 2. Found 63"),
        ({"steps": None}, r"exactly one of steps= or epochs="),
        ({"steps": 0}, r"steps should be a whole number >= 1. Found 0"),
        ({"nproc": 0}, r"nproc should be a whole number of processes >= 1. Found 0"),
        ({"lr": -1.0}, r"lr should be a finite number > 0. Found -1.0"),
    ],
)
def test_launch_refuses_what_the_job_would_refuse_before_starting_it(tmp_path, arguments, message):
    given = {"model": MODEL, "nproc": 2, "steps": 5, "directory": tmp_path} | arguments
    with pytest.raises(mtlnb.MTLError, match=message):
        launch(given.pop("model"), **given)
    assert not (tmp_path / "output.log").exists()  # nothing was started


def test_a_job_that_fails_before_training_says_why_in_the_notebook(tmp_path):
    model_file = tmp_path / "broken_model.py"
    model_file.write_text("def build(seed=0):\n    raise FileNotFoundError('no data in /data/train.csv')\n")
    with pytest.raises(mtlnb.MTLError) as failure:
        launch(f"{model_file}:build", nproc=2, steps=5, directory=tmp_path / "job")
    message = str(failure.value)
    # Each rank's own error, once, before torchrun's summary; not the launcher's traceback.
    assert "ranks 0, 1: FileNotFoundError: no data in /data/train.csv" in message, message
    assert "elastic_launch(" not in message, message
    assert str(tmp_path / "job" / "output.log") in message


def test_a_dashboard_follows_a_job_and_its_slider_reaches_both_ranks(tmp_path):
    pytest.importorskip("ipywidgets")
    from mtlnb.widgets import Dashboard

    from .test_widgets import front_end_click, front_end_update

    job = launch(MODEL, nproc=2, steps=3000, directory=tmp_path, extra_args=["--step-delay", "0.005"])
    try:
        dashboard = Dashboard(job, interval=0.1)
        deadline = time.time() + 60
        while job.step < 10 and time.time() < deadline:
            time.sleep(0.05)
        front_end_update(dashboard.sliders["Task1"], value=0.5)
        while not job.history.events and time.time() < deadline:
            time.sleep(0.05)
        front_end_click(dashboard.stop_button)
        dashboard.wait(60)
    finally:
        job.kill()
    assert job.history.events[0]["task"] == "Task1" and job.history.events[0]["value"] == 0.5
    rank1 = [r for r in records(tmp_path / "history.rank1.jsonl") if r["type"] == "event"]
    assert rank1[0]["step"] == job.history.events[0]["step"]
    assert job.state == "stopped" and "stopped" in dashboard.status.value and dashboard.frames >= 2


def test_following_a_history_no_job_writes_ends_with_a_hint_not_a_silent_wait(tmp_path, capsys):
    from mtlnb.training import JobFollower

    with pytest.raises(mtlnb.MTLError, match=r"no file .*none.jsonl appeared within 3.5 s: is the job running"):
        JobFollower(tmp_path / "none.jsonl", timeout=3.5)
    assert "waiting up to 4 s for the job's first record" in capsys.readouterr().err


def test_a_command_line_typo_is_one_line_for_a_terminal_and_for_the_notebook(tmp_path):
    command = [sys.executable, "-m", "mtlnb.train", "--model", MODEL, "--weighting", "pcgard", "--steps", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: --weighting: no weighting is named 'pcgard' (did you mean 'pcgrad'?)" in result.stderr
    with pytest.raises(mtlnb.MTLError) as failure:
        launch(MODEL, nproc=2, steps=3, directory=tmp_path, extra_args=["--optimizer", "lbfgs"])
    assert "error: argument --optimizer: invalid choice: 'lbfgs'" in str(failure.value).splitlines()[1]
