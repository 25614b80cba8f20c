"""`Trainer`: train an MTLModel in this thread (`fit`) or in a background one (`start`), steerable while it runs.

Why a thread: a loop that blocks its notebook cell never sees a widget message
until the cell ends, while a loop in a thread started by a cell that returns at
once sees slider moves within ~15 ms (../shared/recipes/live-training.md). The
thread's duties are kept here: Stop instead of "Interrupt kernel", exceptions
caught, shown and re-raised by `wait()`, output pinned to the starting cell.

Every change (weight, mute, learning rate, strategy knob, pause, stop) goes
through `Controls` and is applied at the step boundary, so it takes effect from
the very next optimizer step, and the history records that step.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from .._exit import end_run_at_exit
from ..errors import MTLError
from ..graph import MTLModel
from ..outputs import ConsoleProgress, Output, Update, step_outputs
from .controls import Change, Controls, multiplier_after
from .history import History

STATES = ("idle", "running", "paused", "stopped", "failed", "done")


class NonFiniteLossError(MTLError):
    """A task's loss or the gradient was not finite; the update was skipped, parameters are untouched."""


class Trainer:
    """Trains `model` on `train_data`, an iterable of `(inputs, targets)` batches (a DataLoader, a list...).

    `weighting` (a name or a strategy of `mtlnb.weighting`) is set on the model if given;
    its learned parameters are added to `optimizer`. `val_data` is evaluated after every
    epoch. `outputs` receive every update (default: a progress line on a terminal,
    nothing inside a notebook, where the dashboard shows progress). `control_file` is
    read before every step for changes written from elsewhere (`mtlnb.distributed.ControlFile`,
    a `JobFollower` in a notebook). Under `torchrun` the ranks train as one
    (see `mtlnb.distributed`): give each its shard of the data (a `DistributedSampler`).
    """

    def __init__(
        self,
        model: MTLModel,
        optimizer: torch.optim.Optimizer,
        train_data: Iterable[Any],
        weighting: str | Any | None = None,
        val_data: Iterable[Any] | None = None,
        *,
        outputs: Iterable[Output] | None = None,
        control_file: str | Path | None = None,
    ) -> None:
        if not isinstance(model, MTLModel):
            raise MTLError(
                f"Trainer trains an mtlnb.MTLModel; got {type(model).__name__}. For your own loop, use mtlnb.LoopMonitor"
            )
        self.model, self.optimizer, self.train_data, self.val_data = model, optimizer, train_data, val_data
        if weighting is not None:
            strategy = model.use_weighting(weighting)
            learned = learned_weights_missing(optimizer, strategy)
            if learned:
                optimizer.add_param_group({"params": learned})
        self.task_names: tuple[str, ...] = tuple(model.loss_tasks)
        self.controls = Controls(self.task_names, option_check=self._check_option)
        self.history = History(self.task_names)
        self._distributed = distributed.is_active()
        self.rank = distributed.rank()
        self.outputs: list[Output] = (
            list(outputs) if outputs is not None else _default_outputs() if self.rank == 0 else []
        )
        self.control_file = distributed.ControlFile(control_file) if control_file is not None else None
        self.state = "idle"
        self.error: BaseException | None = None
        self.step = 0  # optimizer steps taken (the index of the next step)
        self.epoch = 0  # complete epochs
        self._unmuted: dict[str, float] = {}
        self._iterator: Any = None
        self._batch_in_epoch = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._parameters: list[torch.Tensor] = []  # the optimizer's, refreshed when it gains a group
        self._parameter_groups = 0
        # Optimizer.zero_grad(set_to_none=True) sets each .grad to None inside a profiler scope:
        # about 25 µs a step on the README model, more than all the Trainer's own bookkeeping.
        # For optimizers that keep that method, the Trainer does the same directly.
        self._clear_directly = type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad
        self._target_steps: int | None = None
        self._found_inf, self._one = torch.zeros(1), torch.ones(1)
        # The spec's weighting (no strategy): multiplier × fixed weight per task, times exp(-s) for
        # the 'auto' tasks, whose log-variance s is learned. The multipliers change rarely, s every step.
        self._fixed_weights = [
            1.0 if n in model.log_vars else w for n, w in zip(self.task_names, model.spec_weights(), strict=True)
        ]
        self._auto_tasks = [(i, model.log_vars[n]) for i, n in enumerate(self.task_names) if n in model.log_vars]
        self._set_spec_multipliers([1.0] * len(self.task_names))  # strategies keep their own
        self._all_have_batch, self._total_batch = True, 0
        self._held_batch: Any = None
        from ..weighting.base import GradientWeighting

        self._strategy_averages = isinstance(model.weighting, GradientWeighting)
        if self._distributed:  # every rank starts from rank 0's parameters, strategy state and random order
            strategy = model.weighting
            inside = strategy is None or any(m is strategy for m in model.modules())
            distributed.broadcast_state_(model, *([] if inside else [strategy]))

    # ------------------------------------------------------------ steering (any thread)

    def set_weight(self, task: str, value: float) -> None:
        """Scale task `task` by `value` >= 0 from the next step on (its effective weight = value × strategy weight)."""
        self.controls.set_weight(task, value)

    def mute(self, task: str) -> None:
        self.controls.mute(task)

    def unmute(self, task: str) -> None:
        self.controls.unmute(task)

    def set_lr(self, value: float) -> None:
        self.controls.set_lr(value)

    def set_option(self, name: str, value: Any) -> None:
        """Change a knob of the weighting strategy (for example `c` of CAGrad) from the next step on."""
        self.controls.set_option(name, value)

    def pause(self) -> None:
        self.controls.pause()

    def resume(self) -> None:
        self.controls.resume()

    def stop(self) -> None:
        """End at the next step boundary: the model is left consistent (no half-applied step)."""
        self.controls.stop()

    @property
    def multipliers(self) -> dict[str, float]:
        source = self.model.weighting.multipliers.tolist() if self.model.weighting is not None else self._multipliers
        return dict(zip(self.task_names, source, strict=True))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------ running

    def fit(self, epochs: int | None = None, steps: int | None = None) -> History:
        """Train in the calling thread for `epochs` more epochs or `steps` more steps; returns the history.

        A non-finite loss raises `NonFiniteLossError` (after skipping that update): fix it
        (mute the task, lower the learning rate) and call `fit` again to go on.
        """
        self._begin(epochs, steps)
        self._run(epochs, steps, background=False)
        if self.error is not None:
            raise self.error
        return self.history

    def start(self, epochs: int | None = None, steps: int | None = None) -> Trainer:
        """Train in a background thread and return at once; steer with the methods above, `wait()` for the end."""
        if self._thread is not None and self._thread.is_alive():
            raise MTLError("this Trainer is already running; stop() or wait() before starting it again")
        self._begin(epochs, steps)
        parent = _kernel_parent()
        self._thread = threading.Thread(
            target=self._run_in_thread, args=(epochs, steps, parent), name="mtlnb-trainer", daemon=True
        )
        self._thread.start()
        end_run_at_exit(self)
        return self

    def _end_at_exit(self, timeout: float = 10.0) -> None:
        """A script or kernel ending while this trains in the background: stop at the step boundary, then join."""
        if self._thread is not None and self._thread.is_alive():
            self.stop()
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> History:
        """Block until the background run ends; re-raise the exception it failed with, if any."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"training still running after {timeout} s (step {self.step})")
        if self.error is not None:
            raise self.error
        return self.history

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")

    def _begin(self, epochs: int | None, steps: int | None) -> None:
        if (epochs is None) == (steps is None):
            raise MTLError(f"give exactly one of epochs= or steps=; got epochs={epochs!r}, steps={steps!r}")
        amount = epochs if epochs is not None else steps
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            raise MTLError(f"{'epochs' if epochs is not None else 'steps'} should be a positive int. Found {amount!r}.")
        self.controls.reset()
        self.error = None
        self.state = "running"

    def _run_in_thread(self, epochs: int | None, steps: int | None, parent: Any) -> None:
        _pin_output_to(parent)
        self._run(epochs, steps, background=True)
        if self.error is not None and not isinstance(self.error, NonFiniteLossError):
            # A thread's exception is lost unless shown: print it where the run was started.
            traceback.print_exception(type(self.error), self.error, self.error.__traceback__, file=sys.stderr)

    def _run(self, epochs: int | None, steps: int | None, background: bool) -> None:
        last_epoch = self.epoch + epochs if epochs is not None else None
        last_step = self.step + steps if steps is not None else None
        self._target_steps = last_step if last_step is not None else self._expected_last_step(epochs)
        self._send(
            Update(
                "start",
                self.step,
                {
                    "state": self.state,
                    "tasks": list(self.task_names),
                    "rank": self.rank,
                    "pid": os.getpid(),
                    "lr": self.lr,
                },
                self._target_steps,
            )
        )
        synced = self._distributed or self.control_file is not None
        controls = self.controls
        train_step = self._train_step if self._distributed else self._step
        # Each line of this loop runs once a step: it reads one flag when nothing was asked for.
        try:
            while True:
                if not synced and controls.attention and self._at_boundary_should_stop():
                    break
                if last_step is not None and self.step >= last_step:
                    break
                if last_epoch is not None and self.epoch >= last_epoch:
                    break
                batch = self._next_batch()
                # Across ranks: the same changes at the same step, and an epoch ends for all at once.
                if synced and self._at_synced_boundary_should_stop(batch):
                    self._held_batch = batch  # fetched but not trained: the first batch of the next run
                    break
                if batch is None or not self._all_have_batch:
                    self._end_epoch()
                    continue
                try:
                    train_step(batch)
                except NonFiniteLossError as error:
                    if not background:
                        raise
                    self.controls.pause()  # wait at the next boundary for the user to fix and resume
                    self.error = None
                    self._send(Update("event", self.step, {"kind": "paused", "message": str(error)}))
            self.state = "stopped" if self.controls.stopping else "done"
        except BaseException as error:
            self.error = error
            self.state = "paused" if isinstance(error, NonFiniteLossError) else "failed"
        finally:
            self._send(
                Update("end", self.step, {"state": self.state, "error": repr(self.error) if self.error else None})
            )

    def _expected_last_step(self, epochs: int | None) -> int | None:
        """Where `epochs` more epochs should end, when the data knows its length.

        For progress bars and ETAs only: an epoch ends when the data does, whatever this says.
        """
        try:
            per_epoch = len(self.train_data)
        except TypeError:  # a generator, an iterable without __len__
            return None
        if epochs is None or per_epoch <= 0:
            return None
        return self.step + epochs * per_epoch - self._batch_in_epoch

    def _at_boundary_should_stop(self) -> bool:
        """Apply what was asked since the last step; wait here while paused. Called when `controls.attention`."""
        controls = self.controls
        changes = controls.take()
        if changes:
            self._apply(changes)
        if controls.paused and not controls.stopping:
            self.state = "paused"
            self._send(Update("event", self.step, {"kind": "pause", "state": "paused"}))
            controls.wait_while_paused()
            changes = controls.take()  # changes made while paused take effect on resuming
            if changes:
                self._apply(changes)
            self.state = "running"
            if not controls.stopping:
                self._send(Update("event", self.step, {"kind": "resume", "state": "running"}))
        return controls.stopping

    def _at_synced_boundary_should_stop(self, batch: Any) -> bool:
        """The step boundary with a control file or other ranks: read, agree, apply; wait here while paused."""
        announced = False
        while True:
            if self.control_file is not None and self.rank == 0:
                self._read_control_file()
            changes = self.controls.take() if self.rank == 0 else []
            if self._distributed:
                changes = self._agree(batch, changes)
            if changes:
                self._apply(changes)
            if self.controls.stopping or not self.controls.paused:
                if announced and not self.controls.stopping:
                    self.state = "running"
                    self._send(Update("event", self.step, {"kind": "resume", "state": "running"}))
                return self.controls.stopping
            if not announced:
                self.state, announced = "paused", True
                self._send(Update("event", self.step, {"kind": "pause", "state": "paused"}))
            # Rank 0 polls the file; the others wait in the next collective. A local resume() wakes us at once.
            self.controls.wait_while_paused(0.1)

    def _agree(self, batch: Any, changes: list[Change]) -> list[Change]:
        """One collective: whether every rank has a batch, the total batch size, rank 0's changes and state."""
        local = _batch_size(batch[0]) if batch is not None else 0
        paused, stopping = self.controls.paused, self.controls.stopping
        summary = torch.tensor(
            [float(batch is not None), float(local), len(changes), paused, stopping], dtype=torch.float64
        )
        if self.rank != 0:
            summary[2:] = 0
        torch.distributed.all_reduce(summary)
        have, total, count, paused, stopping = summary.tolist()
        self._all_have_batch, self._total_batch = int(have) == distributed.world_size(), int(total)
        if count:
            box = [changes]
            torch.distributed.broadcast_object_list(box, 0)
            changes = box[0]
        if self.rank != 0:  # rank 0's pause and stop hold for all
            if stopping:
                self.controls.stop()
            elif paused:
                self.controls.pause()
            else:
                self.controls.resume()
        return changes

    def _read_control_file(self) -> None:
        """Queue the changes written to the control file; a bad line is reported as an event, not raised."""
        for record in self.control_file.read_new():
            kind, task, value = record.get("kind"), record.get("task"), record.get("value")
            try:
                if kind == "weight":
                    self.set_weight(task, value)
                elif kind == "lr":
                    self.set_lr(value)
                elif kind == "option":
                    self.set_option(task, value)
                elif kind in ("mute", "unmute"):
                    getattr(self, kind)(task)
                elif kind in ("pause", "resume", "stop"):
                    getattr(self, kind)()
                else:
                    raise MTLError(f"unknown control {kind!r}; valid: {list(distributed.ControlFile.KINDS)}")
            except MTLError as error:
                event = self.history.log_event(self.step, "refused", task, None, message=f"{record}: {error}")
                self._send(Update("event", self.step, event))

    def _apply(self, changes: list[Change]) -> None:
        strategy = self.model.weighting
        for change in changes:
            value = change.value
            if change.kind in ("weight", "mute", "unmute"):
                index = self.task_names.index(change.task)
                value = multiplier_after(change, self.multipliers[change.task], self._unmuted)
                if strategy is not None:
                    strategy.set_multiplier(index, value)
                else:
                    self._multipliers[index] = value
                    self._set_spec_multipliers(self._multipliers)
            elif change.kind == "lr":
                for group in self.optimizer.param_groups:
                    group["lr"] = value
            elif change.kind == "option":
                setattr(strategy, change.task, value)
            event = self.history.log_event(self.step, change.kind, change.task, value)
            self._send(Update("event", self.step, event))

    def _check_option(self, name: str, value: Any) -> None:
        from .. import weighting as weightings

        strategy = self.model.weighting
        live = {"c", "rescale", "alpha", "temperature", "update_every"}
        if strategy is None or name not in weightings.options(strategy.name) or name not in live:
            knobs = sorted(live & set(weightings.options(strategy.name))) if strategy is not None else []
            raise MTLError(f"the weighting has no live option {name!r}; live options: {knobs or 'none'}")
        weightings.get(strategy.name, tasks=list(self.task_names), **{name: value})  # validates the value

    # ------------------------------------------------------------ one step

    def _train_step(self, batch: Any) -> None:
        """A step of one rank under torchrun: gradients averaged over the ranks' batches."""
        with distributed.averaging(_batch_size(batch[0]), self._total_batch):
            return self._step(batch)

    def _step(self, batch: Any) -> None:
        # The hot path: every line here is paid on every step, on top of the user's own forward,
        # backward and optimizer step (benchmarks/bench_training.py); the rare cases branch out.
        start = time.perf_counter()
        inputs, targets = batch
        model, strategy = self.model, self.model.weighting
        if len(self.optimizer.param_groups) != self._parameter_groups:
            self._find_parameters()
        if self._clear_directly:
            for parameter in self._parameters:
                parameter.grad = None
        else:
            self.optimizer.zero_grad(set_to_none=True)
        y_hat = model(inputs)[0]
        per_task = model.task_losses(y_hat, targets)
        if self._distributed:  # the full batch's losses, the same on every rank (a NaN anywhere is a NaN everywhere)
            values = torch.stack([loss.detach() for loss in per_task.values()])
            distributed.average_([values])
            losses = values.tolist()
        else:
            losses = list(map(torch.Tensor.item, per_task.values()))
        if not math.isfinite(sum(losses)):  # one test for all tasks; which ones, only when it fails
            self._check_losses(losses)
        if strategy is None:
            total_tensor = model.weighted_total(per_task, self._multipliers)
            total_tensor.backward()
            weights = self._spec_base
            if self._auto_tasks:
                weights = weights.copy()
                for index, log_var in self._auto_tasks:
                    weights[index] *= math.exp(-log_var.item())
        else:
            total_tensor = model.backward_losses(per_task)
            weights = strategy.weights.tolist()
        total = total_tensor.item()
        if self._distributed:
            if self._strategy_averages:  # combined from per-task gradients already averaged across ranks
                total = sum(w * v for w, v in zip(weights, losses, strict=True) if w)
            else:  # one backward of the weighted total: average its gradients (and the total, for the history)
                carry = total_tensor.detach().reshape(1).clone()
                distributed.average_([*(g for p in self._parameters if (g := p.grad) is not None), carry])
                total = carry.item()
        if not _finite_gradients(
            [g for p in self._parameters if (g := p.grad) is not None], self._found_inf, self._one
        ):
            self._skip(losses, "the gradient is not finite (the losses were)", [])
        self.optimizer.step()
        seconds = time.perf_counter() - start
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.log(self.step, total, lr, seconds, losses, weights)
        self.step += 1
        self._batch_in_epoch += 1
        if self.outputs:
            self._send_step(losses, weights, total, lr, seconds)

    def _find_parameters(self) -> None:
        groups = self.optimizer.param_groups
        self._parameters = [p for group in groups for p in group["params"]]
        self._parameter_groups = len(groups)

    def _check_losses(self, losses: list[float]) -> None:
        """Skip the step if a task that trains has a non-finite loss; a muted task's loss reaches nothing."""
        multipliers = self.multipliers
        bad = [
            name
            for name, value in zip(self.task_names, losses, strict=True)
            if not math.isfinite(value) and multipliers[name] > 0
        ]
        if bad:
            found = ", ".join(str(losses[self.task_names.index(b)]) for b in bad)
            self._skip(
                losses,
                f"the loss of task{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} is not finite ({found})",
                bad,
            )

    def _send_step(self, losses: list[float], weights: list[float], total: float, lr: float, seconds: float) -> None:
        watching = step_outputs(self.outputs)
        if not watching:
            return
        names = self.task_names
        update = Update(
            "step",
            self.step,
            {
                "losses": dict(zip(names, losses, strict=True)),
                "weights": dict(zip(names, weights, strict=True)),
                "total": total,
                "lr": lr,
                "seconds": seconds,
            },
            self._target_steps,
        )
        for output in watching:
            output.send(update)

    def _set_spec_multipliers(self, multipliers: list[float]) -> None:
        """Set the spec weighting's multipliers and the weights the step reads, derived from them."""
        self._multipliers = multipliers
        self._spec_base = [m * w for m, w in zip(multipliers, self._fixed_weights, strict=True)]

    def _skip(self, losses: list[float], reason: str, tasks: list[str]) -> None:
        """Drop this update (parameters untouched), record why, and raise for the loop to pause."""
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._batch_in_epoch += 1
        message = f"step {self.step - 1}: {reason}; the update was skipped and training paused. " + (
            f"Mute {'them' if len(tasks) > 1 else 'the task'} or lower the learning rate, then resume()."
            if tasks
            else "Lower the learning rate, then resume()."
        )
        self.history.log_event(
            self.step - 1,
            "nonfinite",
            tasks[0] if len(tasks) == 1 else (tasks or None),
            None,
            message=message,
            losses=losses,
        )
        raise NonFiniteLossError(message)

    # ------------------------------------------------------------ data and epochs

    def _next_batch(self) -> Any:
        """The next `(inputs, targets)` of this epoch, or None when the epoch's data has run out."""
        if self._held_batch is not None:
            batch, self._held_batch = self._held_batch, None
            return batch
        if self._iterator is None:
            self._open_epoch()
        try:
            batch = next(self._iterator)
        except StopIteration:
            return None
        if type(batch) is tuple and len(batch) == 2:  # the usual (inputs, targets), without a call
            return batch
        return _split_batch(batch, self.model.output_tasks)

    def _open_epoch(self) -> None:
        if self._batch_in_epoch == 0:
            sampler = getattr(self.train_data, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler shuffles by epoch, alike on every rank
                sampler.set_epoch(self.epoch)
            self._epoch_rng = rng_state(self.train_data)
            self._iterator = iter(self.train_data)
        else:  # resumed mid-epoch from a checkpoint: replay the epoch's shuffle, skip what was done
            now = rng_state(self.train_data)
            set_rng_state(self._epoch_rng, self.train_data)
            self._iterator = iter(self.train_data)
            for _ in range(self._batch_in_epoch):
                next(self._iterator)
            set_rng_state(now, self.train_data)

    def _end_epoch(self) -> None:
        if self._batch_in_epoch == 0:
            if self.epoch > 0 and iter(self.train_data) is self.train_data:
                raise MTLError(
                    f"train_data ran out after epoch {self.epoch}: it is a one-pass iterator (a generator?); "
                    "give a list or a DataLoader to train for more than one epoch"
                )
            raise MTLError("train_data yielded no batch; give an iterable of (inputs, targets) batches")
        self._iterator = None
        self._batch_in_epoch = 0
        self.epoch += 1
        validation = self.evaluate(self.val_data) if self.val_data is not None else None
        self.history.log_epoch(self.epoch, self.step, validation)
        self._send(Update("epoch", self.step, {"epoch": self.epoch, "validation": validation}))

    @torch.no_grad()
    def evaluate(self, data: Iterable[Any]) -> dict[str, float]:
        """Mean raw loss of each task over `data`, in eval mode (the model's mode is restored)."""
        was_training = self.model.training
        self.model.eval()
        try:
            sums, batches = [0.0] * len(self.task_names), 0
            for batch in data:
                inputs, targets = _split_batch(batch, self.model.output_tasks)
                per_task = self.model.task_losses(self.model(inputs)[0], targets)
                sums = [s + float(v) for s, v in zip(sums, per_task.values(), strict=True)]
                batches += 1
        finally:
            self.model.train(was_training)
        return {name: s / max(batches, 1) for name, s in zip(self.task_names, sums, strict=True)}

    def _send(self, update: Update) -> None:
        for output in self.outputs:
            output.send(update)

    @property
    def status(self) -> str:
        """One line for people: the state, the step, and the last event worth reading (a NaN pause names the task)."""
        notes = [e for e in self.history.events if e["kind"] == "nonfinite"]
        text = f"{self.state} at step {self.step} (epoch {self.epoch})"
        if self.error is not None:
            text += f": {type(self.error).__name__}: {self.error}"
        elif self.state == "paused" and notes and notes[-1]["step"] == self.step - 1:
            text += ": " + notes[-1]["message"]
        return text

    # ------------------------------------------------------------ checkpoints

    def save(self, path: str | Path) -> Path:
        """Everything needed to go on exactly: model, optimizer, weighting, multipliers, history, random states."""
        from .checkpoint import save_checkpoint

        if self.state == "running":
            raise MTLError("pause() or stop() the Trainer before saving: a checkpoint is taken at a step boundary")
        if self.controls.has_pending:  # due at the next step anyway; applied now so the file holds them
            self._apply(self.controls.take())
        return save_checkpoint(self, Path(path))

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: MTLModel,
        optimizer: torch.optim.Optimizer,
        train_data: Iterable[Any],
        **kwargs: Any,
    ) -> Trainer:
        """A Trainer that goes on from a checkpoint written by `save` (the model and optimizer are filled in)."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(cls, Path(path), model, optimizer, train_data, **kwargs)


def learned_weights_missing(optimizer: torch.optim.Optimizer, strategy: Any) -> list[torch.Tensor]:
    """The strategy's learned weights that the optimizer lacks (none if it was built from
    model.parameters() once the model had the strategy): the Trainer adds them as a group of their own."""
    known = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [p for p in strategy.parameters() if p.requires_grad and id(p) not in known]


def _split_batch(batch: Any, output_tasks: list[str]) -> tuple[Any, Any]:
    """(inputs, targets) from a batch: that pair, or (inputs, target_1, ..., target_n) as a TensorDataset gives it."""
    if isinstance(batch, tuple | list):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 1 + len(output_tasks):
            return batch[0], list(batch[1:])
    raise MTLError(
        f"a batch should be (inputs, targets) or (inputs, {', '.join(f'target_{t}' for t in output_tasks)}), "
        f"targets in the order of the output tasks {output_tasks}; got {_describe_batch(batch)}"
    )


def _describe_batch(batch: Any) -> str:
    if isinstance(batch, dict):
        return f"a dict with keys {list(batch)}"
    if isinstance(batch, tuple | list):
        return f"a {type(batch).__name__} of {len(batch)}"
    return f"a {type(batch).__name__}"


def _batch_size(inputs: Any) -> int:
    """Samples in a batch's inputs: the first dimension of its first tensor."""
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0] if inputs.dim() else 1
    items = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, list | tuple) else []
    for item in items:
        if isinstance(item, torch.Tensor):
            return _batch_size(item)
    raise MTLError(
        f"cannot tell the batch size of inputs of type {type(inputs).__name__} (under torchrun it weights each rank)"
    )


def _finite_gradients(grads: list[torch.Tensor], found_inf: torch.Tensor, one: torch.Tensor) -> bool:
    """Whether every gradient is finite, in one fused pass (GradScaler's check, scale 1: values unchanged).

    `found_inf` is zero on entry and left zero on return, so the common case runs one kernel.
    On the README model's 25 gradients: 7 µs alone, against 39 µs for the cheapest unfused
    check; inside a 0.6 ms step it still costs about 15-20 µs, the largest part of the
    Trainer's bookkeeping.
    """
    if not grads:
        return True
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, one)
    except (AttributeError, RuntimeError):
        if found_inf.device == grads[0].device:  # a device or build without the fused kernel
            return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        found_inf.data, one.data = found_inf.to(grads[0].device), one.to(grads[0].device)  # the model moved
        return _finite_gradients(grads, found_inf, one)
    if found_inf.item():
        found_inf.zero_()
        return False
    return True


# ---------------------------------------------------------------- random states


def rng_state(data: Any) -> dict[str, Any]:
    """The random states that decide the next batches and dropout: torch's global one, and the loader's own."""
    generator = getattr(data, "generator", None)
    return {"torch": torch.get_rng_state(), "loader": generator.get_state() if generator is not None else None}


def set_rng_state(state: dict[str, Any] | None, data: Any) -> None:
    if state is None:
        return
    torch.set_rng_state(state["torch"])
    generator = getattr(data, "generator", None)
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"])


# ---------------------------------------------------------------- notebooks


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _default_outputs() -> list[Output]:
    return [] if _in_notebook() or not sys.stderr.isatty() else [ConsoleProgress()]


def _kernel_parent() -> Any:
    """The message of the cell running now, to pin the thread's output to it (ipykernel >= 7)."""
    if not _in_notebook():
        return None
    shell = sys.modules["IPython"].get_ipython()
    kernel = getattr(shell, "kernel", None)
    try:
        return kernel.get_parent() if kernel is not None else None
    except Exception:  # an older kernel without get_parent: output goes wherever it goes
        return None


def _pin_output_to(parent: Any) -> None:
    if parent is None:
        return
    shell = sys.modules["IPython"].get_ipython()
    if hasattr(shell, "set_thread_parent"):
        shell.set_thread_parent(parent)
