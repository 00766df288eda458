"""A write that fails for want of space, told in one line: which file, how much it needed, what is free.

The operating system reports a full disk as ``OSError(ENOSPC)`` (``EDQUOT``: a quota used up; ``EFBIG``: a file
larger than the process's file-size limit, ``ulimit -f``), but libraries wrap it: torch's zip writer turns it into
``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos 704 vs 598`` (the ``OSError`` survives
only as the exception's ``__context__``), and encoders written in C report a short write without an errno. So a
failed write is recognised three ways (``out_of_space``):

1. an ``OSError`` with one of those errno values anywhere in the exception's cause/context chain;
2. the same error seen by ``CountingFile.write`` on its way through, before a library replaced it;
3. failing both, the file system's free space after the failure (``os.statvfs``): under ``FULL_BELOW`` bytes
   free, the disk is full whatever the library said.

``DiskFullError`` (a ``UserError`` and an ``OSError`` with the errno) then says it in one line;
``diffusion.utils.write_atomic`` raises it for every file the project writes, after removing its temporary file.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from diffusion.errors import DiskFullError

#: errno values that mean "no room for these bytes"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: a file system with fewer bytes than this free after a failed write is full (the failure was for want of space)
FULL_BELOW = 1 << 20


def human_bytes(n: float | None) -> str:
    """``2.3 MB``, ``512 B``: decimal units, as ``df -H`` prints them."""
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def no_space_errno(error: BaseException | None) -> int | None:
    """The ENOSPC / EDQUOT / EFBIG errno of an ``OSError`` in ``error``'s cause/context chain, else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return error.errno
        error = error.__cause__ or error.__context__
    return None


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system (None if it cannot be asked)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def tensor_bytes(obj: Any) -> int:
    """The bytes of all tensors and arrays in a nested dict/list: about the size of the file they are saved to."""
    if hasattr(obj, "nbytes") and not isinstance(obj, (int, float)):
        try:
            return int(obj.untyped_storage().nbytes()) if hasattr(obj, "untyped_storage") else int(obj.nbytes)
        except Exception:  # noqa: BLE001 - a meta or sparse tensor: count its nominal size
            return int(getattr(obj, "nbytes", 0))
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if isinstance(obj, (str, bytes)):
        return len(obj)
    return 0


class CountingFile:
    """A writable file that counts the bytes that reached it and keeps the ``OSError`` its ``write`` raised (a
    library calling it may replace that error with its own); everything else is the wrapped file's."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.written = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            n = self._file.write(data)
        except OSError as e:
            self.error = e
            raise
        self.written += n if isinstance(n, int) else len(data)
        return n

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:  # tell, seek, fileno, ... of the real file
        return getattr(self._file, name)


def out_of_space(path: str | os.PathLike, error: BaseException, seen: OSError | None = None) -> int | None:
    """The errno (ENOSPC, EDQUOT, EFBIG) if writing ``path`` failed with ``error`` for want of space, else None.

    ``seen``: an ``OSError`` observed on the way (``CountingFile.error``), in case ``error`` hides it. Ask before
    removing the partial file: with it gone the free space no longer tells."""
    if isinstance(error, DiskFullError):
        return error.errno
    if not isinstance(error, (OSError, RuntimeError)):  # KeyboardInterrupt, a bug's TypeError, ...
        return None
    code = no_space_errno(error) or no_space_errno(seen)
    if code is None:
        free = free_bytes(Path(path).parent)
        if free is not None and free < FULL_BELOW:
            code = errno.ENOSPC
    return code


def disk_full(path: str | os.PathLike, code: int, written: int | None = None,
              needed: int | None = None) -> DiskFullError:
    """The one-line error for ``path`` (with the space free now, after its partial file was removed): what ran out,
    the file, its size (``needed``; else more than the ``written`` bytes) and the free space."""
    import resource

    path = Path(path)
    if needed:
        size = f"it needs about {human_bytes(needed)}"
    elif written:
        size = f"it needs more than the {human_bytes(written)} written when the write failed"
    else:
        size = "nothing of it could be written"
    free = free_bytes(path.parent)
    where = f"; {human_bytes(free)} free on that file system" if free is not None else ""
    if code == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = "unlimited" if limit == resource.RLIM_INFINITY else human_bytes(limit)
        what, where = f"no room: the file-size limit (ulimit -f: {cap}) is reached", ""
    elif code == errno.EDQUOT:
        what = "no room: the disk quota is used up"
    else:
        what = "the disk is full"
    error = DiskFullError(f"{what}: could not write {path} ({size}{where})", path, code)
    return error.with_fix(f"{error.remedy}, then run the same command again")


__all__ = ["NO_SPACE", "FULL_BELOW", "DiskFullError", "CountingFile", "out_of_space", "disk_full", "no_space_errno",
           "free_bytes", "human_bytes", "tensor_bytes"]
