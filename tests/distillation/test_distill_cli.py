"""train.py distill=consistency|reflow end to end (the tiny U-Net, a few steps, one thread): the student's run folder
names its teacher, starts from the teacher's weights, resumes bit for bit, and sample.py / evaluate.py read it.
Subprocesses cost seconds each, so these run with -m slow; test_setup.py runs the same path in-process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffusion.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# one thread (the machine is shared), the tiny U-Net, trainer=smoke: 4 steps of batch 8
TINY = ["model=unet_tiny", "trainer=smoke", "trainer.progress=false", "sampler.steps=2"]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, cwd=cwd)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Tiny teacher runs, 4 steps each, by process."""
    root = tmp_path_factory.mktemp("teachers")

    def teacher(process: str) -> Path:
        folder = root / process
        if not folder.exists():
            proc = run_train(*TINY, f"process={process}", f"hydra.run.dir={folder}", cwd=root)
            assert proc.returncode == 0, proc.stderr[-2000:]
        return folder

    return teacher


def distill(method: str, teacher: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_train(*TINY, f"distill={method}", f"distill.teacher={teacher}", f"hydra.run.dir={out}",
                     "trainer.bpd_every=0", *extra, cwd=out.parent)


def _same(a: dict, b: dict, key: str) -> None:
    assert a[key].keys() == b[key].keys(), key
    for name in a[key]:
        assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"


@pytest.mark.slow
def test_consistency_student_from_the_command_line(teachers, tmp_path):
    teacher = teachers("rectified_flow")
    proc = distill("consistency", teacher, tmp_path / "student")
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = OmegaConf.load(tmp_path / "student" / "config.yaml")
    teacher_cfg = OmegaConf.load(teacher / "config.yaml")
    assert saved.distill.method == "consistency" and saved.distill.teacher == str((teacher / "checkpoints" / "ckpt_4.pt").resolve())
    assert saved.model == teacher_cfg.model and saved.process == teacher_cfg.process and saved.data == teacher_cfg.data
    assert saved.sampler.name == "consistency"                      # the grids: 1-step consistency sampling
    assert (tmp_path / "student" / "samples" / "step_4.png").stat().st_size > 0
    state = load_checkpoint(tmp_path / "student")
    assert state["step"] == 4 and state["loss"]                       # the EMA target is in the checkpoint

    out = tmp_path / "samples"
    proc = run_script("sample.py", f"ckpt={tmp_path / 'student'}", "sampler=consistency", "sampler.steps=2", "n=4",
                      "batch_size=4", f"out={out}", "progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "samples.npz").exists()
    proc = run_script("evaluate.py", f"ckpt={tmp_path / 'student'}", "task=likelihood", "n=2", cwd=tmp_path)
    assert proc.returncode == 2 and "consistency model" in proc.stderr and "no ODE likelihood" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr        # one line


@pytest.mark.slow
def test_consistency_distillation_resumes_bit_exactly(teachers, tmp_path):
    """4 steps straight == 2 steps, then resume=true to 4: weights, EMA, optimizer, RNG and the EMA target."""
    teacher = teachers("rectified_flow")
    assert distill("consistency", teacher, tmp_path / "a", "trainer.max_steps=4").returncode == 0
    assert distill("consistency", teacher, tmp_path / "b", "trainer.max_steps=2").returncode == 0
    proc = run_train(*TINY, "resume=true", f"hydra.run.dir={tmp_path / 'b'}", "trainer.max_steps=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema", "loss"):
        _same(a, b, key)


@pytest.mark.slow
def test_the_student_starts_from_the_teacher(teachers, tmp_path):
    """With a zero learning rate the student's weights stay the teacher's (EMA) weights."""
    teacher = teachers("rectified_flow")
    proc = distill("consistency", teacher, tmp_path / "s", "trainer.lr=0", "trainer.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    student, original = load_checkpoint(tmp_path / "s"), load_checkpoint(teacher)
    for name, weight in original["ema"].items():
        assert torch.equal(student["model"][name], weight), name


@pytest.mark.slow
def test_reflow_from_the_command_line(teachers, tmp_path):
    teacher = teachers("rectified_flow")
    proc = distill("reflow", teacher, tmp_path / "r", "distill.pairs=16", "distill.pair_batch_size=8",
                   "distill.pair_sampler.steps=2", "distill.pair_sampler.timesteps=null")  # no fit: UniPC-3 fixed grid
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "r" / "couplings").iterdir()) == ["couplings_00000.npz",
                                                                               "couplings_00001.npz"]
    saved = OmegaConf.load(tmp_path / "r" / "config.yaml")
    assert saved.distill.method == "reflow" and saved.loss._target_ == "diffusion.losses.FlowMatching"
    proc = run_script("evaluate.py", f"ckpt={tmp_path / 'r'}", "task=likelihood", "n=2", "likelihood.bound=false",
                      "likelihood.rtol=1e-2", "likelihood.atol=1e-2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_reflow_refuses_a_teacher_of_another_process(teachers, tmp_path):
    proc = distill("reflow", teachers("ddpm"), tmp_path / "r", "distill.pairs=4")
    assert proc.returncode == 2 and "rectified flow" in proc.stderr and "distill=consistency" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("process", ["ddpm", "vpsde", "subvpsde", "vesde", "edm"])
def test_consistency_distillation_on_every_process(teachers, tmp_path, process):
    proc = distill("consistency", teachers(process), tmp_path / "s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_script("sample.py", f"ckpt={tmp_path / 's'}", "sampler=consistency", "sampler.steps=1", "n=2",
                      "batch_size=2", f"out={tmp_path / 'x'}", "progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
