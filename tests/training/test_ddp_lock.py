"""A torchrun job meeting a run folder another process writes (issue 29): every rank is refused with the same one
line (rank 0 asked for the lock, the others learned its answer), and no rank trains."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import TINY, REPO, run_train, subprocess_env


@pytest.mark.slow
def test_torchrun_job_refused_on_a_held_run_folder(tmp_path):
    code = ("import sys, time; from diffusion.runlock import hold; hold(sys.argv[1], 'train.py'); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], env=subprocess_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        proc = run_train(*TINY, "trainer.sample_every=0", "hydra.run.dir=run", cwd=tmp_path, launcher=launcher,
                         timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    refusal = (f"train.py: error: {tmp_path / 'run'} is being written by train.py (PID {holder.pid} on host ")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(refusal)]
    # every rank says it (the first to exit ends the job: torchrun stops the other, which may not get to print)
    assert 1 <= len(lines) <= 2 and len(set(lines)) == 1, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
