"""mtlnb: multi-task learning in PyTorch, built for notebooks.

Describe a model as a list of torchMTL task dicts, build an `MTLModel`, train it
on `model.loss(...)`. Heavy optional libraries (matplotlib, ipywidgets, graphviz)
are imported only by the parts that draw.
"""

from .errors import MTLError, SpecError, SpecWarning
from .graph import LossResult, MTLModel
from .layers import Concat, Lambda, Mean, SimpleSelect, SliceSelect, Sum
from .spec import Task
from .training import History, JobFollower, LoopMonitor, NonFiniteLossError, Trainer

__version__ = "0.1.0"

__all__ = [
    "Concat",
    "History",
    "JobFollower",
    "Lambda",
    "LoopMonitor",
    "LossResult",
    "MTLError",
    "MTLModel",
    "Mean",
    "NonFiniteLossError",
    "SimpleSelect",
    "SliceSelect",
    "SpecError",
    "SpecWarning",
    "Sum",
    "Task",
    "Trainer",
    "__version__",
]
