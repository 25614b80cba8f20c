"""Checkpoints that resume exactly and load no code.

Written with `torch.save`, read with `torch.load(weights_only=True)`: only tensors
and plain data come back, so a file carrying a pickled object that would run code
on loading is refused before anything of it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import MTLError

if TYPE_CHECKING:
    from .trainer import Trainer

FORMAT = "mtlnb-checkpoint"
VERSION = 1


def save_checkpoint(trainer: Trainer, path: Path) -> Path:
    from .trainer import rng_state

    state = {
        "format": FORMAT,
        "version": VERSION,
        "task_names": list(trainer.task_names),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "optimizer_class": type(trainer.optimizer).__name__,
        "spec_multipliers": list(trainer._multipliers),
        "unmuted": dict(trainer._unmuted),
        "history": trainer.history.state_dict(),
        "step": trainer.step,
        "epoch": trainer.epoch,
        "batch_in_epoch": trainer._batch_in_epoch,
        "rng_epoch_start": trainer._epoch_rng,
        "rng_now": rng_state(trainer.train_data),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    torch.save(state, temporary)
    temporary.replace(path)  # never a half-written checkpoint under the real name
    return path


def load_checkpoint(
    cls: type[Trainer], path: Path, model: Any, optimizer: Any, train_data: Any, **kwargs: Any
) -> Trainer:
    from .trainer import set_rng_state

    if not path.exists():
        raise MTLError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise MTLError(
            f"refused to load {path}: it carries pickled Python objects, which could run code when loaded, "
            f"and a mtlnb checkpoint holds only tensors and plain data. ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MTLError(
            f"{path} is not an mtlnb checkpoint (it has no '{FORMAT}' marker); was it written by Trainer.save?"
        )
    # Checked before anything is loaded: a refused checkpoint leaves the model and optimizer as they were.
    if list(model.loss_tasks) != state["task_names"]:
        raise MTLError(f"the checkpoint's tasks {state['task_names']} are not this model's {list(model.loss_tasks)}")
    saved_class = state.get("optimizer_class")  # absent from files of mtlnb 0.1
    if saved_class is not None and saved_class != type(optimizer).__name__:
        raise MTLError(
            f"{path} was saved with a {saved_class} optimizer; give Trainer.load a {saved_class} too "
            f"(got {type(optimizer).__name__}): its state (momenta, step counts) only fits its own kind"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise MTLError(
            f"{path} was saved from a model with other layers: build the model from the spec it was trained "
            f"with, then load. What differs: {error}"
        ) from None
    trainer = cls(model, optimizer, train_data, **kwargs)
    optimizer.load_state_dict(state["optimizer"])
    trainer._multipliers = list(state["spec_multipliers"])
    trainer._unmuted = dict(state["unmuted"])
    trainer.history.load_state_dict(state["history"])
    trainer.step, trainer.epoch, trainer._batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    trainer._epoch_rng = state["rng_epoch_start"]
    set_rng_state(state["rng_now"], train_data)
    return trainer
