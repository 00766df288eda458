"""Compatibility alias: the fit of iPNDM's weights moved one layer up, to ``diffusion.fitting`` (``coefficients.py``,
``schedule_files.py``); the check of given weights is ``ipndm.check_coefficients``. ``diffusion.samplers.
coefficients.<name>`` still finds them, loaded on first use, so that importing the samplers never imports the layer
above them. New code imports ``diffusion.fitting``."""
from __future__ import annotations

import importlib

_MOVED = {"fit_coefficients": "diffusion.fitting.coefficients", "held_out_error": "diffusion.fitting.coefficients",
          "RIDGES": "diffusion.fitting.coefficients", "load_coefficients": "diffusion.fitting.schedule_files",
          "check_coefficients": "diffusion.samplers.ipndm", "Coefficients": "diffusion.samplers.ipndm"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["fit_coefficients", "check_coefficients", "load_coefficients", "held_out_error", "Coefficients", "RIDGES"]
