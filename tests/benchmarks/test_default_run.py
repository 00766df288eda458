"""benchmarks/default_run.py end to end on a few steps of the tiny U-Net: it runs train.py, scores the digits and
prints the record's table (machine, precision, steps and why they stopped, wall time, digit FD beside its floor)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_run_benchmark_prints_its_record(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "default_run.py"), "model=unet_tiny",
                           "trainer=smoke", "trainer.bpd_every=4", "trainer.bpd_t_samples=2", "trainer.bpd_count=2",
                           "--samples", "16", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "### `python train.py model=unet_tiny trainer=smoke" in table and " cores, " in table
    assert "| precision (chosen by `precision=auto` unless set) | fp32 |" in table
    assert "| steps done | 4 (stopped by max_steps=4) |" in table
    assert "digit FD, dpmpp_2m 10 NFE, 16 samples |" in table and "real-vs-real floor at the same n:" in table
    assert "| bits/dim (end of run, held-out digits) | n/a |" not in table     # bits/dim was logged and read back
    assert "![final grid](" in table
