"""Checkpoints: the file format, atomic writes (a crash mid-save leaves the previous checkpoint intact),
keep-last pruning, and a one-line CheckpointError for every way a file can be wrong."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from diffusion.training.checkpoint import (CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint,
                                           prune_checkpoints, resolve_checkpoint, save_checkpoint)

from .helpers import REPO, subprocess_env


def _state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "ema": {}, "config": "model: {}\nprocess: {}\n"}


def test_roundtrip_weights_only_and_latest(tmp_path):
    for step in (5, 20, 100):
        save_checkpoint(checkpoint_path(tmp_path, step), _state(step))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 20, 100]   # numeric, not lexical, order
    state = torch.load(tmp_path / "checkpoints" / "ckpt_20.pt", weights_only=True)
    assert state["format"] == "diffusion-ckpt" and state["version"] == 1 and state["step"] == 20
    latest = load_checkpoint(tmp_path)                                   # a run folder -> its latest file
    assert latest["step"] == 100 and torch.equal(latest["model"]["w"], torch.full((3,), 100.0))
    assert load_checkpoint(tmp_path / "checkpoints")["step"] == 100
    assert resolve_checkpoint(tmp_path / "checkpoints" / "ckpt_5.pt").name == "ckpt_5.pt"


def test_prune_keeps_last_k_and_removes_stale_temp_files(tmp_path):
    for step in range(1, 6):
        save_checkpoint(checkpoint_path(tmp_path, step), _state(step))
    stale = tmp_path / "checkpoints" / ".ckpt_6.pt.abc.tmp"
    stale.write_bytes(b"half a checkpoint")
    prune_checkpoints(tmp_path, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5] and not stale.exists()
    prune_checkpoints(tmp_path, keep_last=0)                             # 0 keeps all
    assert len(list_checkpoints(tmp_path)) == 2


def test_failed_rename_leaves_previous_checkpoint(tmp_path, monkeypatch):
    """A crash between writing the temporary file and renaming it: the old checkpoint stays the latest."""
    save_checkpoint(checkpoint_path(tmp_path, 1), _state(1))

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(checkpoint_path(tmp_path, 2), _state(2))
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert list((tmp_path / "checkpoints").iterdir()) == [checkpoint_path(tmp_path, 1)]  # temp file cleaned up
    assert load_checkpoint(tmp_path)["step"] == 1


def test_kill_9_during_save_leaves_previous_checkpoint(tmp_path):
    """SIGKILL at the worst moment (new file written, not yet renamed): nothing can clean up, yet the
    run folder's latest checkpoint is the previous one, complete and loadable."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from diffusion.training.checkpoint import checkpoint_path, save_checkpoint
        state = lambda s: {{"step": s, "model": {{"w": torch.zeros(1000)}}, "config": "model: {{}}\\nprocess: {{}}\\n"}}
        save_checkpoint(checkpoint_path({str(tmp_path)!r}, 1), state(1))
        os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
        save_checkpoint(checkpoint_path({str(tmp_path)!r}, 2), state(2))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), timeout=60)
    assert proc.returncode == -9
    leftovers = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert leftovers[0].startswith(".ckpt_2.pt.") and leftovers[1] == "ckpt_1.pt"   # the orphaned temp file
    assert load_checkpoint(tmp_path)["step"] == 1
    prune_checkpoints(tmp_path, keep_last=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_1.pt"]


def _one_line(error: CheckpointError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_missing(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert "no checkpoint at" in _one_line(e.value)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)                                        # a folder without checkpoints/
    assert "no checkpoints in" in _one_line(e.value)


def test_truncated_and_garbage(tmp_path):
    good = save_checkpoint(checkpoint_path(tmp_path, 1), _state(1))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a zip file" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        assert "truncated or corrupt" in _one_line(e.value)


def test_foreign_file(tmp_path):
    foreign = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)          # e.g. a Lightning/diffusers-style file
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(foreign)
    assert "not a diffusion checkpoint" in _one_line(e.value)
    torch.save(torch.zeros(3), foreign)                                  # not even a dict
    with pytest.raises(CheckpointError, match="not a diffusion checkpoint"):
        load_checkpoint(foreign)


class _RunsCode:
    """Unpickling this would call open(marker, "w"): weights_only loading must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "diffusion-ckpt", "version": 1, "step": 1, "model": _RunsCode(str(marker)), "config": ""}, evil)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(evil)
    assert "would run code (io.open)" in _one_line(e.value) and "weights_only" in str(e.value)
    assert not marker.exists()


def test_newer_version_and_incomplete(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "diffusion-ckpt", "version": 99, "step": 1, "model": {}, "config": ""}, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)
    torch.save({"format": "diffusion-ckpt", "version": 1, "model": {}}, path)
    with pytest.raises(CheckpointError, match="lacks step, config"):
        load_checkpoint(path)


def test_checkpoints_get_the_permissions_of_other_files(tmp_path):
    """One atomic write (diffusion.utils.write_atomic) for checkpoints and sample files: 0666 less the umask,
    like a file opened for writing (mkstemp alone would give 0600)."""
    from diffusion.runs.store import save_npz
    from diffusion.utils import write_atomic

    umask = os.umask(0)
    os.umask(umask)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    ckpt = save_checkpoint(checkpoint_path(tmp_path, 1), _state(1))
    npz = save_npz(tmp_path / "samples.npz", torch.zeros(1, 2, 2, 1, dtype=torch.uint8).numpy())
    other = write_atomic(tmp_path / "sub" / "notes.txt", lambda f: f.write(b"hello"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in (plain, ckpt, npz, other)}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert other.read_bytes() == b"hello" and not list((tmp_path / "sub").glob(".*.tmp"))
