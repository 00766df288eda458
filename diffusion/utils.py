"""Small shared helpers."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-sample tensor of shape (batch,) (or a scalar) so it broadcasts against (batch, *dims)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one random stream, from a base seed and a name (``derive_seed(seed, "noise", rank)``):
    the SHA-256 of ``repr((seed, *parts))``, so streams with different names never collide and nearby seeds
    give unrelated streams. The project's one way to derive seeds (training streams, generation batches)."""
    digest = hashlib.sha256(repr((int(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# the process's umask, read once (os.umask can only be read by setting it)
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object], needed: int | None = None) -> Path:
    """Write a file through ``write_fn(file)`` so that no reader ever sees it half written; returns the path.

    The bytes go to a temporary file ``.<name>.<random>.tmp`` in the target folder, are flushed and fsync'ed,
    get the permissions of any new file (0666 less the umask; mkstemp alone gives 0600), and only then does
    ``os.replace`` give them the name (atomic within one file system), followed by an fsync of the folder so
    the rename survives a power cut. A failure removes the temporary file; a process killed outright leaves
    it behind, and the old file (if any) stays complete.

    A write that fails for want of space (full disk, quota, file-size limit; however the library doing the
    writing words it) raises a one-line ``DiskFullError`` naming the file and its size (``needed``, in bytes, if
    the caller knows it; else what was written when it failed); see ``diffusion.files``.
    """
    from diffusion.files import CountingFile, disk_full, out_of_space

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        code = out_of_space(path, e)
        if code is None:
            raise
        raise disk_full(path, code, needed=needed) from None
    counting = None
    try:
        with os.fdopen(fd, "wb") as f:
            counting = CountingFile(f)
            write_fn(counting)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        # asked before the temporary file goes: its bytes are what filled the disk
        code = out_of_space(path, e, counting.error if counting else None)
        Path(tmp).unlink(missing_ok=True)
        if code is None:
            raise
        raise disk_full(path, code, counting.written if counting else 0, needed) from None
    _fsync_dir(path.parent)
    return path


def write_json(path: str | os.PathLike, data: object, indent: int = 1, **dumps_options) -> Path:
    """``data`` as a JSON file, written atomically (``write_atomic``)."""
    return write_text(path, json.dumps(data, indent=indent, **dumps_options))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as a UTF-8 file, written atomically (``write_atomic``): ``Path.write_text`` that never leaves
    half a file, and says so in one line when the disk is full."""
    data = text.encode()
    return write_atomic(path, lambda f: f.write(data), needed=len(data))


def read_json(path: str | os.PathLike, missing: str, what: str = "a JSON file") -> object:
    """The JSON in ``path`` (no code runs when it is read). A missing file raises ``ConfigError(missing)``, an
    unreadable one a ConfigError saying that it is not ``what``."""
    from diffusion.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not {what} (invalid JSON: {err})") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
