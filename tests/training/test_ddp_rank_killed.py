"""A rank killed mid-run under torchrun (issue 29): the whole job exits within a bounded time instead of leaving the
other rank waiting; the checkpoints on disk stay complete, and resume=true continues from the newest."""
from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from diffusion.training.checkpoint import list_checkpoints, load_checkpoint

from .helpers import TINY, REPO, run_train, subprocess_env

#: how long the job may take to notice and end: torchrun's monitor, gloo's broken connection, then its SIGTERM
#: and (past 30 s of grace) SIGKILL of the ranks left
BOUND_S = 60


def _ranks(tag: str) -> dict[int, int]:
    """rank -> PID of the train.py processes whose environment carries ``tag`` (torchrun sets RANK for each)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
        except OSError:
            continue
        if env.get("FAULTS_TEST_TAG") == tag and "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
@pytest.mark.parametrize("victim", [1, 0])  # rank 0 also holds the run folder's lock: it must not outlive it
def test_a_killed_rank_ends_the_job_and_resume_continues(tmp_path, victim):
    import subprocess

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    tag = uuid.uuid4().hex
    env = {**subprocess_env(), "FAULTS_TEST_TAG": tag}
    cmd = launcher + [str(REPO / "train.py"), *TINY, "trainer.sample_every=0", "trainer.max_steps=100000",
                      "trainer.ckpt_every=2", "trainer.keep_last=3", "hydra.run.dir=run"]
    job = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(list_checkpoints(tmp_path / "run")) < 2:
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
            time.sleep(0.5)
        ranks = _ranks(tag)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[victim], signal.SIGKILL)
        killed = time.monotonic()
        job.wait(timeout=BOUND_S)
        took = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
        out, err = job.communicate()
        for pid in _ranks(tag).values():  # nothing may be left behind
            os.kill(pid, signal.SIGKILL)
    assert job.returncode != 0, err[-3000:]
    assert took < BOUND_S
    assert not _ranks(tag)
    found = list_checkpoints(tmp_path / "run")
    for _, path in found:
        assert load_checkpoint(path)["step"] == int(path.stem.split("_")[1])  # every file on disk is complete
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    step = found[-1][0]
    resumed = run_train(*TINY, "trainer.sample_every=0", f"trainer.max_steps={step + 2}", "trainer.ckpt_every=2",
                        "hydra.run.dir=run", "resume=true", cwd=tmp_path, launcher=launcher, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stdout + resumed.stderr
    assert list_checkpoints(tmp_path / "run")[-1][0] == step + 2
    print(f"job ended {took:.1f} s after rank {victim} was killed")
