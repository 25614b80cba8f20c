"""`JobFollower`: a training job running elsewhere (torchrun, a script), watched and steered from a notebook.

The job's rank 0 writes its history as JSON Lines (`JsonLinesLogger`) and reads a
control file every step (`mtlnb.distributed.ControlFile`). The follower tails the
one into a `History` and writes the other, with the Trainer's steering methods, so
that `Dashboard(follower)` shows and steers the job like a Trainer in the kernel.
`launch(...)` starts `python -m mtlnb.train` under torchrun and returns its follower.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._checks import is_positive, is_positive_int, non_negative
from ..distributed import ControlFile
from ..errors import MTLError
from ..outputs import Output, Update
from .history import History


class _PauseState:
    """What the dashboard reads as `run.controls.paused`: the job's last reported pause state."""

    paused = False


class JobFollower:
    """Follow the JSON Lines history at `history_path`; steer through `control_path` (rank 0 reads it each step).

    Waits up to `timeout` seconds for the job's first record, which names its tasks.
    `process`, if given, is the job's process: its end (or early death) ends the run here; without
    it, only the job's last record does (a job killed before writing it looks like a silent one).
    `model` is only drawn (the dashboard's task graph); the job has its own copy.
    """

    def __init__(
        self,
        history_path: str | Path,
        control_path: str | Path | None = None,
        *,
        process: subprocess.Popen | None = None,
        output_path: str | Path | None = None,
        model: Any = None,
        total_steps: int | None = None,
        poll: float = 0.2,
        timeout: float = 120.0,
    ) -> None:
        self.history_path = Path(history_path)
        self.control = ControlFile(control_path) if control_path is not None else None
        self.process, self.model, self.total_steps, self.poll = process, model, total_steps, poll
        self.output_path = Path(output_path) if output_path is not None else None
        self.outputs: list[Output] = []
        self.controls = _PauseState()
        self.state, self.step, self.epoch, self.lr = "starting", 0, 0, None
        self.error: MTLError | None = None
        self.blocking = False
        self.command_line = ""
        self._offset = 0
        self._end_error: str | None = None
        self._early: list[dict[str, Any]] = []
        self._announced: set[int] = set()
        start = self._wait_for_start(timeout)
        self.task_names: tuple[str, ...] = tuple(start["tasks"])
        self.lr = start.get("lr")
        self.history = History(self.task_names)
        self._multipliers = dict.fromkeys(self.task_names, 1.0)
        self.state = "running"
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="mtlnb-job-follower", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ steering, as on a Trainer

    @property
    def multipliers(self) -> dict[str, float]:
        return dict(self._multipliers)

    def set_weight(self, task: str, value: float) -> None:
        self._send_control("weight", self._task(task), non_negative(f"the weight of task {task!r}", value))

    def mute(self, task: str) -> None:
        self._send_control("mute", self._task(task))

    def unmute(self, task: str) -> None:
        self._send_control("unmute", self._task(task))

    def set_lr(self, value: float) -> None:
        number = non_negative("the learning rate", value)
        if number == 0:
            raise MTLError("the learning rate should be a finite number > 0. Found 0.")
        self._send_control("lr", None, number)

    def pause(self) -> None:
        self._send_control("pause")

    def resume(self) -> None:
        self._send_control("resume")

    def stop(self) -> None:
        """Ask the job to stop at its next step boundary (all ranks at the same step)."""
        self._send_control("stop")

    def kill(self) -> None:
        """End the job's processes now (a stuck job); `stop()` is the clean way."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    # ------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")

    @property
    def status(self) -> str:
        text = f"job {self.state} at step {self.step}"
        return text + (f": {self.error}" if self.error is not None else "")

    def wait(self, timeout: float | None = None) -> History:
        """Block until the job has ended and its last records are read; raise if it failed."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"the job is still running after {timeout} s (step {self.step})")
        if self.error is not None:
            raise self.error
        return self.history

    def output_tail(self, lines: int = 30) -> str:
        """The last lines the job printed (torchrun's and every rank's output)."""
        if self.output_path is None or not self.output_path.exists():
            return ""
        return "\n".join(self.output_path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------ reading the history file

    def _wait_for_start(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        notice_at = time.monotonic() + 3.0  # a cell that waits longer says what for
        while time.monotonic() < deadline:
            if notice_at is not None and time.monotonic() > notice_at:
                print(
                    f"waiting up to {timeout:.0f} s for the job's first record in {self.history_path} ...",
                    file=sys.stderr,
                )
                notice_at = None
            records = self._read_records()
            for i, record in enumerate(records):
                if record.get("type") == "start":
                    self._early = records[i + 1 :]  # a quick job may have written more already
                    return record
            if self.process is not None and self.process.poll() is not None:
                raise MTLError(
                    f"the job exited (code {self.process.returncode}) before training started:\n"
                    + _failure_summary(self.output_tail(200), self.output_path)
                )
            time.sleep(0.1)
        if not self.history_path.exists():
            raise MTLError(
                f"no file {self.history_path} appeared within {timeout} s: is the job running, and is this the "
                "history it writes (mtlnb.train's --history)?"
            )
        raise MTLError(f"no training started in {self.history_path} within {timeout} s:\n{self.output_tail()}")

    def _read_records(self) -> list[dict[str, Any]]:
        try:
            with self.history_path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]

    def _follow(self) -> None:
        records = self._early
        while True:
            exited = self.process is not None and self.process.poll() is not None  # before reading: no line lost
            records = records + self._read_records()
            for record in records:
                self._take(record)
            if exited and not records and self.state in ("running", "paused", "starting"):
                self.state = "failed" if self.process.returncode else "done"
            self._notify(records)
            if self.state not in ("running", "paused", "starting") and (self.process is None or exited):
                if exited and self.process.returncode:
                    self.state = "failed"
                    self.error = MTLError(
                        f"the job failed at step {self.step} (exit code {self.process.returncode})\n"
                        + _failure_summary(self.output_tail(200), self.output_path, self._end_error)
                    )
                self._ended.set()
                self._notify([], end=True)
                return
            records = []
            time.sleep(self.poll)

    def _take(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "step":
            names = self.task_names
            self.history.log(
                record["step"] - 1,
                record["total"],
                record["lr"],
                record["seconds"],
                [record["losses"][n] for n in names],
                [record["weights"][n] for n in names],
            )
            self.step, self.lr = record["step"], record["lr"]
        elif kind == "event":
            event_kind = record.get("kind")
            if event_kind in ("pause", "resume"):
                self.controls.paused = event_kind == "pause"
                self.state = record.get("state", self.state)
            else:
                extra = {k: v for k, v in record.items() if k not in ("type", "step", "kind", "task", "value")}
                self.history.log_event(record["step"], event_kind, record.get("task"), record.get("value"), **extra)
                if event_kind in ("weight", "mute", "unmute"):
                    self._multipliers[record["task"]] = record["value"]
        elif kind == "epoch":
            self.epoch = record["epoch"]
            self.history.log_epoch(record["epoch"], record["step"], record.get("validation"))
        elif kind == "end":
            self.state = record.get("state", "done")
            self._end_error = record.get("error")
            if self._end_error and self.process is None:  # no exit code to wait for
                self.error = MTLError(f"the job failed at step {record['step']}: {self._end_error}")

    def _notify(self, records: Sequence[dict[str, Any]], end: bool = False) -> None:
        """Tell the outputs (a dashboard) what changed; an output added since gets a start first."""
        for output in list(self.outputs):
            if id(output) not in self._announced:
                self._announced.add(id(output))
                output.send(Update("start", self.step, {"state": self.state}, self.total_steps))
            if records:
                output.send(Update("step", self.step, {}, self.total_steps))
            if end:
                output.send(Update("end", self.step, {"state": self.state}))

    # ------------------------------------------------------------ checks

    def _task(self, task: str) -> str:
        if task not in self.task_names:
            raise MTLError(f"unknown task {task!r}; the job's tasks with a loss are {list(self.task_names)}")
        return task

    def _send_control(self, kind: str, task: str | None = None, value: Any = None) -> None:
        if self.control is None:
            raise MTLError("this job was started without a control file: it can be watched, not steered")
        if not self.running:
            raise MTLError(f"the job has ended ({self.status}); nothing reads the control file any more")
        self.control.send(kind, task, value)


def _failure_summary(output: str, output_path: Path | None, reported: str | None = None) -> str:
    """What a failed job's output says went wrong, shortest first.

    Each rank's own exception (the exception line of its last traceback, or argparse's
    error; torchrun prefixes a rank's lines with `[rankN]:`), or else what rank 0
    `reported` in its history; then
    torchrun's "Root Cause" block (which rank failed, its exit code or signal), else the
    output's end; and where the whole output is.
    """
    lines = output.splitlines()
    records: dict[str, list[list[str]]] = {}  # source ("rank 0", or "" unprefixed) -> its tracebacks' top-level lines
    for line in lines:
        source, text = "", line
        if line.startswith("[rank") and "]: " in line:
            prefix, _, text = line.partition("]: ")
            source = "rank " + prefix[len("[rank") :]
        if text.startswith("Traceback (most recent call last)"):
            records.setdefault(source, []).append([])
        elif text.startswith("python -m mtlnb.train: error:"):  # argparse refused the command line
            records.setdefault(source, []).append([text])
        elif records.get(source) and text and not text[0].isspace():
            records[source][-1].append(text)
    by_error: dict[str, list[str]] = {}
    for source, found in records.items():
        # A traceback's first top-level line is its exception; torchrun's own (ChildFailedError) says nothing new.
        errors = [record[0] for record in found if record and not record[0].startswith("torch.distributed.elastic")]
        if errors:
            by_error.setdefault(errors[-1], []).append(source)
    parts = [_ranks(sources) + error for error, sources in by_error.items()]
    if not parts and reported:
        parts.append(f"rank 0 reported: {reported}")
    starts = [i for i, line in enumerate(lines) if line.startswith("Root Cause")]
    if starts:
        parts.append("\n".join(lines[starts[-1] :]))
    elif not parts:
        parts.append("\n".join(lines[-15:]))
    if output_path is not None:
        parts.append(f"(the job's whole output: {output_path})")
    return "\n".join(parts)


def _ranks(sources: list[str]) -> str:
    """["rank 0", "rank 1"] -> "ranks 0, 1: "; [""] (output without rank prefixes) -> ""."""
    numbers = sorted((source.removeprefix("rank ") for source in sources if source), key=lambda n: (len(n), n))
    if not numbers:
        return ""
    return f"rank{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}: "


def launch(
    model: str,
    *,
    nproc: int = 2,
    steps: int | None = None,
    epochs: int | None = None,
    weighting: str = "fixed",
    batch: int = 64,
    lr: float = 1e-3,
    directory: str | Path | None = None,
    graph_model: Any = None,
    extra_args: Sequence[str] = (),
) -> JobFollower:
    """Start `python -m mtlnb.train --model MODEL` on `nproc` processes (torchrun, gloo on CPU); its follower.

    The job's history, control file and printed output go to `directory` (a new
    temporary one by default): `history.jsonl`, `control.jsonl`, `output.log`.
    """
    _check_launch(model, nproc, steps, epochs, weighting, batch, lr)
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="mtlnb-job-"))
    directory.mkdir(parents=True, exist_ok=True)
    history, control, output = directory / "history.jsonl", directory / "control.jsonl", directory / "output.log"
    for path in [control, *directory.glob("history*.jsonl")]:  # an earlier job's files would be read as this one's
        path.unlink(missing_ok=True)
    amount = ["--steps", str(steps)] if steps is not None else ["--epochs", str(epochs)]
    train = ["-m", "mtlnb.train", "--model", model, "--weighting", weighting, "--batch", str(batch), "--lr", str(lr)]
    train += [*amount, "--history", str(history), "--control", str(control), *extra_args]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    with output.open("w") as log:
        # Its own session: an interrupted kernel does not take the job down, and kill() ends all its ranks.
        process = subprocess.Popen(
            [sys.executable, *launcher, *train], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    atexit.register(lambda: process.poll() is None and os.killpg(process.pid, signal.SIGTERM))
    job = JobFollower(history, control, process=process, output_path=output, model=graph_model, total_steps=steps)
    job.command_line = shlex.join(["python", *launcher, *train])  # what to type in a terminal for the same job
    return job


def _check_launch(model: str, nproc: Any, steps: Any, epochs: Any, weighting: str, batch: Any, lr: Any) -> None:
    """Refuse here, in the notebook, what the job would only refuse after torchrun started its ranks."""
    from ..train import split_model_spec  # mtlnb.train imports this package: not at import time
    from ..weighting import options

    split_model_spec(model, "launch: ")
    if not is_positive_int(nproc):
        raise MTLError(f"launch: nproc should be a whole number of processes >= 1. Found {nproc!r}.")
    if (steps is None) == (epochs is None):
        raise MTLError(f"launch: give exactly one of steps= or epochs=. Found steps={steps!r}, epochs={epochs!r}.")
    for key, value in (("steps", steps), ("epochs", epochs)):
        if value is not None and not is_positive_int(value):
            raise MTLError(f"launch: {key} should be a whole number >= 1. Found {value!r}.")
    options(weighting)  # an unknown name: the registry's error, with the names there are
    if not is_positive_int(batch) or batch % nproc:
        raise MTLError(
            f"launch: batch is the samples of a step over all {nproc} processes, a multiple of {nproc}. Found {batch!r}."
        )
    if not is_positive(lr):
        raise MTLError(f"launch: lr should be a finite number > 0. Found {lr!r}.")
