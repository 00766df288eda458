"""A checkpoint whose config describes far more than its weights (issue 29, fault 3): refused in one line before any
real allocation. The config's network is built on the meta device and compared shape by shape with the weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffusion.errors import CheckpointError
from diffusion.runs import load_model
from diffusion.training import build

ROOT = Path(__file__).resolve().parents[2]


def _doctored(good_run: Path, out: Path, **model: object) -> Path:
    good = sorted((good_run / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(good, weights_only=True)
    cfg = yaml.safe_load(state["config"])
    cfg["model"].update(model)
    state["config"] = yaml.safe_dump(cfg)
    (out / "checkpoints").mkdir(parents=True)
    torch.save(state, out / "checkpoints" / good.name)
    return out


@pytest.fixture(scope="module")
def oversized(tmp_path_factory, ddpm_run) -> Path:
    """unet_tiny's weights (16 base channels, ~0.7 MB) under a config that says 40,000 (~4.4 TB)."""
    return _doctored(ddpm_run, tmp_path_factory.mktemp("oversized") / "run", base_channels=40_000)


def test_refused_before_the_network_is_built(oversized, monkeypatch):
    """The real construction (build_from_config) is never reached: the shapes were compared on the meta device."""
    def never(cfg):
        raise AssertionError("the network was built for real")

    monkeypatch.setattr(build, "build_from_config", never)
    with pytest.raises(CheckpointError) as caught:
        load_model(oversized)
    message = str(caught.value)
    assert "\n" not in message
    ckpt = sorted((oversized / "checkpoints").glob("*.pt"))[-1]
    assert message.startswith(f"{ckpt}: its model weights do not fit the network its config describes "
                              "(emb_mlp.0.weight is 160000x40000 in the config's network but 64x16 in the file, and ")
    assert "the config's network needs 4.4 TB, the file carries " in message
    assert message.endswith("nothing was built: use the checkpoint as train.py wrote it")


def test_a_missing_or_extra_tensor_is_refused_too(ddpm_run, tmp_path):
    run = _doctored(ddpm_run, tmp_path / "run", num_res_blocks=2)
    with pytest.raises(CheckpointError, match=r"weights do not fit the network its config describes"):
        load_model(run)
    run = _doctored(ddpm_run, tmp_path / "run2", resblock_updown=True)
    with pytest.raises(CheckpointError, match=r"weights do not fit the network its config describes"):
        load_model(run)


def test_the_genuine_checkpoint_still_loads(ddpm_run):
    model, _, _ = load_model(ddpm_run)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow  # a sample.py subprocess
def test_sample_py_refuses_it_under_a_memory_limit(oversized, tmp_path):
    """sample.py in a process whose address space may grow by 1.5 GB only: a single real allocation of the config's
    network would fail there (with a traceback), so the one-line refusal proves nothing was allocated first."""
    script = (
        "import resource, sys, runpy\n"
        "import torch, diffusion.runs, diffusion.evaluation.schedule\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 29), resource.RLIM_INFINITY))\n"
        f"sys.argv = ['sample.py', 'ckpt={oversized}', 'n=2', 'sampler.steps=2', 'progress=false', 'out={tmp_path / 'out'}']\n"
        f"runpy.run_path({str(ROOT / 'sample.py')!r}, run_name='__main__')\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("sample.py: error: ") and "weights do not fit the network its config describes" in lines[0]
    assert not (tmp_path / "out").exists()
