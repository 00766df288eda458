"""Training checkpoints: one file per save, written atomically, read with ``weights_only=True``.

A checkpoint ``<run dir>/checkpoints/ckpt_<step>.pt`` is a dict of tensors, numbers and strings only:

    {"format": "diffusion-ckpt", "version": 1, "step": int,
     "model": state_dict, "ema": state_dict, "optimizer": state_dict, "scaler": state_dict,
     "rng": [per-process {"torch", "cuda", "generator", "data"} RNG states as tensors],
     "config": the resolved training config as a YAML string,
     "budget_fit": {"configured": trainer.max_steps, "max_steps": where the run trains to (fewer where the time
                    budget's fit lowered it; a resume with the same trainer.max_steps keeps it)}}

Atomic write (``diffusion.utils.write_atomic``): the bytes go to a temporary file in the same folder, are
flushed and fsync'ed, and only then ``os.replace`` gives the file its name (a rename within one file system
is atomic), followed by an fsync of the folder so the rename itself survives a power cut. A process killed at
any moment therefore leaves either the old set of checkpoints or the old set plus one complete new file.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from diffusion.errors import CheckpointError, DiskFullError
from diffusion.files import tensor_bytes
from diffusion.utils import write_atomic

FORMAT = "diffusion-ckpt"
VERSION = 1
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"ckpt_{step}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint of a run, oldest first (temporary files are ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def require_checkpoints(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` if it holds a checkpoint to resume from, else a one-line ``CheckpointError``."""
    if not list_checkpoints(run_dir):
        raise CheckpointError(f"resume=true but {run_dir} has no checkpoints: pass hydra.run.dir=<the run folder to continue>")
    return Path(run_dir)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of a run folder (or of its ``checkpoints/`` folder)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        run_dir = p.parent if p.name == CKPT_DIR and not (p / CKPT_DIR).is_dir() else p
        found = list_checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"no checkpoints in {run_dir}: expected {run_dir / CKPT_DIR}/ckpt_<step>.pt (is it a train.py run folder?)")
        return found[-1][1]
    raise CheckpointError(f"no checkpoint at {p}: pass a ckpt_<step>.pt file or a train.py run folder")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format header added) to ``path`` atomically (``diffusion.utils.write_atomic``,
    with the permissions of any other new file); returns the path."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        return write_atomic(path, lambda f: torch.save(payload, f), needed=tensor_bytes(payload))
    except DiskFullError as full:
        raise full.with_fix(resume_hint(Path(path), full.remedy)) from None


def resume_hint(path: Path, remedy: str = "free some space") -> str:
    """For a checkpoint that could not be written: the newest good one, and the command that resumes from it."""
    run_dir = path.parent.parent if path.parent.name == CKPT_DIR else path.parent
    found = [p for _, p in list_checkpoints(run_dir) if p != path]
    newest = f"the newest good checkpoint is {_shown(found[-1])}" if found else "no earlier checkpoint was written"
    return f"{newest}; {remedy}, then resume with: python train.py resume=true hydra.run.dir={_shown(run_dir)}"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all) and stale
    temporary files of interrupted writes; returns what was deleted."""
    removed = []
    found = list_checkpoints(run_dir)
    if keep_last > 0:
        for _, p in found[:-keep_last]:
            p.unlink(missing_ok=True)
            removed.append(p)
    folder = Path(run_dir) / CKPT_DIR
    if folder.is_dir():
        for p in folder.glob(".ckpt_*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file or a run folder's latest checkpoint with ``torch.load(weights_only=True)``.

    Raises ``CheckpointError`` (one line) for a missing, truncated or corrupt file, a file written by
    another program, and a pickle that would run code when loaded (which weights_only refuses to do).
    """
    file = resolve_checkpoint(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{file} holds a pickle that would run code ({found.group(1)}) when loaded, which "
                                  "weights_only loading refuses: it is not a train.py checkpoint; load only files you trust") from None
        raise CheckpointError(f"{file} is truncated or corrupt (not a readable torch file); "
                              "delete it to fall back to the run's previous checkpoint") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{file} is truncated or corrupt ({first[:160]}); "
                              "delete it to fall back to the run's previous checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a diffusion checkpoint (no 'format': '{FORMAT}' entry): "
                              "it was written by another program; pass a train.py checkpoint or run folder")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{file} has checkpoint version {state['version']}, newer than this code's {VERSION}: update the package")
    missing = [k for k in ("step", "model", "config") if k not in state]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}: the file is incomplete; use another checkpoint")
    state["path"] = str(file)
    return state
