"""The benchmarks' shared library (benchmarks/lib), loaded by its path: it is not installed, and under pytest's
importlib mode the name ``benchmarks`` is this test folder. Its modules import each other relatively."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "benchmarks" / "lib"


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
