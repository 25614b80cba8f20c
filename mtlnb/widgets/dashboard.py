"""`Dashboard(run)`: task graph, live plots and controls in one widget, for training in the background.

A run is anything with the Trainer's steering methods, history and `outputs`: a
`Trainer`, a `LoopMonitor` (your own loop) or a `JobFollower` (a torchrun job).

The road of a slider move: widget observer (kernel main thread) → `run.set_weight`
→ `Controls` (under a lock) → applied at the next step boundary → the strategy's
multiplier → that step's loss or gradient → the history → the next frame.

The training thread never touches a widget (each update costs ~0.3 ms) and gets
no per-step call from the dashboard (`wants_steps = False`): a render thread sees
new steps in the history. It redraws at most every `interval` seconds and spends
at most 5% of the time drawing: drawing holds the GIL, and a small model's step is
mostly Python, so every frame delays training (measured: 4 frames a second of 50 ms
slowed training by 1.4x). New axes cost most (see `_draw_frame`).
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from typing import Any

from .._exit import end_view_at_exit
from ..drawing.training_plots import TrainingFigure
from ..errors import MTLError
from ..outputs import Update


class Dashboard:
    """Live view and controls of `run` (a Trainer, LoopMonitor or JobFollower); show it as the last line of a cell."""

    wants_steps = False  # the render thread sees new steps in the run's history: nothing to build or send per step

    def __init__(self, run: Any, *, interval: float = 0.25, graph: bool = True) -> None:
        try:
            import ipywidgets as w
        except ImportError as error:
            raise ImportError("the dashboard needs ipywidgets: pip install ipywidgets") from error
        missing = [
            a for a in ("task_names", "history", "outputs", "multipliers", "set_weight", "stop") if not hasattr(run, a)
        ]
        if missing:
            raise MTLError(
                f"Dashboard shows a Trainer, a LoopMonitor or a JobFollower; {type(run).__name__} lacks {missing}"
            )
        self.run = run
        self.interval = interval
        self.figure = TrainingFigure(list(run.task_names))
        self.frames = 0
        self._dirty = False  # an event or option to show; new steps are seen in the history
        self._drawn_step = -1
        # New axes (a full redraw: ticks, labels, legend) hold the GIL through text layout and cost training
        # their whole duration, ~13x a frame of lines over cached axes (measured: 66 against 5 ms). So they
        # come at most every max(2 s, 39 x their cost), 2.5% of the time; meanwhile lines go on the old axes.
        self._full_cost = 0.0
        self._last_full = 0.0
        self._drawing = threading.Lock()  # one Agg canvas: two threads drawing it at once crash
        self._ended = threading.Event()
        self._closing = False  # Python is exiting: the render thread ends without another frame
        self._render_thread: threading.Thread | None = None
        self._final_handle: Any = None
        self._display_parent: Any = None
        self._summary_handle: Any = None
        self._last_weights: dict[str, float] = {}
        self.frame_error: BaseException | None = None  # the last frame that failed to draw, if any

        self.image = w.Image(format="png", layout=w.Layout(width="100%"))
        has_graph = graph and getattr(run, "model", None) is not None
        self.graph_view = w.HTML(layout=w.Layout(max_width="45%")) if has_graph else None
        self.sliders = {
            name: w.FloatLogSlider(
                value=value if value > 0 else 1.0,
                base=10,
                min=-2,
                max=1,
                step=0.01,
                description=name,
                continuous_update=True,
                readout_format=".2f",
            )
            for name, value in run.multipliers.items()
        }
        self.mutes = {
            name: w.ToggleButton(value=False, description="mute", layout=w.Layout(width="70px"))
            for name in run.task_names
        }
        lr = run.lr
        self.lr = w.FloatLogSlider(
            value=lr or 1e-3,
            base=10,
            min=math.log10(lr or 1e-3) - 3,
            max=math.log10(lr or 1e-3) + 1,
            step=0.01,
            description="learning rate",
            readout_format=".1e",
            layout=w.Layout(display=None if lr else "none"),  # a loop without optimizer: no learning rate to set
        )
        self.pause_button = w.Button(description="Pause", icon="pause")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger")
        self.progress = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="40%"))
        self.progress_text = w.Label()
        self.status = w.HTML()
        self.notice = w.HTML()
        self.problem = w.HTML()  # a frame that failed to draw
        self.scale = w.ToggleButtons(options=["log", "linear"], value="log", style={"button_width": "60px"})
        self.kind = w.ToggleButtons(options=["raw", "weighted"], value="raw", style={"button_width": "75px"})
        self.smoothing = w.FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description="smoothing")

        for name, slider in self.sliders.items():
            slider.observe(lambda change, n=name: self._call(self.run.set_weight, n, change["new"]), names="value")
        for name, toggle in self.mutes.items():
            toggle.observe(
                lambda change, n=name: self._call(self.run.mute if change["new"] else self.run.unmute, n),
                names="value",
            )
        self.lr.observe(lambda change: self._call(self.run.set_lr, change["new"]), names="value")
        self.pause_button.on_click(self._toggle_pause)
        self.stop_button.on_click(lambda _: self.run.stop())
        for option in (self.scale, self.kind, self.smoothing):
            option.observe(self._replot, names="value")

        rows = [w.HBox([slider, self.mutes[name]]) for name, slider in self.sliders.items()]
        controls = w.VBox(
            [
                w.HTML("<b>task weights</b> (multipliers, log scale)"),
                *rows,
                self.lr,
                w.HBox([self.pause_button, self.stop_button]),
                w.HBox([self.progress, self.progress_text]),
                self.status,
                self.notice,
                self.problem,
            ]
        )
        plot_options = w.HBox([self.scale, self.kind, self.smoothing])
        top = w.HBox([controls, self.graph_view]) if self.graph_view is not None else controls
        self.widget = w.VBox([top, plot_options, self.image])
        run.outputs.append(self)
        self._refresh_graph(force=True)
        self._render_once()
        with self._drawing:  # once more, warm (the first draw of a process loads fonts): the cost of new axes
            began = time.perf_counter()
            self.figure.render(full=True)
            self._last_full, self._full_cost = time.perf_counter(), time.perf_counter() - began

    @property
    def trainer(self) -> Any:
        """The run shown (kept under its first name: most runs are Trainers)."""
        return self.run

    # ------------------------------------------------------------ showing

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        from ..training.trainer import _kernel_parent

        self._display_parent = _kernel_parent()
        display(self.widget)
        # What stays for readers without widget state (GitHub, nbviewer), filled in at the end.
        # Display handles, not new outputs: an update lands in this cell whatever cell runs then.
        self._final_handle = display(HTML(""), display_id=True)
        self._summary_handle = display(HTML(""), display_id=True)

    def start(self, epochs: int | None = None, steps: int | None = None) -> Dashboard:
        """Train in the background (see `Trainer.start`) while this dashboard shows and steers it."""
        if not hasattr(self.run, "start"):
            raise MTLError(f"a {type(self.run).__name__} is not started by the dashboard: run your loop, or the job")
        self.run.start(epochs=epochs, steps=steps)
        return self

    def wait(self, timeout: float | None = None) -> None:
        """Block until training has ended and the last frame and summary are drawn; re-raise a training error."""
        try:
            if hasattr(self.run, "wait"):
                self.run.wait(timeout)
        finally:
            if self._render_thread is not None:
                self._render_thread.join(timeout)
            # Again from this thread: the render thread's update carries the parent message of the
            # cell that started training, which front ends apply by display id but notebook runners
            # (nbclient, nbval) drop once that cell is done. The update is idempotent.
            self._leave_static_result()

    # ------------------------------------------------------------ from the training thread: cheap

    def send(self, update: Update) -> None:
        if update.kind == "start":
            self._ended.clear()
            self.progress.max = max(update.total_steps or 1, 1)  # once a run, not per step
            self.figure.expected_steps = update.total_steps
            self._start_render_thread()
        elif update.kind == "end":
            self._ended.set()
        self._dirty = True

    # ------------------------------------------------------------ the render thread

    def _start_render_thread(self) -> None:
        if self._render_thread is not None and self._render_thread.is_alive():
            return
        from ..training.trainer import _kernel_parent, _pin_output_to

        parent = _kernel_parent()

        def loop() -> None:
            _pin_output_to(parent)
            wait, cost = self.interval, 0.0
            while True:
                ended = self._ended.wait(wait)
                if self._closing:
                    return
                if not ended and (self._dirty or self.run.step != self._drawn_step):  # the end draws below
                    self._dirty = False
                    began = time.perf_counter()
                    self._render_or_report()
                    # Throttled to the cost of drawing (a running average, so one full redraw does
                    # not stall the view): at most 1/20 of the time in frames, at least one every 2 s.
                    cost = 0.7 * cost + 0.3 * (time.perf_counter() - began) if cost else time.perf_counter() - began
                    wait = min(max(self.interval, 19 * cost), max(self.interval, 2.0))
                if ended:
                    self._render_or_report()
                    # As from the cell that last showed the dashboard (where the picture goes): a thread's
                    # own parent is whatever message the kernel handled last, a Stop click for instance.
                    _pin_output_to(self._display_parent or parent)
                    self._leave_static_result()
                    return

        self._render_thread = threading.Thread(target=loop, name="mtlnb-dashboard", daemon=True)
        self._render_thread.start()
        end_view_at_exit(self)

    def _end_at_exit(self, timeout: float = 5.0) -> None:
        self._closing = True
        self._ended.set()
        if self._render_thread is not None:
            self._render_thread.join(timeout)

    def _render_once(self) -> None:
        with self._drawing:
            self._draw_frame()

    def _render_or_report(self) -> None:
        """A frame from the render thread: a failed one is reported once, and the next frame tries again.

        Training goes on either way; a thread that died here would freeze the view without a word.
        """
        try:
            self._render_once()
        except Exception as error:
            first = self.frame_error is None or type(error) is not type(self.frame_error)
            self.frame_error = error
            self.problem.value = f"<span style='color:#b00'>the plot failed to draw: {_escape(repr(error))}</span>"
            if first:  # the whole traceback once, in the cell that started training
                traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        else:
            if self.frame_error is not None:
                self.frame_error = None
                self.problem.value = ""

    def _draw_frame(self) -> None:
        self._drawn_step = self.run.step
        history = self.run.history
        self.figure.update(history)
        began, redraws = time.perf_counter(), self.figure.full_redraws
        afford = began - self._last_full >= min(max(2.0, 39 * self._full_cost), 10.0)
        ended = self._ended.is_set()
        self.figure.render(full=None if afford or ended or self.run.state != "running" else False, final=ended)
        if self.figure.full_redraws != redraws:
            self._last_full, self._full_cost = time.perf_counter(), time.perf_counter() - began
        self.image.value = self.figure.png()
        self.frames += 1
        self.progress.value = min(self.run.step, self.progress.max)
        self.progress_text.value = self._progress_text()
        self.status.value = f"<span style='color:{'#b00' if self.run.error or 'nonfinite' in self._last_event() else '#333'}'>{_escape(self.run.status)}</span>"
        self.pause_button.description = "Resume" if self.run.controls.paused else "Pause"
        self._show_notice()
        self._refresh_graph()

    def _show_notice(self) -> None:
        """A loop that blocks its cell cannot be steered: say so, and grey out what would not work."""
        blocking = getattr(self.run, "blocking", False) and self.run.state in ("running", "paused")
        if blocking == bool(self.notice.value):
            return
        self.notice.value = (
            "<i>Read-only while your loop runs in its cell: the kernel reads no slider until the cell ends. "
            "To steer, run the loop in a thread (or use mtlnb.Trainer.start).</i>"
            if blocking
            else ""
        )
        for control in [*self.sliders.values(), *self.mutes.values(), self.lr, self.pause_button, self.stop_button]:
            control.disabled = blocking

    def render_frame(self) -> bytes:
        """Draw a frame now (what the render thread does) and return it as PNG bytes."""
        self._render_once()
        return bytes(self.image.value)

    def _progress_text(self) -> str:
        history = self.run.history
        last = history.last()
        if not last:
            return "step 0"
        rate = 1.0 / last["step_seconds"] if last["step_seconds"] > 0 else math.nan
        text = f"step {self.run.step}"
        if self.progress.max > 1:
            remaining = max(self.progress.max - self.run.step, 0) / rate if rate == rate and rate > 0 else math.nan
            text += (
                f"/{self.progress.max} · ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
                if remaining == remaining
                else ""
            )
        return text + f" · {rate:.0f} steps/s"

    def _last_event(self) -> str:
        events = self.run.history.events
        return events[-1]["kind"] if events else ""

    def _refresh_graph(self, force: bool = False) -> None:
        if self.graph_view is None:
            return
        last = self.run.history.last()
        weights = {n: last.get(f"weight/{n}", 1.0) for n in self.run.task_names} if last else {}
        if not force and all(
            abs(weights.get(n, 0) - self._last_weights.get(n, 0)) <= 0.01 * max(abs(weights.get(n, 0)), 1e-9)
            for n in weights
        ):
            return
        self._last_weights = weights
        from ..drawing import render_svg, task_graph_digraph

        svg = render_svg(task_graph_digraph(self.run.model, weights=weights, rankdir="TB").source)
        # Scaled to the column it has: graphviz sizes the SVG in points, wider than half a notebook.
        self.graph_view.value = (
            svg.replace("<svg ", '<svg style="max-width:100%;height:auto" ', 1)
            if svg is not None
            else "<pre>(no graphviz renderer)</pre>"
        )

    def _leave_static_result(self) -> None:
        """A plain PNG and a text summary, so a saved notebook shows the result without widget state."""
        if self._final_handle is None:
            return
        from IPython.display import Image, Markdown

        last = self.run.history.last()
        lines = [f"**{_escape(self.run.status)}**", ""]
        if last:
            lines += [
                f"- {n}: loss {last[f'loss/{n}']:.4g}, weight {last[f'weight/{n}']:.3g}" for n in self.run.task_names
            ]
        with self._drawing:
            png = self.figure.png()
        self._final_handle.update(Image(data=png, format="png"))
        if self._summary_handle is not None:
            self._summary_handle.update(Markdown("\n".join(lines)))

    # ------------------------------------------------------------ from widget observers (kernel main thread)

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except MTLError as error:  # shown where the user is looking, not as a traceback in the log
            self.status.value = f"<span style='color:#b00'>{_escape(str(error))}</span>"

    def _toggle_pause(self, _: Any) -> None:
        if self.run.controls.paused:
            self.run.resume()
            self.pause_button.description = "Pause"
        else:
            self.run.pause()
            self.pause_button.description = "Resume"

    def _replot(self, _: Any) -> None:
        with self._drawing:
            self.figure.configure(
                log_scale=self.scale.value == "log",
                weighted=self.kind.value == "weighted",
                smoothing=self.smoothing.value,
            )
        self._dirty = True
        if self._render_thread is None or not self._render_thread.is_alive():
            self._render_once()


def _escape(text: str) -> str:
    import html

    return html.escape(text)
