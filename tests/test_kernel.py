"""A real ipykernel, driven with the exact messages a front end sends: a slider reaches the running Trainer.

The Trainer runs in a background thread started by a cell that returns at once;
the test then sends the `comm_msg` JupyterLab sends when a slider moves and when a
button is clicked, and reads the effect back from the kernel.
"""

from __future__ import annotations

import json
import queue
import time

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

SETUP = """
import sys, time, torch, ipywidgets
sys.path.insert(0, {root!r})
from tests.conftest import README_OUTPUTS, readme_data, readme_tasks
from mtlnb import MTLModel, Trainer

torch.manual_seed(0)
model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
x, y = readme_data(4096)
data = [(x[i:i + 8], [t[i:i + 8] for t in y]) for i in range(0, 4096, 8)]
trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1e-3), data)
arrivals = {{}}

slider = ipywidgets.FloatSlider(value=1.0, min=0.0, max=2.0, description="Task2")
def on_slider(change):
    arrivals["slider"] = trainer.step
    trainer.set_weight("Task2", change["new"])
slider.observe(on_slider, names="value")

stop = ipywidgets.Button(description="Stop")
def on_stop(button):
    arrivals["stop"] = trainer.step
    trainer.stop()
stop.on_click(on_stop)

trainer.start(epochs=1000)
print(json.dumps({{"slider": slider.model_id, "stop": stop.model_id}}))
"""


@pytest.fixture
def kernel():
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client, code: str, timeout: float = 60) -> str:
    """Run a cell; return its stdout, failing on an error output."""
    msg_id = client.execute(code)
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(code)


def send_comm(client, comm_id: str, data: dict) -> None:
    client.shell_channel.send(client.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))


def test_a_slider_move_and_a_stop_click_reach_the_running_trainer(kernel, tmp_path):
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parents[1])
    ids = json.loads(execute(kernel, "import json\n" + SETUP.format(root=root)).strip().splitlines()[-1])
    time.sleep(0.5)  # the cell returned at once; training goes on in its thread
    assert int(execute(kernel, "print(trainer.step)")) > 0

    # The message JupyterLab's widget manager sends when the slider moves to 0.25.
    send_comm(kernel, ids["slider"], {"method": "update", "state": {"value": 0.25}, "buffer_paths": []})
    time.sleep(0.5)
    report = json.loads(
        execute(
            kernel,
            """print(json.dumps({
        "arrival": arrivals.get("slider"),
        "events": trainer.history.events,
        "weights": trainer.history.series("weight/Task2")[1].tolist()[-5:],
        "running": trainer.running}))""",
        )
    )
    assert report["running"] and report["arrival"] is not None
    (event,) = [e for e in report["events"] if e["kind"] == "weight"]
    assert event["task"] == "Task2" and event["value"] == 0.25
    assert event["step"] - report["arrival"] <= 2, "in effect at most 2 steps after the message arrived"
    assert report["weights"] == [0.25] * 5

    # A click on the Stop button.
    send_comm(kernel, ids["stop"], {"method": "custom", "content": {"event": "click"}})
    time.sleep(0.5)
    report = json.loads(
        execute(
            kernel,
            "trainer.wait(timeout=10); print(json.dumps({'state': trainer.state, 'step': trainer.step, 'stop': arrivals.get('stop')}))",
        )
    )
    assert report["state"] == "stopped"
    assert report["step"] - report["stop"] <= 1, "stop ends the thread within one step"


FAILING = """
import sys, torch
sys.path.insert(0, {root!r})
from torch import nn
from tests.conftest import README_OUTPUTS, readme_data, readme_tasks
from mtlnb import MTLModel, Trainer

class Breaks(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
    def forward(self, prediction, target):
        self.calls += 1
        if self.calls > 40:
            raise ValueError("the loss broke at call 41")
        return nn.functional.mse_loss(prediction, target)

spec = readme_tasks(task3_weight=1.0)
spec[3] = {{**spec[3], "loss": Breaks()}}
model = MTLModel(spec, README_OUTPUTS)
x, y = readme_data(1024)
data = [(x[i:i + 8], [t[i:i + 8] for t in y]) for i in range(0, 1024, 8)]
trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1e-3), data)
trainer.start(epochs=5)
"""


def test_an_exception_in_the_training_thread_appears_in_the_cell_that_started_it(kernel):
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parents[1])
    start_id = kernel.execute(FAILING.format(root=root))
    later_id = kernel.execute("import time; time.sleep(2); print('the other cell')")
    tracebacks: dict[str, str] = {}
    deadline = time.time() + 60
    idle = set()
    while time.time() < deadline and later_id not in idle:
        try:
            msg = kernel.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
            tracebacks[parent] = tracebacks.get(parent, "") + msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle.add(parent)
    assert "ValueError: the loss broke at call 41" in tracebacks.get(start_id, "")
    assert "the loss broke" not in tracebacks.get(later_id, "")
    state = execute(
        kernel, "try:\n    trainer.wait()\nexcept ValueError as e:\n    print('wait re-raised:', e, trainer.state)"
    )
    assert state.strip() == "wait re-raised: the loss broke at call 41 failed"


OWN_LOOP = """
import sys, time, torch
sys.path.insert(0, {root!r})
from tests.conftest import README_OUTPUTS, readme_data, readme_tasks
from mtlnb import LoopMonitor, MTLModel
from mtlnb.widgets import Dashboard

torch.manual_seed(0)
model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
monitor = LoopMonitor(model, optimizer=optimizer)
dashboard = Dashboard(monitor, interval=0.1)
print("image", dashboard.image.model_id)
display(dashboard)
x, y = readme_data(8)
end = time.perf_counter() + 5
while time.perf_counter() < end:
    optimizer.zero_grad()
    losses = model.task_losses(model(x)[0], y)
    sum(losses.values()).backward()
    optimizer.step()
    monitor.log(losses)
    time.sleep(0.002)
monitor.finish()
dashboard.wait(10)
"""


def test_a_loop_that_blocks_its_cell_still_gets_live_plots_and_a_read_only_notice(kernel):
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parents[1])
    msg_id = kernel.execute(OWN_LOOP.format(root=root))
    image_id, frames, notices, began, stderr = None, [], [], None, []
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            msg = kernel.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stderr":  # a failed frame's traceback, if any
            stderr.append(content["text"])
        elif kind == "stream" and content["text"].startswith("image"):
            image_id, began = content["text"].split()[1], time.time()
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "comm_msg":
            state = content["data"].get("state", {})
            if content["comm_id"] == image_id and msg["buffers"]:  # a PNG frame travels as a binary buffer
                frames.append(time.time() - began)
            if "Read-only" in str(state.get("value", "")):
                notices.append(time.time() - began)
        elif kind == "status" and content["execution_state"] == "idle":
            break
    # Frames arrived while the loop (5 s) still held the cell, not only at its end (the render
    # thread draws at least every 2 s, more often when frames are cheap).
    assert len([t for t in frames if t < 4.8]) >= 2, (frames, "".join(stderr))
    assert not stderr, "a frame failed to draw while the loop logged steps:\n" + "".join(stderr)
    assert notices, "the dashboard never said that a blocking loop cannot be steered"
