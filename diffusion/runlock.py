"""One writer per folder: a run folder (train.py) or a sample folder (sample.py) is written by one job at a time.

    hold_for_job(run_dir, "train.py", fix="pass another hydra.run.dir")   # FolderBusyError if another job holds it

The lock is a POSIX record lock (``fcntl.lockf``) on ``<folder>/.lock``, which holds the holder's PID, host, command
and start time for the message of whoever is refused. The kernel drops the lock when its process ends, however it
ends (``kill -9`` included), so it never outlives its holder and never blocks a resume. A record lock rather than
``flock``: children forked by the holder (DataLoader workers) do not inherit it, so a holder killed outright frees
its folder at once, not when its last worker notices. Locks are per process: the same process taking the same
folder twice is one writer (the hold is counted), and a data-parallel job is one writer too: its rank 0 holds the
lock for all ranks (``hold_for_job``). Where the file system cannot lock (some network mounts), nothing is held.

A hold lasts until ``release`` or the end of the ``lock_scope`` it was taken in (``diffusion.cli.guarded`` runs each
script's task in one), else until the process ends.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from diffusion.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"

_held: dict[str, list[int]] = {}     # lock file (real path) -> [file descriptor, holds]
_scopes: list[list[str]] = []        # the lock files taken in each open lock_scope


class FolderBusyError(UserError):
    """Another process (another job) is writing the folder."""


def hold(folder: str | os.PathLike, command: str, fix: str = "") -> Path:
    """Take ``folder``'s lock for this process (creating the folder), or raise ``FolderBusyError`` naming the
    process that holds it; ``fix`` closes the message (what else the user can pass). Returns the lock file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder / LOCK_NAME)
    if key in _held:
        _held[key][1] += 1
    else:
        fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)  # this process holds no lock on the file: closing it drops nothing
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise FolderBusyError(f"{folder} is being written by {holder}: a folder has one writer; wait for "
                                      f"that process to end (or stop it){'; or ' + fix if fix else ''}") from None
            log.warning(f"cannot lock {key} ({e.strerror}): nothing keeps a second process from writing {folder}")
            return Path(key)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n{command}\n{time.time():.0f}\n".encode())
        _held[key] = [fd, 1]
    if _scopes:
        _scopes[-1].append(key)
    return Path(key)


def release(folder: str | os.PathLike) -> None:
    """Give back one hold of ``folder``'s lock; the last one unlocks it."""
    _release(os.path.realpath(Path(folder) / LOCK_NAME))


def _release(key: str) -> None:
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(entry[0], 0)
        os.close(entry[0])  # closing the file ends the record lock


@contextlib.contextmanager
def lock_scope() -> Iterator[None]:
    """Release, on leaving, every hold taken inside (a script's task: ``diffusion.cli.guarded``)."""
    _scopes.append([])
    try:
        yield
    finally:
        for key in reversed(_scopes.pop()):
            _release(key)


def hold_for_job(folder: str | os.PathLike, command: str, fix: str = "") -> None:
    """``hold`` for a job of one or more processes: under torch.distributed, rank 0 takes the lock and every rank
    raises the same ``FolderBusyError`` if it was refused (all ranks of a job are one writer)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        hold(folder, command, fix)
        return
    refused = None
    if dist.get_rank() == 0:
        try:
            hold(folder, command, fix)
        except FolderBusyError as e:
            refused = str(e)
    box = [refused]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise FolderBusyError(box[0])


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file: 'train.py (PID 1234 on host a, since 12:00:05 UTC)'."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")
        pid, host, command, since = (text + [""] * 4)[:4]
        int(pid)
    except (OSError, ValueError):
        return "another process"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(since))) if since.isdigit() else "?"
    return f"{command} (PID {pid} on host {host}, since {when})"


__all__ = ["LOCK_NAME", "FolderBusyError", "hold", "release", "lock_scope", "hold_for_job"]
