"""One writer per folder (issue 29, fault 2): a second process is refused in one line naming the holder's PID and
host; the lock dies with its process (kill -9 included), so a resume is never blocked by a stale lock."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffusion.runlock import FolderBusyError, hold, lock_scope, release

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder`` (and a forked child of it, as a DataLoader worker would be)."""
    code = ("import os, sys, time; from diffusion.runlock import hold; hold(sys.argv[1], 'holder.py'); "
            "child = os.fork(); time.sleep(600) if child == 0 else None; print(child, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=_env(), stdout=subprocess.PIPE, text=True)
    proc.child = int(proc.stdout.readline())
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_kill_9_frees_the_folder(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(FolderBusyError) as caught:
            hold(tmp_path / "run", "train.py", fix="pass another hydra.run.dir")
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{tmp_path / 'run'} is being written by holder.py (PID {proc.pid} on host "
                                  f"{socket.gethostname()}, since ")
        assert message.endswith("wait for that process to end (or stop it); or pass another hydra.run.dir")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        with lock_scope():
            hold(tmp_path / "run", "train.py")  # at once, while the holder's forked child still lives: no stale lock
    finally:
        os.kill(proc.child, signal.SIGKILL)


def test_one_process_may_hold_a_folder_twice_and_a_scope_releases_it(tmp_path):
    with lock_scope():
        hold(tmp_path, "a")
        hold(tmp_path, "b")      # the same process is the same writer
        release(tmp_path)
    # released: another process can take it now
    code = "import sys; from diffusion.runlock import hold; hold(sys.argv[1], 'x'); print('ok')"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=_env(), capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def _train(*args: str, cwd: Path, wait: bool = True):
    cmd = [sys.executable, str(REPO / "train.py"), "model=unet_tiny", "trainer=smoke", "trainer.progress=false",
           "sampler.steps=2", "trainer.sample_every=0", "hydra.run.dir=run", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_trainers_on_one_run_folder(tmp_path):
    """While one train.py writes runs/x, a second (fresh) and a third (resume=true) are refused in one line; after
    the first is killed with SIGKILL, resume=true continues from its last checkpoint."""
    first = _train("trainer.max_steps=100000", "trainer.ckpt_every=2", "trainer.keep_last=2", cwd=tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "run" / "checkpoints").glob("ckpt_*.pt")):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.5)
        for extra in ([], ["resume=true"]):
            second = _train("trainer.max_steps=4", *extra, cwd=tmp_path)
            assert second.returncode == 2, second.stderr[-2000:]
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith(f"train.py: error: {tmp_path / 'run'} is being written by train.py (PID {first.pid} "
                                   f"on host {socket.gethostname()}, since "), last
            assert last.endswith("or pass another hydra.run.dir than run"), last
            assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.communicate()
    from diffusion.training.checkpoint import list_checkpoints, load_checkpoint

    step = list_checkpoints(tmp_path / "run")[-1][0]
    load_checkpoint(tmp_path / "run")  # the checkpoints the killed run left are complete
    resumed = _train("resume=true", f"trainer.max_steps={step + 2}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {tmp_path / 'run' / 'checkpoints' / f'ckpt_{step}.pt'} at step {step}" in resumed.stdout + resumed.stderr
    assert list_checkpoints(tmp_path / "run")[-1][0] == step + 2
