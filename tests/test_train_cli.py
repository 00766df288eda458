"""train.py end to end in subprocesses (the tiny U-Net, a few steps, one thread each): the run folder and
the printed commands, one-line config errors, SIGTERM saving a checkpoint, resume, and a -m sweep."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion.training.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# one thread (the machine is shared), the tiny U-Net, trainer=smoke: 4 steps of batch 8
TINY = ["model=unet_tiny", "trainer=smoke", "trainer.progress=false", "sampler.steps=2"]


def subprocess_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


def test_run_folder_and_printed_commands(tmp_path):
    proc = run_train(*TINY, cwd=tmp_path)                 # default hydra.run.dir: runs/<time stamp>
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run.name)
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]            # trainer=smoke: ckpt_every=2, max_steps=4
    assert (run / "samples" / "step_4.png").stat().st_size > 0
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / ".hydra" / "overrides.yaml").exists()
    saved = (run / "config.yaml").read_text()
    assert "_target_: diffusion.nn.UNet" in saved and "precision: fp32" in saved
    # the default formulation (rectified flow, loss and prediction auto) is saved as what trained
    assert "_target_: diffusion.losses.FlowMatching" in saved and "\nprediction: velocity\n" in saved
    state = torch.load(run / "checkpoints" / "ckpt_4.pt", weights_only=True)
    assert state["config"] == saved and state["step"] == 4
    where = f"runs/{run.name}"
    assert f"Run folder:  {where}" in proc.stdout
    assert f"python sample.py ckpt={where} sampler=dpmpp_2m\n" in proc.stdout
    assert f"python evaluate.py ckpt={where} task=likelihood" in proc.stdout


@pytest.mark.parametrize("override, says", [
    ("trainer.lr=abc", "trainer.lr=abc"),
    pytest.param("trainer.nope=1", "'nope' not in 'TrainerConfig'", marks=pytest.mark.slow),
    ("lr=1e-3", "Key 'lr' not in 'TrainConfig' (did you mean trainer.lr?)"),   # a schema section's key
    ("process=foo", "available: ddpm, edm, rectified_flow, subvpsde, vesde, vpsde"),
    pytest.param("sampler=fewstep", "timesteps=fitted (a grid fitted to the run) is resolved by sample.py's task=sample alone",
                 marks=pytest.mark.slow),
    pytest.param("sampler=ipndm sampler.coefficients=fitted",
                 "coefficients=fitted (iPNDM weights fitted to the run) is resolved", marks=pytest.mark.slow),
    ("sampler=unipc sampler.order=7", "order must be 1, 2 or 3, got 7"),  # the grids' sampler, before step 1
])
def test_config_errors_are_one_line(tmp_path, override, says):
    proc = run_train(*TINY, *override.split(), cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error: ") and says in lines[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))


def test_sigterm_saves_a_checkpoint_then_resume_continues(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=100000", "trainer.ckpt_every=3", "trainer.keep_last=0",
            "trainer.sample_every=0", f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoints" / "ckpt_3.pt").exists():          # the loop is running
            assert proc.poll() is None and time.monotonic() < deadline, "train.py did not reach step 3"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    stopped = re.search(r"Stopped \(SIGTERM\) at step (\d+) and saved (\S+)\.", out)
    assert stopped, out
    step = int(stopped.group(1))
    assert step >= 3 and load_checkpoint(run)["step"] == step
    assert "python train.py resume=true hydra.run.dir=run\n" in out                # relative to the working dir

    resumed = run_train(*TINY, "resume=true", f"trainer.max_steps={step + 2}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {step}" in resumed.stdout + resumed.stderr
    assert load_checkpoint(run)["step"] == step + 2
    changed = run_train(*TINY, "resume=true", "process=vpsde", f"hydra.run.dir={run}", cwd=tmp_path)
    assert changed.returncode == 2 and "changes process" in changed.stderr


@pytest.mark.slow
def test_multirun_sweep_gives_each_job_a_folder(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "trainer.max_steps=2", "trainer.sample_every=0", "process=ddpm,vpsde",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job, target in (("0", "DDPM"), ("1", "VPSDE")):
        assert f"_target_: diffusion.processes.{target}" in (sweep / job / "config.yaml").read_text()
        assert load_checkpoint(sweep / job)["step"] == 2
