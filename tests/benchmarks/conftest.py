"""The benchmarks' shared library (benchmarks/lib) and scripts, loaded by their paths: they are not installed, and
under pytest's importlib mode the name ``benchmarks`` is this test folder. The library's modules import each other
relatively."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Callable

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks"
LIB = SCRIPTS / "lib"


@pytest.fixture(scope="session")
def bench_lib() -> types.ModuleType:
    """``benchmarks.lib`` as the package ``benchmarks_lib`` (its modules: ``importlib.import_module``)."""
    if "benchmarks_lib" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmarks_lib", LIB / "__init__.py",
                                                      submodule_search_locations=[str(LIB)])
        sys.modules["benchmarks_lib"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["benchmarks_lib"])
    for name in ("fewstep", "hutchpp", "report", "targets"):
        importlib.import_module(f"benchmarks_lib.{name}")
    return sys.modules["benchmarks_lib"]


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], types.ModuleType]:
    """A loader of one script of ``benchmarks/`` by its file name (``bench_script("gpu.py")``), as a module whose
    ``main(argv)`` the tests call in-process."""
    def load(name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(f"benchmark_{Path(name).stem}", SCRIPTS / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
