"""The exceptions training raises for problems a user can fix; entry points print their one-line message."""
from __future__ import annotations


class ConfigError(ValueError):
    """The configuration asks for something impossible (a CUDA device without CUDA, a bad prediction, ...)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a loss turned NaN, batch sizes that do not divide, ...)."""
