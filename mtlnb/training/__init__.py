"""Training sessions: the Trainer, the controls it reads once per step, the history it writes, checkpoints."""

from .controls import Change, Controls
from .history import History
from .monitor import LoopMonitor
from .trainer import NonFiniteLossError, Trainer

__all__ = ["Change", "Controls", "History", "LoopMonitor", "NonFiniteLossError", "Trainer"]
