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


class DiskFullError(UserError, OSError):
    """A file could not be written for want of space (a full disk, a used-up quota, the file-size limit).
    ``errno`` is the operating system's (ENOSPC, EDQUOT or EFBIG); ``path`` the file that was not written, and
    nothing of it is left behind (``diffusion.files``)."""

    def __init__(self, message: str, path: object = None, code: int | None = None, fix: str = ""):
        super().__init__(f"{message}; {fix}" if fix else message)
        self.head, self.path, self.errno = message, path, code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def remedy(self) -> str:
        """What makes room: free space, or raise the limit that stopped the write."""
        import errno

        return {errno.EFBIG: "raise the file-size limit (ulimit -f unlimited)",
                errno.EDQUOT: "free some of your disk quota"}.get(self.errno, "free some space")

    def with_fix(self, fix: str) -> "DiskFullError":
        """The same error with another closing hint (e.g. the newest good checkpoint and the resume command)."""
        return DiskFullError(self.head, self.path, self.errno, fix)


__all__ = ["UserError", "DataError", "CheckpointError", "UntrustedConfigError", "ConfigError", "TrainingError",
           "EvaluationError", "DiskFullError"]
