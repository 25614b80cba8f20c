"""The dashboard, headless: widgets driven by their state and by the comm messages a front end sends."""

from __future__ import annotations

import time

import pytest
import torch

from mtlnb import MTLModel, Trainer
from mtlnb.drawing.training_plots import TrainingFigure

from .conftest import README_OUTPUTS, readme_data, readme_tasks

widgets = pytest.importorskip("ipywidgets")
from mtlnb.widgets import Dashboard  # noqa: E402


def dashboard(n: int = 512) -> Dashboard:
    torch.manual_seed(0)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS, example_input=torch.randn(8, 16))
    x, y = readme_data(n)
    data = [(x[i : i + 8], [t[i : i + 8] for t in y]) for i in range(0, n, 8)]
    return Dashboard(Trainer(model, torch.optim.SGD(model.parameters(), lr=1e-3), data, outputs=[]))


def front_end_update(widget, **state) -> None:
    """What JupyterLab's widget manager sends when the user moves a control."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


def front_end_click(button) -> None:
    button._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []})


def test_a_slider_message_sets_the_weight_of_the_next_step():
    dash = dashboard()
    trainer = dash.trainer
    trainer.fit(steps=3)
    front_end_update(dash.sliders["Task2"], value=0.25)
    trainer.fit(steps=2)
    assert trainer.history.series("weight/Task2")[1].tolist() == [1.0, 1.0, 1.0, 0.25, 0.25]
    assert trainer.history.events[-1] == {"step": 3, "kind": "weight", "task": "Task2", "value": 0.25}


def test_mute_and_learning_rate_controls_reach_the_trainer():
    dash = dashboard()
    front_end_update(dash.mutes["Task1"], value=True)
    dash.lr.value = 1e-4
    dash.trainer.fit(steps=1)
    assert dash.trainer.multipliers["Task1"] == 0.0 and dash.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
        1e-4
    )
    front_end_update(dash.mutes["Task1"], value=False)
    dash.trainer.fit(steps=1)
    assert dash.trainer.multipliers["Task1"] == 1.0


def test_pause_resume_and_stop_buttons_steer_a_background_run():
    dash = dashboard(8192)
    trainer = dash.trainer
    dash.start(epochs=50)
    deadline = time.time() + 20
    while trainer.step < 3 and time.time() < deadline:
        time.sleep(0.01)
    front_end_click(dash.pause_button)
    time.sleep(0.3)
    paused_at = trainer.step
    time.sleep(0.3)
    assert trainer.state == "paused" and trainer.step == paused_at
    front_end_click(dash.pause_button)
    while trainer.step < paused_at + 3 and time.time() < deadline:
        time.sleep(0.01)
    front_end_click(dash.stop_button)
    trainer.wait(timeout=10)
    assert trainer.state == "stopped"
    time.sleep(0.5)
    assert dash.frames >= 2, "the render thread drew while training ran"
    assert "stopped" in dash.status.value


def test_frames_are_pngs_that_show_what_changed():
    dash = dashboard()
    dash.trainer.fit(steps=4)
    dash.sliders["Task3"].value = 2.0
    dash.trainer.fit(steps=4)
    png = dash.render_frame()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(dash.figure._markers) == 1  # the change is marked on the weights panel
    assert "weight 2" in dash.graph_view.value  # the live graph shows the new weight
    assert "step 8" in dash.progress_text.value and "steps/s" in dash.progress_text.value


def test_an_invalid_control_value_shows_in_the_status_line_instead_of_a_traceback():
    dash = dashboard()
    dash.lr.min = -20  # a value the Trainer refuses: lr 0 is reached through a log slider's floor
    dash._call(dash.trainer.set_lr, 0.0)
    assert "learning rate should be a finite number &gt; 0" in dash.status.value


def test_the_end_of_a_run_leaves_a_static_picture_and_a_summary():
    dash = dashboard()
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    dash._final_handle, dash._summary_handle = Handle(), Handle()
    dash.start(steps=10)
    dash.wait(timeout=20)
    image, summary = shown[-2:]
    assert image.data[:4] == b"\x89PNG"
    assert "done at step 10" in summary.data and "Task1: loss" in summary.data


def test_a_run_of_epochs_shows_its_progress_and_ends_on_a_picture_fitted_to_it():
    dash = dashboard(n=160)  # 20 batches an epoch
    dash.run.mute("Task3")  # a weight of 0: the weights' axis still starts at 0, not below
    dash.start(epochs=3)
    dash.wait(timeout=30)
    assert dash.progress.max == 60 and dash.progress.value == 60  # known from the data's length: a bar and an ETA
    assert dash.progress_text.value.startswith("step 60/60")
    left, right = dash.figure.loss_axes.get_xlim()
    assert left == 0 and 59 <= right <= 61, (left, right)  # the run as it happened, no room left to grow into
    bottom, top = dash.figure.weight_axes.get_ylim()
    assert -0.03 * top <= bottom <= 0, (bottom, top)


def test_a_frame_that_fails_to_draw_is_reported_once_and_the_next_frame_draws(capsys):
    dash = dashboard(8192)
    dash.interval = 0.05
    draw, failures = dash.figure.update, []

    def fails_twice(history):
        if len(failures) < 2:
            failures.append(len(history))
            raise ValueError("a frame that cannot be drawn")
        draw(history)

    dash.figure.update = fails_twice
    reports: list[str] = []
    dash.problem.observe(lambda change: reports.append(change["new"]), names="value")
    before = dash.frames
    dash.start(steps=400)
    dash.wait(timeout=20)
    assert len(failures) == 2, "the render thread went on after its first failed frame"
    assert "the plot failed to draw: ValueError" in reports[0]
    assert dash.frames > before and dash.problem.value == "", "a frame drew afterwards and the report went away"
    assert capsys.readouterr().err.count("ValueError: a frame that cannot be drawn") == 1, (
        "one traceback, not one a frame"
    )
    assert dash.trainer.state == "done" and dash.trainer.step == 400


EXITS_WHILE_TRAINING = """
import atexit, threading
# Registered first, so it runs last: after mtlnb's own exit handler.
atexit.register(lambda: print("at exit:", trainer.state, [t.name for t in threading.enumerate() if t.name.startswith("mtlnb")]))
import sys, time, torch
sys.path.insert(0, {root!r})
from tests.test_widgets import dashboard
dash = dashboard(8192)
trainer = dash.trainer
dash.start(epochs=100)
while dash.frames < 3:  # the render thread is drawing
    time.sleep(0.01)
"""  # and the script ends without wait()


def test_a_script_that_ends_while_training_and_drawing_stops_both_first_and_exits_cleanly():
    # Daemon threads killed inside native code (FreeType) aborted 1 script in 3.
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", EXITS_WHILE_TRAINING.format(root=root)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "at exit: stopped []" in done.stdout, done.stdout + done.stderr[-2000:]


def test_while_training_runs_new_axes_wait_for_their_budget_and_the_lines_still_draw():
    # New axes hold the GIL through text layout (training lost 66 ms to one, 5 ms to a frame of lines):
    # while a run is going they come at most every max(2 s, 39x their cost); the end gets exact axes.
    dash = dashboard(4096)
    dash.interval = 0.05
    before = dash.figure.full_redraws
    shown: list[bytes] = []
    dash.image.observe(lambda change: shown.append(change["new"]), names="value")
    dash.start(steps=1500)
    dash.wait(timeout=60)
    assert dash.trainer.state == "done"
    assert len(shown) >= 3, "frames of lines were drawn while training ran"
    assert len(set(shown)) == len(shown), "each frame showed more steps"
    assert dash.figure.full_redraws - before <= 2, "at most the budgeted axes and the exact ones at the end"
    assert dash.figure.limits_hold, "the last frame has axes that fit the data"


def test_a_change_marker_needs_no_new_axes_and_data_past_them_waits_for_a_full_redraw_when_asked():
    from mtlnb.training import History

    history, figure = History(["a"]), TrainingFigure(["a"])
    for step in range(10):
        history.log(step, 1.0, 0.1, 0.001, [1.0], [1.0 if step < 5 else 0.25])  # axes that hold 0.5 too
    figure.update(history)
    figure.render()
    redraws = figure.full_redraws
    history.log_event(10, "weight", "a", 0.5)
    history.log(10, 0.5, 0.1, 0.001, [1.0], [0.5])
    figure.update(history)
    figure.render()
    assert figure.full_redraws == redraws and len(figure._markers) == 1, "the marker is drawn with the lines"
    history.log(11, 1e6, 0.1, 0.001, [1e6], [0.5])  # far above the axes
    figure.update(history)
    figure.render(full=False)
    assert figure.full_redraws == redraws and not figure.limits_hold, "kept the axes: the line is clipped"
    figure.render()
    assert figure.full_redraws == redraws + 1 and figure.limits_hold


def test_the_figures_can_be_written_from_a_script(tmp_path):
    dash = dashboard()
    dash.trainer.fit(steps=5)
    figure = TrainingFigure(list(dash.trainer.task_names))
    figure.update(dash.trainer.history)
    assert figure.save(tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in figure.save(tmp_path / "training.svg").read_text()


def test_a_loop_of_your_own_in_a_thread_is_steered_by_the_dashboard():
    import threading

    from mtlnb import LoopMonitor, MTLModel

    torch.manual_seed(0)
    model = MTLModel(readme_tasks(task3_weight=1.0), README_OUTPUTS)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = LoopMonitor(model, optimizer=optimizer)
    dash = Dashboard(monitor)
    x, y = readme_data(8)

    def loop() -> None:
        while True:
            optimizer.zero_grad()
            losses = model.task_losses(model(x)[0], y)
            sum(w * loss for w, loss in zip(monitor.weights.values(), losses.values())).backward()
            optimizer.step()
            if not monitor.log(losses):
                return
            time.sleep(0.001)

    thread = threading.Thread(target=loop)
    thread.start()
    deadline = time.time() + 20
    while monitor.step < 5 and time.time() < deadline:
        time.sleep(0.01)
    front_end_update(dash.sliders["Task1"], value=0.1)
    moved_at = monitor.step
    while monitor.step < moved_at + 5 and time.time() < deadline:
        time.sleep(0.01)
    front_end_click(dash.stop_button)
    thread.join(10)
    dash.wait(10)
    steps, weights = monitor.history.series("weight/Task1")
    change = monitor.history.events[0]
    assert change["kind"] == "weight" and moved_at <= change["step"] <= moved_at + 1
    assert set(weights[steps < change["step"]]) == {1.0} and set(weights[steps >= change["step"]]) == {0.1}
    assert monitor.state == "stopped" and not thread.is_alive()
    assert not dash.notice.value, "a loop in a thread can be steered: no read-only notice"
    assert dash.graph_view is not None and "Task1" in dash.graph_view.value


def test_a_loop_that_blocks_its_cell_greys_out_the_controls_and_says_why():
    from mtlnb import LoopMonitor

    monitor = LoopMonitor(["a", "b"])  # task names only: no graph, no learning rate
    dash = Dashboard(monitor)
    assert dash.graph_view is None and dash.lr.layout.display == "none"
    monitor.log([1.0, 2.0])  # from the main thread, as a loop in a cell would
    dash.render_frame()
    assert "Read-only" in dash.notice.value and all(s.disabled for s in dash.sliders.values())
    monitor.finish()
    dash.render_frame()
    assert not dash.notice.value and not dash.stop_button.disabled


def test_the_dashboard_names_what_it_cannot_show():
    with pytest.raises(Exception, match=r"Dashboard shows a Trainer.*lacks \['task_names'"):
        Dashboard(object())
