"""The training figure: per-task losses, the total and validation, and the effective weights, drawn headless.

matplotlib `Figure` + Agg canvas, never pyplot (a pyplot figure closed in
another thread stops drawing silently). A frame redraws only the line data over
a cached background (blitting) while the axes limits still hold; limits grow
with headroom, so a full redraw (ticks, labels, legends: the expensive part) is
rare. Old history arrives decimated with minima and maxima kept, so a frame's
cost does not grow with the run.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .task_graph import TASK_COLORS


class TrainingFigure:
    """Losses (raw or weighted, linear or log, optionally smoothed), total, validation, weights with change markers."""

    def __init__(
        self,
        task_names: list[str],
        *,
        weighted: bool = False,
        log_scale: bool = True,
        smoothing: float = 0.0,
        size: tuple[float, float] = (10.0, 4.0),
        dpi: int = 80,
    ) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.task_names = list(task_names)
        self.weighted, self.log_scale, self.smoothing = weighted, log_scale, smoothing
        self.figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        self.canvas = FigureCanvasAgg(self.figure)
        self.loss_axes, self.weight_axes = self.figure.subplots(1, 2, width_ratios=[3, 2])
        colors = {name: TASK_COLORS[i % len(TASK_COLORS)] for i, name in enumerate(self.task_names)}
        # Past the palette, colours come round again: the second round dashed, the third dotted.
        styles = {name: ("-", "--", ":")[i // len(TASK_COLORS) % 3] for i, name in enumerate(self.task_names)}
        self.loss_lines = {
            n: self.loss_axes.plot([], [], styles[n], color=colors[n], lw=1.2, label=n, animated=True)[0]
            for n in self.task_names
        }
        # Σ weight × loss, not the optimised objective: uncertainty weighting adds Σ log σ, which
        # goes negative and would fall off a log axis.
        self.total_line = self.loss_axes.plot(
            [], [], color="black", lw=1.0, alpha=0.6, label="Σ weight × loss", animated=True
        )[0]
        self.val_lines = {
            n: self.loss_axes.plot([], [], "o--", color=colors[n], ms=4, lw=0.8, animated=True)[0]
            for n in self.task_names
        }
        self.weight_lines = {
            n: self.weight_axes.plot([], [], styles[n], color=colors[n], lw=1.2, label=n, animated=True)[0]
            for n in self.task_names
        }
        self.loss_axes.set_title("task losses (o: validation)")
        self.weight_axes.set_title("effective weights (| : a change)")
        self.loss_axes.set_xlabel("step")
        self.weight_axes.set_xlabel("step")
        # Over the lines, never under them: drawn once per full redraw, then pasted as pixels after
        # each frame's lines (drawing its text every frame cost 9 of a frame's 30 ms).
        self.legend = self.loss_axes.legend(loc="upper right", fontsize=8)
        self.legend.set_animated(True)
        self._legend_pixels: Any = None
        self.loss_axes.set_yscale("log" if log_scale else "linear")
        self._markers: list[Any] = []
        self._background: Any = None
        self._limits: dict[str, tuple[float, float, float, float]] = {}
        self.full_redraws = 0
        self.max_points = 2000  # per line; beyond it, min/max buckets: a frame's cost stays flat
        self.expected_steps: int | None = None  # the run's last step, when known: the x-axis spans it from the start
        self._lay_out()

    # ------------------------------------------------------------ options

    def configure(
        self, *, weighted: bool | None = None, log_scale: bool | None = None, smoothing: float | None = None
    ) -> None:
        """Change what is drawn; the next frame is a full redraw."""
        if weighted is not None:
            self.weighted = weighted
        relabel = log_scale is not None and log_scale != self.log_scale
        if log_scale is not None:
            self.log_scale = log_scale
            self.loss_axes.set_yscale("log" if log_scale else "linear")
        if smoothing is not None:
            self.smoothing = smoothing
        self._background = None
        self._limits = {}
        if relabel:  # other tick labels, other margins
            self._lay_out()

    def _lay_out(self) -> None:
        """Margins by constrained layout once, for tick labels like a run's, then kept.

        Re-run at every full redraw, the layout was half of its cost (78 of 156 ms here), and a
        frame holds the GIL that training needs.
        """
        loss_limits = (0.0, 10_000.0, *((1e-3, 1e2) if self.log_scale else (0.0, 1000.0)))
        self._limits = {"loss": loss_limits, "weight": (0.0, 10_000.0, 0.0, 2.0)}  # until data sets them
        self._fitted: set[str] = set()
        for key, (axes, _, _) in self._panels().items():
            x0, x1, y0, y1 = self._limits[key]
            axes.set_xlim(x0, x1)
            axes.set_ylim(y0, y1)
        self.figure.set_layout_engine("constrained")
        self.figure.draw_without_rendering()
        self.figure.set_layout_engine("none")

    # ------------------------------------------------------------ frames

    def update(self, history: Any) -> None:
        """Put the history's current data into the lines (no drawing yet)."""
        view = history.view()  # one moment for every line: training may log steps meanwhile
        prefix = "weighted/" if self.weighted else "loss/"
        for name, line in self.loss_lines.items():
            steps, values = view.series(prefix + name)
            line.set_data(*_decimate(steps, _smooth(values, self.smoothing), self.max_points))
        self.total_line.set_data(*_decimate(*_weighted_sum(view, self.task_names), self.max_points))
        for name, line in self.val_lines.items():
            points = [(e["step"], e["validation"][name]) for e in history.epochs if e.get("validation")]
            line.set_data([p[0] for p in points], [p[1] for p in points])
        for name, line in self.weight_lines.items():
            line.set_data(*_decimate(*view.series(f"weight/{name}"), self.max_points))
        changes = [e for e in history.events if e["kind"] in ("weight", "mute", "unmute", "lr", "option")]
        for event in changes[len(self._markers) :]:  # drawn with the lines: a change needs no full redraw
            self._markers.append(self.weight_axes.axvline(event["step"], color="grey", lw=0.8, ls=":", animated=True))

    def render(self, full: bool | None = None, *, final: bool = False) -> None:
        """Draw the frame: a blit of the lines over the cached axes, or a full redraw with new limits.

        `full=None` redraws fully when the data left the limits; `full=False` blits anyway while
        there are cached axes (lines past an edge are clipped until a full redraw is afforded).
        `final=True` is the picture a finished run leaves: axes fitted to the data, no room to grow.
        """
        if final or self._background is None or (full is not False and (full or not self._limits_hold())):
            self._set_limits(room=not final)
            self.canvas.draw()
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            self.loss_axes.draw_artist(self.legend)
            self._legend_pixels = self.canvas.copy_from_bbox(self.legend.get_window_extent())
            self.full_redraws += 1
        else:
            self.canvas.restore_region(self._background)
        for axes, artists in (
            (self.loss_axes, [*self.loss_lines.values(), self.total_line, *self.val_lines.values()]),
            (self.weight_axes, [*self.weight_lines.values(), *self._markers]),
        ):
            for artist in artists:
                axes.draw_artist(artist)
        self.canvas.restore_region(self._legend_pixels)
        self.canvas.blit(self.figure.bbox)

    @property
    def limits_hold(self) -> bool:
        """Whether the data is inside the axes drawn last (else the next full redraw moves them)."""
        return self._background is not None and self._limits_hold()

    def png(self, compress_level: int = 1) -> bytes:
        """The last rendered frame as PNG bytes (encoded from the canvas buffer: no second draw)."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
            buffer, format="png", compress_level=compress_level
        )
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the figure to PNG or SVG (by the suffix), e.g. from a script."""
        path = Path(path)
        artists = [
            *self.loss_lines.values(), self.total_line, *self.val_lines.values(), *self.weight_lines.values(),
            *self._markers, self.legend,
        ]  # fmt: skip
        for artist in artists:
            artist.set_animated(False)
        self._set_limits(room=False)
        self.figure.savefig(path)
        for artist in artists:
            artist.set_animated(True)
        self._background = None
        return path

    # ------------------------------------------------------------ limits

    def _data_bounds(self, lines: Any, log: bool) -> tuple[float, float, float, float] | None:
        """(x0, x1, y0, y1) of the lines' finite points (positive ones only on a log axis)."""
        xs, ys = [], []
        for line in lines:
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            keep = np.isfinite(y) & (y > 0) if log else np.isfinite(y)
            if keep.any():
                xs += [x[keep].min(), x[keep].max()]
                ys += [y[keep].min(), y[keep].max()]
        return (min(xs), max(xs), min(ys), max(ys)) if xs else None

    def _panels(self) -> dict[str, tuple[Any, Any, bool]]:
        return {
            "loss": (
                self.loss_axes,
                [*self.loss_lines.values(), self.total_line, *self.val_lines.values()],
                self.log_scale,
            ),
            "weight": (self.weight_axes, list(self.weight_lines.values()), False),
        }

    def _limits_hold(self) -> bool:
        for key, (_, lines, log) in self._panels().items():
            bounds, limits = self._data_bounds(lines, log), self._limits.get(key)
            if bounds is None:
                continue
            if (
                limits is None
                or key not in self._fitted  # placeholder axes: the data has not set them yet
                or bounds[0] < limits[0]
                or bounds[1] > limits[1]
                or bounds[2] < limits[2]
                or bounds[3] > limits[3]
            ):
                return False
        return True

    def _set_limits(self, room: bool = True) -> None:
        """Fit the axes to the data; with `room`, the x-axis leaves space to grow into (a running run)."""
        for key, (axes, lines, log) in self._panels().items():
            bounds = self._data_bounds(lines, log)
            if bounds is None:
                continue
            x0, x1, y0, y1 = bounds
            if room:
                x1 = x0 + max(1.0, (x1 - x0)) * 1.5  # before the next full redraw
                if self.expected_steps is not None and x1 < self.expected_steps:
                    x1 = float(self.expected_steps)  # the whole run's span: no full redraw as it grows
            else:
                x1 = x0 + max(1.0, (x1 - x0)) * 1.02
            if log:
                low, high = math.log10(max(y0, 1e-12)), math.log10(max(y1, 1e-12))
                pad = max(0.3, 0.25 * (high - low))
                y0, y1 = 10 ** (low - pad), 10 ** (high + pad)
            else:
                pad = max(0.05 * abs(y1), 0.25 * (y1 - y0), 1e-3)
                # Weights and losses are never negative: no axis below zero (a muted task's 0 sits at the bottom).
                y0, y1 = (max(y0 - pad, -0.02 * (y1 + pad)) if y0 >= 0 else y0 - pad), y1 + pad
            axes.set_xlim(x0, x1)
            axes.set_ylim(y0, y1)
            self._limits[key] = (x0, x1, y0, y1)
            self._fitted.add(key)


def _weighted_sum(view: Any, task_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    steps, total = view.series(f"weighted/{task_names[0]}")
    total = total.copy()
    for name in task_names[1:]:
        total += view.series(f"weighted/{name}")[1]
    return steps, total


def _decimate(steps: np.ndarray, values: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about `most` points, each bucket kept as its minimum and maximum (so spikes stay visible)."""
    n = len(values)
    if n <= most:
        return steps, values
    size = math.ceil(n / (most // 2))
    usable = n - n % size
    blocks = values[:usable].reshape(-1, size)
    at = steps[:usable].reshape(-1, size).mean(axis=1)
    low, high = np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)
    out_steps = np.concatenate([np.repeat(at, 2), steps[usable:]])
    out_values = np.concatenate([np.stack([low, high], axis=1).reshape(-1), values[usable:]])
    return out_steps, out_values


def _smooth(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average with factor `smoothing` in [0, 1) (0: raw values)."""
    if smoothing <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    average = values[0]
    for i, v in enumerate(values):
        average = smoothing * average + (1 - smoothing) * v if math.isfinite(v) else average
        out[i] = average
    return out
