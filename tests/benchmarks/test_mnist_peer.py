"""benchmarks/mnist_peer.py end to end at toy sizes: a 4-step unet_tiny run beside the peer trained for 3 seconds,
16 samples each, scored and recorded. The peer is not a dependency: the test skips where it is not installed
(``pip install --no-deps --target ../peers/ddp denoising-diffusion-pytorch ema-pytorch accelerate``). Slow: about a
minute on 2 cores."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEER = Path(os.environ.get("DDP_PEER_PATH", REPO.parent / "peers" / "ddp"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (PEER / "denoising_diffusion_pytorch").is_dir(),
                                 reason=f"denoising-diffusion-pytorch is not installed at {PEER} (DDP_PEER_PATH)")]


def test_the_default_run_and_the_peer_are_scored_side_by_side(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    run = tmp_path / "run"
    train = [sys.executable, str(REPO / "train.py"), "model=unet_tiny", "trainer=smoke", "trainer.progress=false",
             f"hydra.run.dir={run}"]
    assert subprocess.run(train, cwd=tmp_path, env=env, capture_output=True).returncode == 0
    bench = [sys.executable, str(REPO / "benchmarks" / "mnist_peer.py"), "--run", str(run), "--seconds", "3",
             "--samples", "16", "--peer-steps", "4", "--peer-path", str(PEER), "--out", str(tmp_path / "out")]
    proc = subprocess.run(bench, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (table,) = (tmp_path / "out").glob("*/table.md")
    rows = table.read_text().splitlines()
    ours, peer, floor = rows[2], rows[3], rows[4]
    assert ours.startswith("| ours (RectifiedFlow, UNet)") and "| 4 |" in ours  # the smoke run's 4 steps
    assert peer.startswith("| peer (GaussianDiffusion") and "DDIM 4 steps" in peer
    for row in (ours, peer):
        fd = float(row.split("|")[-3])
        assert fd > float(floor.split("|")[-3]) > 0  # four steps of training do not draw digits
    lone = subprocess.run([*bench[:2], "--run", str(run)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert lone.returncode != 0 and "--run and --seconds go together" in lone.stderr
