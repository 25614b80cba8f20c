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
        # Which strategy, so that a model built afresh (without it) gets the same one back.
        "weighting": None
        if (strategy := trainer.model.weighting) is None
        else {"name": strategy.name, "options": getattr(strategy, "built_with", None)},
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
    strategy = _strategy_to_attach(path, model, state, kwargs.pop("weighting", None))
    _check_fits(path, model, optimizer, strategy, state)
    if strategy is not None:
        model.use_weighting(strategy)
        kwargs["weighting"] = strategy  # the Trainer gives its learned weights to the optimizer
    model.load_state_dict(state["model"])  # keys and shapes checked above
    trainer = cls(model, optimizer, train_data, **kwargs)
    optimizer.load_state_dict(state["optimizer"])
    trainer._set_spec_multipliers(list(state["spec_multipliers"]))
    trainer._unmuted = dict(state["unmuted"])
    trainer.history.load_state_dict(state["history"])
    trainer.step, trainer.epoch, trainer._batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    trainer._epoch_rng = state["rng_epoch_start"]
    set_rng_state(state["rng_now"], train_data)
    return trainer


def _strategy_to_attach(path: Path, model: Any, state: dict[str, Any], asked: Any) -> Any:
    """The strategy that `model` must get before loading (None if it has its own, or the run had none).

    A model built afresh lacks a strategy that the saved run's Trainer attached (`weighting=`):
    it gets the one asked for, or else the one rebuilt from the name and options the checkpoint holds.
    """
    from .. import weighting

    recorded = "weighting" in state  # files of mtlnb 0.1 do not say
    saved = state.get("weighting")
    saved_name = saved["name"] if saved else None
    have = model.weighting
    asked_name = asked if isinstance(asked, str) else getattr(asked, "name", None)
    for name, source in ((getattr(have, "name", None), "this model uses"), (asked_name, "weighting= asks for")):
        if recorded and name is not None and name != saved_name:
            raise MTLError(
                f"{path} was saved from a run with "
                + (f"weighting {saved_name!r}" if saved_name else "no weighting strategy")
                + f", but {source} {name!r}"
                + (f": its state (learned weights, running statistics) only fits {saved_name!r}" if saved_name else "")
            )
    if have is not None or (asked is None and saved is None):
        return None
    if asked is not None:
        return weighting.get(asked, tasks=list(model.loss_tasks)) if isinstance(asked, str) else asked
    if saved_name not in weighting.list_weightings() or saved.get("options") is None:
        raise MTLError(
            f"{path} was saved with weighting {saved_name!r}, built in a way the checkpoint cannot repeat; "
            "pass the same strategy again: Trainer.load(..., weighting=...)"
        )
    return weighting.get(saved_name, tasks=list(model.loss_tasks), **saved["options"])


def _check_fits(path: Path, model: Any, optimizer: Any, strategy: Any, state: dict[str, Any]) -> None:
    """Refuse, before anything changes, a checkpoint whose tensors or parameter groups do not fit."""
    expected = _shapes(model.state_dict())
    if strategy is not None:
        expected |= _shapes(strategy.state_dict(prefix="weighting."))
    saved = _shapes(state["model"])
    differences = [f"this model has {key!r}, the checkpoint not" for key in expected if key not in saved]
    differences += [f"the checkpoint has {key!r}, this model not" for key in saved if key not in expected]
    differences += [
        f"{key!r} is {saved[key]} in the checkpoint, {shape} here"
        for key, shape in expected.items()
        if key in saved and saved[key] != shape
    ]
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise MTLError(
            f"{path} was saved from a model with other layers: build the model from the spec it was trained "
            f"with, then load. What differs: {shown}"
        )
    from .trainer import learned_weights_missing

    groups = [len(group["params"]) for group in optimizer.param_groups]
    if strategy is not None and (learned := learned_weights_missing(optimizer, strategy)):
        groups.append(len(learned))
    saved_groups = [len(group["params"]) for group in state["optimizer"]["param_groups"]]
    if groups != saved_groups:
        raise MTLError(
            f"{path} was saved with an optimizer over parameter groups of {saved_groups} parameters; this one "
            f"(with the strategy's learned weights) has {groups}. Build the optimizer as the saved run did, "
            "e.g. from model.parameters() before the Trainer was made"
        )


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...] | None]:
    """Key to tensor shape (None for an extra state: a generator's, a step count)."""
    return {key: tuple(value.shape) if hasattr(value, "shape") else None for key, value in state.items()}
