"""The live-dashboard notebook in a real browser, steered by keys, drags and clicks as a user would.

Each effect is checked twice: on the page (what the user sees) and by asking the
kernel (what the Trainer's history records, and from which step).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import SCREENSHOTS, add_and_run_cell, error_outputs, open_notebook, run_all, screenshot

NOTEBOOK = "03_live_dashboard.ipynb"


class DashboardPage:
    """The first dashboard of notebook 03 (the Trainer's), located the way a user sees it."""

    def __init__(self, page, server, front_end: str) -> None:
        self.page, self.server, self.front_end = page, server, front_end
        self.cell = page.locator(".jp-Cell").filter(has_text="dashboard = Dashboard(trainer)").first
        self.root = self.cell.locator(".widget-vbox").first

    def slider(self, task: str):
        return self.root.locator(".widget-hslider").filter(has_text=task).first

    def readout(self, task: str) -> float:
        return float(self.slider(task).locator(".widget-readout").inner_text())

    def button(self, text: str):
        return self.root.locator("button", has_text=re.compile(rf"^\s*{text}\s*$")).first

    def step_on_page(self) -> int:
        text = self.root.locator(".widget-label", has_text="step").first.inner_text()
        return int(re.search(r"step (\d+)", text).group(1))

    def press_on_slider(self, task: str, key: str, times: int) -> None:
        """Focus the slider's handle, as a Tab or a click would, then press `key`."""
        handle = self.slider(task).locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        for _ in range(times):
            handle.press(key)  # focuses the handle, then presses

    def kernel(self, expression: str):
        return json.loads(self.server.ask_kernel(f"import json; print(json.dumps({expression}))").strip())

    def wait_for(self, predicate, what: str, timeout: float = 20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if value := predicate():
                return value
            time.sleep(0.2)
        raise AssertionError(f"{self.front_end}: timed out waiting for {what}")

    def shot(self, stage: str) -> None:
        screenshot(self.page, f"{self.front_end}-dashboard-{stage}")
        self.root.scroll_into_view_if_needed()
        self.root.screenshot(path=str(SCREENSHOTS / f"{self.front_end}-dashboard-{stage}-widget.png"))

    # ------------------------------------------------------------ checks against the Trainer's history

    def weight_took_effect(self, task: str, expected: float) -> int:
        """The Trainer holds `expected` for `task`, and the history used it from the change's step on, not before.

        In notebook 03, Task1 and Task2 have the fixed weight 1, so their effective weight is the multiplier.
        """
        self.wait_for(
            lambda: abs(self.kernel(f"trainer.multipliers[{task!r}]") - expected) < 1e-9 or None,
            f"the Trainer to hold {task} = {expected}",
        )
        change = self.kernel(f"[e for e in trainer.history.events if e['task'] == {task!r}][-1]")
        self.wait_for(lambda: self.kernel("trainer.step") > change["step"] + 2 or None, "steps after the change")
        steps, weights = self.kernel(f"[a.tolist() for a in trainer.history.series('weight/{task}')]")
        before = [w for s, w in zip(steps, weights) if s < change["step"]]
        after = [w for s, w in zip(steps, weights) if s >= change["step"]]
        assert after and all(abs(w - expected) <= 1e-9 for w in after), (task, change, after[:5])
        assert before and abs(before[-1] - expected) > 1e-9, (task, change, before[-3:])
        return change["step"]


def start_long_run(dashboard: DashboardPage) -> None:
    # The notebook's own run has ended by now: train on, from a new cell, long enough to steer.
    add_and_run_cell(dashboard.page, dashboard.server, "dashboard.start(epochs=1000)")
    dashboard.wait_for(lambda: dashboard.kernel("trainer.state") == "running", "training to run")
    first = dashboard.step_on_page()
    dashboard.wait_for(lambda: dashboard.step_on_page() > first, "the step counter on the page to advance")


def drag_slider(dashboard: DashboardPage, task: str, dx: float) -> float:
    handle = dashboard.slider(task).locator(".noUi-handle")
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    mouse = dashboard.page.mouse
    mouse.move(x, y)
    mouse.down()
    mouse.move(x + dx, y, steps=8)  # a slider is about 80 px wide
    mouse.up()
    # The readout settles once the last move has been through the kernel and back.
    readings = [dashboard.readout(task)]
    while len(readings) < 3 or readings[-1] != readings[-3]:
        time.sleep(0.3)
        readings.append(dashboard.readout(task))
    return readings[-1]


def test_the_dashboard_is_steered_by_keys_drags_and_clicks_in_jupyterlab(page, lab):
    open_notebook(page, lab, NOTEBOOK)
    run_all(page, lab)
    dashboard = DashboardPage(page, lab, "lab")
    assert error_outputs(page) == []
    dashboard.shot("1-ran-all")

    # Visible and non-empty: the task graph (an SVG naming the tasks) and the plot (a drawn PNG).
    graph = dashboard.root.locator("svg").first
    assert graph.bounding_box()["width"] > 100 and "Task3" in graph.inner_html()
    plot = dashboard.root.locator(".widget-image").first
    assert page.evaluate("(img) => img.naturalWidth", plot.element_handle()) > 300

    start_long_run(dashboard)

    # The keyboard: 30 presses of ← on Task2's log slider (step 0.01 in log10) take it to 10^-0.3.
    dashboard.press_on_slider("Task2", "ArrowLeft", 30)
    expected = 10**-0.3
    dashboard.wait_for(lambda: abs(dashboard.readout("Task2") - 0.50) < 1e-9 or None, "the readout to show 0.50")
    dashboard.weight_took_effect("Task2", expected)
    dashboard.shot("2-keyboard")

    # The mouse: drag Task1's handle to the right; the Trainer holds what the readout shows.
    shown = drag_slider(dashboard, "Task1", dx=20)
    assert shown > 1.05
    held = dashboard.kernel("trainer.multipliers['Task1']")
    assert abs(held - shown) <= 0.005 + 1e-9, (held, shown)
    dashboard.weight_took_effect("Task1", held)
    dashboard.shot("3-dragged")

    # Mute Task3: its weight is 0 from the next step.
    dashboard.root.locator("button", has_text="mute").nth(2).click()
    dashboard.weight_took_effect("Task3", 0.0)
    dashboard.shot("4-muted")

    # Pause: the counter on the page stops, and the Trainer says so. Resume: it moves again.
    dashboard.button("Pause").click()
    dashboard.wait_for(lambda: dashboard.kernel("trainer.state") == "paused", "the Trainer to pause")
    paused_at = dashboard.kernel("trainer.step")
    # The page catches up within a frame (the render thread draws at least every 2 s), then stays.
    dashboard.wait_for(lambda: dashboard.step_on_page() == paused_at, f"the page to show step {paused_at}")
    time.sleep(2.5)
    assert dashboard.step_on_page() == paused_at == dashboard.kernel("trainer.step")
    dashboard.shot("5-paused")
    dashboard.button("Resume").click()
    dashboard.wait_for(lambda: dashboard.step_on_page() > paused_at, "the counter to move after Resume")
    dashboard.shot("6-resumed")

    # Stop: the session ends and a static picture and summary appear under the dashboard's last view
    # (`dashboard.start(...)` as the last line of the new cell showed it there too).
    start_cell = page.locator(".jp-Cell").last
    assert start_cell.locator(".jp-RenderedImage img").count() == 0
    dashboard.button("Stop").click()
    dashboard.wait_for(lambda: dashboard.kernel("trainer.state") == "stopped", "the Trainer to stop")
    stopped_at = dashboard.kernel("trainer.step")
    dashboard.wait_for(
        lambda: start_cell.locator(".jp-RenderedMarkdown", has_text=f"stopped at step {stopped_at}").count() or None,
        "the summary of the stopped run",
    )
    picture = start_cell.locator(".jp-RenderedImage img").first
    assert page.evaluate("(img) => img.naturalWidth", picture.element_handle()) > 300
    assert error_outputs(page) == []
    dashboard.shot("7-stopped")
    start_cell.scroll_into_view_if_needed()
    start_cell.screenshot(path=str(SCREENSHOTS / "lab-dashboard-7-stopped-picture.png"))


def test_the_dashboard_renders_and_steers_in_notebook_7(page, notebook7):
    open_notebook(page, notebook7, NOTEBOOK)
    run_all(page, notebook7)
    dashboard = DashboardPage(page, notebook7, "notebook7")
    assert error_outputs(page) == []
    assert "Task3" in dashboard.root.locator("svg").first.inner_html()
    start_long_run(dashboard)
    # Notebook 7 binds ← in command mode to moving between cells, before the slider sees it (measured:
    # the key event arrives with defaultPrevented); Page Down moves the handle by 5 steps there.
    dashboard.press_on_slider("Task2", "PageDown", 6)
    dashboard.weight_took_effect("Task2", 10**-0.3)
    dashboard.shot("1-slider")
    dashboard.button("Stop").click()
    dashboard.wait_for(lambda: dashboard.kernel("trainer.state") == "stopped", "the Trainer to stop")
    assert error_outputs(page) == []
    dashboard.shot("2-stopped")


@pytest.mark.parametrize(
    "name",
    [
        "01_quickstart.ipynb",
        "02_uncertainty_weighting.ipynb",
        "04_weighting_strategies.ipynb",
        "05_from_torchmtl.ipynb",
        "06_distributed.ipynb",
    ],
)
def test_every_other_notebook_runs_in_jupyterlab_without_an_error(page, lab, name):
    open_notebook(page, lab, name)
    run_all(page, lab)
    screenshot(page, f"lab-{name.removesuffix('.ipynb')}")
    assert error_outputs(page) == []
    assert page.locator(".jp-OutputArea-output").count() > 0
