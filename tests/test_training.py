"""The Trainer: fit and background runs, live controls at the step boundary, bad numbers, history, checkpoints."""

from __future__ import annotations

import io
import json
import math
import pickle
import time

import numpy as np
import pytest
import torch
from torch import nn

import mtlnb
from mtlnb import MTLError, MTLModel, NonFiniteLossError, SpecError, Trainer
from mtlnb.outputs import ConsoleProgress, JsonLinesLogger
from mtlnb.training import History

from .conftest import README_OUTPUTS, readme_data, readme_tasks


def batches(n: int = 256, size: int = 32, seed: int = 0) -> list:
    x, y = readme_data(n, seed)
    return [(x[i : i + size], [t[i : i + size] for t in y]) for i in range(0, n, size)]


def make_trainer(weighting=None, spec=None, lr=1e-3, data=None, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = MTLModel(spec or readme_tasks(task3_weight=1.0), README_OUTPUTS)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, optimizer, data if data is not None else batches(), weighting=weighting, outputs=[], **kwargs)


def test_fit_counts_steps_and_epochs_and_validates_each_epoch():
    trainer = make_trainer(val_data=batches(64, seed=1))
    history = trainer.fit(epochs=2)
    assert (trainer.state, trainer.step, trainer.epoch) == ("done", 16, 2)
    assert len(history) == 16 and [e["epoch"] for e in history.epochs] == [1, 2]
    assert set(history.epochs[-1]["validation"]) == set(README_OUTPUTS)
    trainer.fit(steps=5)
    assert (trainer.step, trainer.epoch) == (21, 2)
    last = history.last()
    assert last["step"] == 20 and math.isfinite(last["total"])
    assert last["weighted/Task1"] == pytest.approx(last["loss/Task1"] * last["weight/Task1"])


def test_a_weight_change_is_in_effect_from_the_next_step_and_recorded_there():
    trainer = make_trainer()
    trainer.fit(steps=3)
    trainer.set_weight("Task2", 0.25)
    trainer.mute("Task3")
    trainer.set_lr(0.5e-3)
    trainer.fit(steps=2)
    _, weights = trainer.history.series("weight/Task2")
    assert weights.tolist() == [1.0, 1.0, 1.0, 0.25, 0.25]
    assert trainer.history.series("weight/Task3")[1].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert trainer.history.series("lr")[1].tolist() == [1e-3] * 3 + [0.5e-3] * 2
    assert [(e["step"], e["kind"], e["task"], e["value"]) for e in trainer.history.events] == [
        (3, "weight", "Task2", 0.25), (3, "mute", "Task3", 0.0), (3, "lr", None, 0.5e-3),
    ]  # fmt: skip
    trainer.unmute("Task3")
    trainer.fit(steps=1)
    assert trainer.multipliers == {"Task1": 1.0, "Task2": 0.25, "Task3": 1.0}


def test_a_muted_task_trains_nothing():
    trainer = make_trainer()
    trainer.mute("Task1")
    head = [p.detach().clone() for p in trainer.model.Task1.parameters()]
    trainer.fit(steps=4)
    assert all(torch.equal(a, p) for a, p in zip(head, trainer.model.Task1.parameters()))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.set_weight("Task1", -1), "should be a finite number >= 0. Found -1"),
        (lambda t: t.set_weight("Task1", math.nan), "Found nan"),
        (lambda t: t.set_weight("Task9", 1.0), "unknown task 'Task9'"),
        (lambda t: t.set_lr(0), "learning rate should be a finite number > 0"),
        (lambda t: t.set_option("c", 0.3), "no live option 'c'"),
    ],
)
def test_invalid_changes_are_refused_and_change_nothing(call, message):
    trainer = make_trainer()
    with pytest.raises(MTLError, match=message):
        call(trainer)
    trainer.fit(steps=2)
    assert trainer.history.events == [] and trainer.multipliers == dict.fromkeys(README_OUTPUTS, 1.0)


def test_a_strategy_knob_changes_live():
    trainer = make_trainer(weighting="cagrad")
    trainer.set_option("c", 0.2)
    with pytest.raises(MTLError, match="parameter `c` should be a non-negative float"):
        trainer.set_option("c", -1)
    trainer.fit(steps=1)
    assert trainer.model.weighting.c == 0.2
    assert trainer.history.events[0]["kind"] == "option"


def test_background_run_pauses_resumes_and_stops_at_a_step_boundary():
    trainer = make_trainer(data=batches(2048, size=8))
    trainer.start(epochs=100)
    assert trainer.running
    deadline = time.time() + 20
    while trainer.step < 5 and time.time() < deadline:
        time.sleep(0.01)
    trainer.pause()
    time.sleep(0.2)
    paused_at = trainer.step
    time.sleep(0.3)
    assert trainer.state == "paused" and trainer.step == paused_at
    trainer.resume()
    while trainer.step < paused_at + 5 and time.time() < deadline:
        time.sleep(0.01)
    assert trainer.step >= paused_at + 5
    trainer.stop()
    stop_asked_at = trainer.step
    trainer.wait(timeout=10)
    assert trainer.state == "stopped" and trainer.step <= stop_asked_at + 1
    assert len(trainer.history) == trainer.step  # every step taken is recorded, none half-done


def test_an_exception_in_the_background_is_shown_and_reraised_by_wait(capfd):
    class Broken(nn.Module):
        def forward(self, prediction, target):
            raise ValueError("the loss function broke at this batch")

    spec = readme_tasks(task3_weight=1.0)
    spec[4] = {**spec[4], "loss": Broken()}
    trainer = make_trainer(spec=spec)
    trainer.start(steps=10)
    with pytest.raises(ValueError, match="the loss function broke"):
        trainer.wait(timeout=10)
    assert trainer.state == "failed"
    assert "the loss function broke" in capfd.readouterr().err


def nan_batches(bad_step: int) -> list:
    data = batches()
    x, targets = data[bad_step]
    data[bad_step] = (x, [targets[0], targets[1], torch.full_like(targets[2], math.nan)])
    return data


def test_a_nan_loss_skips_the_update_and_names_the_task_and_step():
    trainer = make_trainer(data=nan_batches(3))
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss of task 'Task3' is not finite \(nan\)"):
        trainer.fit(epochs=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer.state == "paused" and trainer.step == 4
    event = trainer.history.events[-1]
    assert (event["kind"], event["task"], event["step"]) == ("nonfinite", "Task3", 3)
    trainer.mute("Task3")
    trainer.fit(steps=1)  # goes on with the next batch
    assert trainer.step == 5 and not all(torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


@pytest.mark.parametrize("weighting", [None, *mtlnb.weighting.list_weightings()])
def test_a_muted_task_whose_loss_stays_nan_lets_training_go_on(weighting):
    data = [(x, [t1, t2, torch.full_like(t3, math.nan)]) for x, (t1, t2, t3) in batches()]
    trainer = make_trainer(weighting=weighting, data=data)
    with pytest.raises(NonFiniteLossError, match="Task3"):
        trainer.fit(steps=3)
    trainer.mute("Task3")
    trainer.fit(epochs=1)  # every later batch has the NaN too: the muted task reaches nothing
    assert trainer.state == "done" and trainer.step == 8
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert math.isfinite(trainer.history.last()["total"]) and math.isnan(trainer.history.last()["loss/Task3"])


def test_gradients_are_cleared_for_a_parameter_group_added_after_the_trainer():
    trainer = make_trainer()
    trainer.fit(steps=1)
    extra = nn.Parameter(torch.ones(()))
    trainer.optimizer.add_param_group({"params": [extra]})
    extra.grad = torch.full((), math.nan)  # left over from elsewhere: cleared, then never given a gradient
    trainer.fit(steps=2)
    assert extra.grad is None and torch.equal(extra.detach(), torch.ones(()))


def test_an_optimizer_with_its_own_zero_grad_gets_it_called():
    calls = []

    class Counting(torch.optim.SGD):
        def zero_grad(self, set_to_none: bool = True) -> None:
            calls.append(set_to_none)
            super().zero_grad(set_to_none)

    torch.manual_seed(0)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    trainer = Trainer(model, Counting(model.parameters(), lr=1e-3), batches(), outputs=[])
    trainer.fit(steps=3)
    assert calls == [True, True, True]


def test_a_nan_in_the_background_pauses_with_parameters_unchanged():
    trainer = make_trainer(data=nan_batches(2))
    snapshots = []
    trainer.outputs = [
        type(
            "Spy",
            (),
            {
                "send": lambda self, u: snapshots.append(
                    (u.kind, [p.detach().clone() for p in trainer.model.parameters()])
                )
            },
        )()
    ]
    trainer.start(epochs=1)
    deadline = time.time() + 10
    while trainer.state != "paused" and time.time() < deadline:
        time.sleep(0.01)
    assert trainer.state == "paused" and trainer.step == 3
    after_two = [p for kind, p in snapshots if kind == "step"][-1]
    assert all(torch.equal(a, p) for a, p in zip(after_two, trainer.model.parameters()))
    assert "Task3" in trainer.history.events[-1]["message"]
    trainer.mute("Task3")
    trainer.resume()
    trainer.wait(timeout=10)
    assert trainer.state == "done" and trainer.step == 8


def test_history_memory_stays_bounded_and_keeps_extremes():
    history = History([f"task{i}" for i in range(6)])
    for step in range(1_000_000):
        spike = 1e3 if step == 123_457 else 1.0
        history.log(step, spike, 0.1, 0.001, [spike] * 6, [1.0] * 6)
    assert len(history) == 1_000_000
    assert history.nbytes < 50 * 2**20
    steps, values = history.series("loss/task3")
    assert values.max() == 1e3 and steps[-1] == 999_999
    assert len(steps) < 20_000


def test_a_plot_read_right_after_old_steps_are_folded_shows_each_step_once():
    history = History(["a"], recent=64, archive=8)
    for step in range(1000):
        history.log(step, float(step), 0.1, 0.001, [float(step)], [1.0])
        steps, values = history.series("loss/a")  # as the render thread reads it, at every step
        middles = steps[: 2 * history._archived : 2]
        recent = steps[2 * history._archived :]
        assert (np.diff(recent) == 1).all() and recent[-1] == step, f"step {step}: recent rows repeated or missing"
        assert (np.diff(middles) > 0).all() and (middles < recent[0]).all(), f"step {step}: buckets overlap"
    # Each bucket keeps its extremes: the lowest and highest step it covers.
    low, high = values[: 2 * history._archived : 2], values[1 : 2 * history._archived : 2]
    assert (high - low >= 0).all() and low[0] == 0.0


def test_a_frame_drawn_while_training_logs_and_folds_reads_one_consistent_moment():
    # The dashboard's render thread reads the history while the training thread writes it.
    # It died here once: two columns read a step apart (shapes (200,) and (250,)).
    import threading

    from mtlnb.drawing.training_plots import TrainingFigure

    history = History(["a", "b", "c"], recent=256, archive=16)  # folds and merges often
    figure = TrainingFigure(["a", "b", "c"])
    written = threading.Event()

    def train() -> None:
        for step in range(15_000):
            history.log(step, 3.0 * step, 0.1, 0.001, [float(step)] * 3, [1.0] * 3)
            if step % 64 == 0:
                time.sleep(0)  # let the reader in mid-run, as a real step's kernels do
        written.set()

    writer = threading.Thread(target=train)
    writer.start()
    frames = 0
    while not written.is_set() or frames == 0:
        figure.update(history)
        view = history.view()
        archived = len(view.spans)
        steps, values = view.series("loss/b")
        assert len(steps) == len(values) == 2 * archived + len(view.steps) == len(view.series("weight/c")[0])
        middles, recent = steps[: 2 * archived : 2], steps[2 * archived :]
        assert (np.diff(recent) == 1).all(), "recent steps repeated or missing"
        assert (np.diff(middles) > 0).all() and (not len(recent) or (middles < recent[0]).all()), "buckets overlap"
        assert (values[2 * archived :] == recent).all(), "a row's values belong to its step"
        frames += 1
    writer.join()
    assert history.view().steps[-1] == 14_999


def test_history_exports_plain_data_and_json_lines(tmp_path):
    trainer = make_trainer()
    trainer.fit(steps=3)
    trainer.set_weight("Task1", 2.0)
    trainer.fit(steps=1)
    data = trainer.history.to_dict()
    assert data["recent"]["step"] == [0, 1, 2, 3] and data["events"][0]["kind"] == "weight"
    json.dumps(data)  # plain data
    lines = [json.loads(line) for line in trainer.history.to_jsonl(tmp_path / "h.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["step"] * 4 + ["event"]
    assert lines[3]["weight/Task1"] == 2.0


def test_outputs_receive_steps_events_and_the_end(tmp_path):
    stream = io.StringIO()
    trainer = make_trainer()
    trainer.outputs = [ConsoleProgress(stream, interval=0.0), JsonLinesLogger(tmp_path / "run.jsonl")]
    trainer.set_weight("Task2", 0.5)
    trainer.fit(steps=3)
    text = stream.getvalue()
    assert (
        "step 3/3" in text and "Task1" in text and "step 0: weight Task2 = 0.5" in text and "done after 3 steps" in text
    )
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "event", "step", "step", "step", "end"]


def loader(seed: int):
    x, y = readme_data(96, seed=3)
    dataset = torch.utils.data.TensorDataset(x, *y)
    return torch.utils.data.DataLoader(
        dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


class Split:
    """(inputs, targets) batches from a TensorDataset loader, keeping its generator visible."""

    def __init__(self, data):
        self.data, self.generator = data, data.generator

    def __iter__(self):
        return ((x, list(ys)) for x, *ys in self.data)


def dropout_spec() -> list[dict]:
    spec = readme_tasks()
    spec[5] = {**spec[5], "layers": nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.3), nn.Linear(32, 32))}
    return spec


def fresh(seed: int = 5) -> Trainer:
    torch.manual_seed(0)
    model = MTLModel(dropout_spec(), README_OUTPUTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(seed)
    return Trainer(model, optimizer, Split(loader(seed)), outputs=[])


def test_resuming_from_a_checkpoint_is_bit_identical(tmp_path):
    straight = fresh()
    straight.fit(steps=30)
    interrupted = fresh()
    interrupted.fit(steps=17)  # mid-epoch (12 batches an epoch)
    interrupted.set_weight("Task2", 0.5)
    interrupted.save(tmp_path / "run.ckpt")
    straight_b = fresh()
    straight_b.fit(steps=17)
    straight_b.set_weight("Task2", 0.5)
    straight_b.fit(steps=13)

    torch.manual_seed(999)  # whatever happened in between must not matter
    model = MTLModel(dropout_spec(), README_OUTPUTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    resumed = Trainer.load(tmp_path / "run.ckpt", model, optimizer, Split(loader(5)), outputs=[])
    assert (resumed.step, resumed.epoch) == (17, 1) and len(resumed.history) == 17
    resumed.fit(steps=13)
    for a, b in zip(straight_b.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.history.series("weight/Task2")[1][-1] == 0.5
    assert not all(
        torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values())
    )


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/mtlnb-pwned",))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    import os

    if os.path.exists("/tmp/mtlnb-pwned"):
        os.remove("/tmp/mtlnb-pwned")
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "mtlnb-checkpoint", "payload": Exploit()}, path)
    model = MTLModel(readme_tasks(), README_OUTPUTS)
    with pytest.raises(MTLError, match=r"refused to load .*pickled Python objects"):
        Trainer.load(path, model, torch.optim.SGD(model.parameters(), lr=0.1), batches())
    assert not os.path.exists("/tmp/mtlnb-pwned")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(MTLError, match="not an mtlnb checkpoint"):
        Trainer.load(other, model, torch.optim.SGD(model.parameters(), lr=0.1), batches())
    assert pickle is not None


def test_a_checkpoint_for_another_model_or_optimizer_is_refused_and_changes_nothing(tmp_path):
    trainer = make_trainer()
    trainer.fit(steps=3)
    path = trainer.save(tmp_path / "run.ckpt")

    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(MTLError, match=r"saved with a SGD optimizer; give Trainer.load a SGD too \(got Adam\)"):
        Trainer.load(path, model, torch.optim.Adam(model.parameters()), batches())
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)), "the model is untouched"

    spec = readme_tasks(task3_weight=1.0)
    spec[-1] = {**spec[-1], "layers": nn.Linear(3, 2)}
    other = MTLModel(spec, README_OUTPUTS)
    with pytest.raises(MTLError, match=r"(?s)saved from a model with other layers.*this model has 'Task3\.weight'"):
        Trainer.load(path, other, torch.optim.SGD(other.parameters(), lr=1e-3), batches())


def readme_run(weighting=None, seed: int = 5) -> Trainer:
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(seed)
    return Trainer(model, optimizer, Split(loader(seed)), weighting=weighting, outputs=[])


@pytest.mark.parametrize(
    ("name", "options"),
    [("cagrad", {"c": 0.2}), ("gradnorm", {"alpha": 0.5}), ("pcgrad", {"seed": 3}), ("uncertainty", {})],
)
def test_a_strategy_the_trainer_attached_comes_back_on_a_model_built_afresh(tmp_path, name, options):
    # The user's next session: the same spec and optimizer, then Trainer.load, no weighting= repeated.
    interrupted = readme_run(mtlnb.weighting.get(name, tasks=README_OUTPUTS, **options))
    interrupted.fit(steps=7)
    interrupted.save(tmp_path / "run.ckpt")
    interrupted.fit(steps=6)

    torch.manual_seed(999)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    resumed = Trainer.load(tmp_path / "run.ckpt", model, optimizer, Split(loader(5)), outputs=[])
    assert model.weighting.name == name
    assert all(getattr(model.weighting, key) == value for key, value in options.items() if key != "seed")
    resumed.fit(steps=6)
    for a, b in zip(interrupted.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_strategy_is_refused_before_anything_changes(tmp_path):
    run = readme_run("mgda")
    run.fit(steps=2)
    run.save(tmp_path / "run.ckpt")
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(MTLError, match=r"saved from a run with weighting 'mgda', but weighting= asks for 'pcgrad'"):
        Trainer.load(tmp_path / "run.ckpt", model, torch.optim.Adam(model.parameters()), batches(), weighting="pcgrad")
    assert model.weighting is None
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    plain = readme_run()
    plain.fit(steps=2)
    plain.save(tmp_path / "plain.ckpt")
    with pytest.raises(MTLError, match=r"saved from a run with no weighting strategy, but this model uses 'mgda'"):
        Trainer.load(tmp_path / "plain.ckpt", run.model, run.optimizer, batches())


def test_the_trainer_refuses_what_it_cannot_train():
    with pytest.raises(MTLError, match=r"trains an mtlnb\.MTLModel"):
        Trainer(nn.Linear(2, 2), None, [])
    trainer = make_trainer()
    with pytest.raises(MTLError, match="exactly one of epochs= or steps="):
        trainer.fit()
    with pytest.raises(MTLError, match="steps should be a positive int"):
        trainer.fit(steps=0)


def test_a_loop_of_your_own_gets_history_and_controls():
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    strategy = mtlnb.weighting.get("pcgrad", tasks=model.loss_tasks, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = mtlnb.LoopMonitor(model, weighting=strategy, optimizer=optimizer)
    for step, (x, y) in enumerate(batches()):
        optimizer.zero_grad()
        losses = model.task_losses(model(x)[0], y)
        strategy.backward(losses, shared_parameters=model.shared_parameters())
        optimizer.step()
        if step == 2:
            monitor.controls.mute("Task2")
            monitor.controls.stop()
        if not monitor.log(losses):
            break
    assert monitor.step == 3 and monitor.weights["Task2"] == 0.0
    assert strategy.multipliers.tolist() == [1.0, 0.0, 1.0]
    assert monitor.history.events[0] == {"step": 3, "kind": "mute", "task": "Task2", "value": 0.0}


def test_a_tensordataset_loader_of_inputs_and_one_target_a_task_trains_as_pairs_do():
    from torch.utils.data import DataLoader, TensorDataset

    x, (y1, y2, y3) = readme_data(64)
    pairs = [(x[i : i + 16], [y1[i : i + 16], y2[i : i + 16], y3[i : i + 16]]) for i in range(0, 64, 16)]
    loader = DataLoader(TensorDataset(x, y1, y2, y3), batch_size=16)  # yields [x, y1, y2, y3]
    trained = [make_trainer(data=data, val_data=data) for data in (pairs, loader)]
    for trainer in trained:
        trainer.fit(epochs=2)
    assert trained[0].history.epochs == trained[1].history.epochs  # the same validation losses, epoch by epoch
    for mine, theirs in zip(trained[0].model.parameters(), trained[1].model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize(
    "data, message",
    [
        ([{"x": 1, "y": 2}], r"a batch should be \(inputs, targets\) or \(inputs, target_Task1, target_Task2, "
         r"target_Task3\).*got a dict with keys \['x', 'y'\]"),
        ([(1, 2, 3)], r"got a tuple of 3"),
        ((b for b in batches(64)), r"train_data ran out after epoch 1: it is a one-pass iterator"),
    ],
)  # fmt: skip
def test_batches_the_trainer_cannot_read_get_a_clear_error(data, message):
    with pytest.raises(MTLError, match=message):
        make_trainer(data=data).fit(epochs=2)


def test_one_target_tensor_is_the_only_output_tasks_target_never_its_rows():
    spec = readme_tasks(task3_weight=1.0)
    model = MTLModel(spec, ["Task1"])
    x, (y1, _, _) = readme_data(8)
    y_hat = model(x)[0]
    assert torch.equal(model.task_losses(y_hat, y1)["Task1"], model.task_losses(y_hat, [y1])["Task1"])
    three = MTLModel(spec, README_OUTPUTS)
    with pytest.raises(MTLError, match=r"targets is one tensor of shape \(8, 1\) but there are 3 output tasks"):
        three.task_losses(three(x)[0], y1)


def test_a_loop_cell_run_again_with_the_same_monitor_is_a_new_run():
    monitor = mtlnb.LoopMonitor(["a", "b"])
    seen = []
    monitor.outputs.append(type("Recorder", (), {"send": lambda self, update: seen.append(update.kind)})())

    def loop(steps: int) -> int:
        done = 0
        for _ in range(steps):
            if not monitor.log({"a": 1.0, "b": torch.tensor(2.0)}):
                break
            done += 1
        monitor.finish()
        return done

    assert loop(3) == 3 and monitor.state == "done"
    monitor.stop()  # clicked after the loop had ended
    assert loop(3) == 3, "a Stop of the last run does not end the next one"
    assert monitor.state == "done" and monitor.step == 6
    assert seen.count("start") == 2 and seen.count("end") == 2, "each run tells the dashboard it began and ended"


@pytest.mark.parametrize(
    "losses, message",
    [
        ({"a": 1.0}, r"log: no loss for tasks \['b'\]; got keys \['a'\], expected \['a', 'b'\]"),
        ([1.0, 2.0, 3.0], r"log: expected 2 losses \(tasks \['a', 'b'\]\), got 3"),
        ([torch.ones(4), 1.0], r"the loss of task 'a' should be one number; got a tensor of shape \(4,\).*\.mean\(\)"),
        ([1.0, "high"], r"the loss of task 'b' should be a number; got 'high'"),
    ],
)
def test_a_loop_that_logs_what_is_not_one_loss_a_task_gets_a_clear_error(losses, message):
    monitor = mtlnb.LoopMonitor(["a", "b"])
    with pytest.raises(MTLError, match=message):
        monitor.log(losses)
    assert monitor.step == 0 and len(monitor.history) == 0


def test_a_trainer_cell_run_twice_on_one_model_goes_on_with_its_strategy():
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    first = Trainer(model, torch.optim.SGD(model.parameters(), lr=1e-2), batches(), weighting="uncertainty", outputs=[])
    first.fit(steps=2)
    strategy = model.weighting
    # The cell again: a new optimizer over model.parameters(), which now hold the strategy's own.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    again = Trainer(model, optimizer, batches(), weighting="uncertainty", outputs=[])
    assert model.weighting is strategy
    owned = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(owned) == len({id(p) for p in owned}), "no parameter twice in the optimizer"
    before = [p.detach().clone() for p in strategy.parameters()]
    again.fit(steps=2)
    assert all(not torch.equal(b, p) for b, p in zip(before, strategy.parameters(), strict=True)), "still learned"
    with pytest.raises(
        MTLError, match=r"already uses weighting 'uncertainty', so it cannot take 'pcgrad'.*new MTLModel"
    ):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=1e-2), batches(), weighting="pcgrad", outputs=[])


def test_a_strategy_for_a_model_with_an_auto_task_is_refused_naming_the_task_and_the_ways_out():
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), README_OUTPUTS)  # Task3 is 'auto': its s is already in the optimizer
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    with pytest.raises(SpecError) as raised:
        Trainer(model, optimizer, batches(), weighting="pcgrad", outputs=[])
    message = str(raised.value)
    assert "task 'Task3', key 'loss_weight'" in message
    for part in ("weighting='pcgrad'", "a number as loss_weight", "leave out weighting="):
        assert part in message
    assert model.weighting is None and len(optimizer.param_groups) == 1  # nothing changed


def test_auto_tasks_under_uncertainty_weighting_train_with_the_trainer():
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(), README_OUTPUTS, weighting="uncertainty")
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), batches(), outputs=[])
    trainer.set_weight("Task3", 0.5)
    trainer.fit(steps=20)
    assert model.spec_weights()[2] != 1.0  # Task3's s moved
    last = trainer.history.last()
    assert last["weight/Task3"] == pytest.approx(0.5 * model.spec_weights()[2], rel=0.05)


def test_a_control_file_steers_a_run_and_a_stop_loses_no_batch(tmp_path):
    from mtlnb.distributed import ControlFile

    path = tmp_path / "control.jsonl"
    steered = make_trainer(control_file=path)
    reference = make_trainer()
    control = ControlFile(path)
    control.send("weight", "Task2", 0.5)
    steered.fit(steps=3)
    reference.set_weight("Task2", 0.5)
    reference.fit(steps=3)
    assert steered.history.events[0] == {"step": 0, "kind": "weight", "task": "Task2", "value": 0.5}

    control.send("stop")
    steered.fit(steps=3)
    assert steered.step == 3 and steered.state == "stopped"
    control.send("weight", "Task9", 1.0)  # refused, reported, and training goes on
    steered.fit(steps=2)
    reference.fit(steps=2)
    refused = steered.history.events[-1]
    assert refused["kind"] == "refused" and "unknown task 'Task9'" in refused["message"]
    # The batch fetched before the stop was trained first on resuming: the same parameters as a run never stopped.
    for a, b in zip(steered.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)
