"""Training sessions: the Trainer, the controls it reads once per step, the history it writes, checkpoints,
and jobs run elsewhere (torchrun) followed from a notebook."""

from .controls import Change, Controls
from .follower import JobFollower, launch
from .history import History, HistoryView
from .monitor import LoopMonitor
from .trainer import NonFiniteLossError, Trainer

__all__ = [
    "Change",
    "Controls",
    "History",
    "HistoryView",
    "JobFollower",
    "LoopMonitor",
    "NonFiniteLossError",
    "Trainer",
    "launch",
]
