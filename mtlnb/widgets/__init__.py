"""Notebook widgets (ipywidgets 8, no front-end build): the live dashboard of a Trainer.

They call the public Python API only; every picture they show is drawn by
`mtlnb.drawing` first, so it can also be produced without a browser.
"""

from .dashboard import Dashboard

__all__ = ["Dashboard"]
