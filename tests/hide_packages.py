"""Run a script as if some packages were not installed: ``python tests/hide_packages.py SCRIPT ARGS...``.

The GPU machine ``benchmarks/gpu.py`` is written for has neither jsonargparse nor litdata; this
hides them (their modules cannot be imported, their distributions are not found, so Lightning's
``RequirementCache`` reports them missing) and ``ssl_lightning.cli``, which needs jsonargparse,
then runs ``SCRIPT`` as ``__main__`` with its own folder first on ``sys.path``, as ``python SCRIPT``
would. An import of a hidden module fails with ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import runpy
import sys
from pathlib import Path

HIDDEN_PACKAGES = ("jsonargparse", "litdata", "docstring_parser")
HIDDEN_MODULES = ("ssl_lightning.cli",)


class HiddenModules(importlib.abc.MetaPathFinder):
    """Refuses the hidden packages and modules before any other finder can find them."""

    def find_spec(self, name, path, target=None) -> None:
        if name.split(".")[0] in HIDDEN_PACKAGES or name in HIDDEN_MODULES:
            raise ModuleNotFoundError(f"{name} is hidden by tests/hide_packages.py", name=name)


def hidden_version(name: str, _version=importlib.metadata.version) -> str:
    if name in HIDDEN_PACKAGES:
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)


def main() -> None:
    script, *args = sys.argv[1:]
    importlib.metadata.version = hidden_version
    sys.meta_path.insert(0, HiddenModules())
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
