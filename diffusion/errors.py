"""The errors a user can fix. Entry points print them as one line (``diffusion.cli``) and exit with status 2.

Everything else that escapes the library is a bug and keeps its traceback: a bare ``ValueError`` from deep
inside means that an entry point failed to check its input.
"""
from __future__ import annotations


class UserError(Exception):
    """A request that cannot be carried out as asked; the message is one line that names the fix."""


class DataError(UserError, ValueError):
    """A data set cannot be built (missing files, bad arguments)."""


class CheckpointError(UserError):
    """A checkpoint cannot be found or read, or it is not a train.py checkpoint."""


class UntrustedConfigError(CheckpointError):
    """A config read from a file asks to build something other than the project's own classes."""


class ConfigError(UserError, ValueError):
    """The configuration asks for something impossible (a CUDA device without CUDA, a bad prediction, ...)."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a loss turned NaN, batch sizes that do not divide, ...)."""


class EvaluationError(UserError, ValueError):
    """A sampling or evaluation request cannot be carried out."""


__all__ = ["UserError", "DataError", "CheckpointError", "UntrustedConfigError", "ConfigError", "TrainingError",
           "EvaluationError"]
