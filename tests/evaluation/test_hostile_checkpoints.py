"""Checkpoints whose saved config would run code (issue: a checkpoint must not run anything).

Each hostile file loads cleanly with ``torch.load(weights_only=True)``: only its YAML config is hostile. Every
entry point that takes a checkpoint must refuse it with one line and exit code 2 before anything is built, so no
file is created or changed anywhere. ``trust_checkpoint_config=true`` is the user's explicit way around that; the
control case proves the payload really acts when trusted, so the tests would see it if it ran.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffusion.errors import UntrustedConfigError
from diffusion.runs import load_model

ROOT = Path(__file__).resolve().parents[2]


def _path(file: Path) -> dict:
    return {"_target_": "pathlib.Path", "_args_": [str(file)]}


def payloads(victim: Path, marker: Path) -> dict[str, tuple[str, object]]:
    """name -> (the config key it replaces, the hostile value); each would touch ``marker`` or rewrite ``victim``."""
    touch = {"_target_": "pathlib.Path.touch", "self": _path(marker)}
    return {
        "write_text": ("process", {"_target_": "pathlib.Path.write_text", "self": _path(victim), "data": "pwned"}),
        "touch": ("process", touch),
        "partial": ("process", {"_target_": "functools.partial", "_args_": [
            {"_target_": "hydra.utils.get_method", "path": "pathlib.Path.touch"}, _path(marker)]}),
        "_partial_": ("loss", {"_target_": "pathlib.Path.touch", "_partial_": True, "self": _path(marker)}),
        "getattr": ("process", {"_target_": "operator.methodcaller", "_args_": ["touch"], "_partial_": False,
                                "unused": {"_target_": "builtins.getattr", "_args_": [_path(marker), "touch"]}}),
        "model_kwarg": ("model.norm_groups", touch),  # nested in the model's keyword arguments: built first
        "oc_env": ("data.root", "${oc.env:HOME}"),
    }


def _hostile(good: Path, key: str, value: object, out: Path) -> Path:
    state = torch.load(good, weights_only=True)
    cfg = yaml.safe_load(state["config"])
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    state["config"] = yaml.safe_dump(cfg)
    (out / "checkpoints").mkdir(parents=True)
    torch.save(state, out / "checkpoints" / "ckpt_2.pt")
    torch.load(out / "checkpoints" / "ckpt_2.pt", weights_only=True)  # the weights themselves are harmless
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, ddpm_run):
    """name -> run folder holding one hostile checkpoint; plus the victim file and the marker path."""
    folder = tmp_path_factory.mktemp("hostile")
    victim, marker = folder / "victim.txt", folder / "MARKER"
    victim.write_text("original")
    good = sorted((ddpm_run / "checkpoints").glob("ckpt_*.pt"))[-1]
    runs = {name: _hostile(good, key, value, folder / name) for name, (key, value) in payloads(victim, marker).items()}
    return runs, victim, marker


def _untouched(victim: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert victim.read_text() == "original", "the payload ran"


def _one_line(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


NAMES = list(payloads(Path("v"), Path("m")))
ENTRY_POINTS = {
    "sample": ("sample", ["n=2", "sampler.steps=1"]),
    "likelihood": ("evaluate", ["task=likelihood", "n=1"]),
    "sweep": ("evaluate", ["task=sweep", "n=2", "sweep.steps=[1]"]),
    "fid": ("evaluate", ["task=fid"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", NAMES)
def test_sample_and_evaluate_refuse(cli, hostile, tmp_path, name, entry):
    runs, victim, marker = hostile
    script, args = ENTRY_POINTS[entry]
    if entry == "fid":
        samples = tmp_path / "samples.npz"
        import numpy as np

        np.savez(samples, np.zeros((2, 28, 28, 1), dtype=np.uint8))
        args = [*args, f"samples={samples}"]
    code, _, stderr = cli(script, f"ckpt={runs[name]}", f"out={tmp_path / 'out'}", *args)
    line = _one_line(stderr, f"{script}.py")
    assert code == 2
    assert "nothing was built" in line and "trust_checkpoint_config=true" in line
    key, value = payloads(victim, marker)[name]
    assert (f"_target_={value['_target_']!r}" if isinstance(value, dict) else "interpolation") in line
    _untouched(victim, marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", NAMES)
def test_load_model_refuses(hostile, name):
    runs, victim, marker = hostile
    with pytest.raises(UntrustedConfigError) as info:
        load_model(runs[name])
    assert "\n" not in str(info.value)
    _untouched(victim, marker)


def _resume(run: Path, *extra: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, str(ROOT / "train.py"), "model=unet_tiny", "trainer=smoke", "trainer.progress=false",
           "resume=true", f"hydra.run.dir={run}", *extra]
    return subprocess.run(cmd, cwd=run.parent, env=env, capture_output=True, text=True, timeout=120)


# each is a train.py subprocess (~5 s): one case runs by default (the check is config_from_checkpoint's, which
# test_load_model_refuses covers for every payload), all of them under -m slow
@pytest.mark.parametrize("name", [n if n == "touch" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in NAMES])
def test_train_resume_refuses(hostile, name):
    runs, victim, marker = hostile
    done = _resume(runs[name])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "nothing was built" in _one_line(done.stderr, "train.py")
    _untouched(victim, marker)


def test_trusting_the_checkpoint_runs_its_config(cli, hostile, tmp_path):
    """The control: trusted, the same file does what it says, so the refusals above are what kept the marker away."""
    runs, victim, marker = hostile
    code, _, stderr = cli("sample", f"ckpt={runs['touch']}", "trust_checkpoint_config=true", "n=1",
                          f"out={tmp_path / 'out'}")
    assert marker.exists()
    marker.unlink()
    assert code == 2 and "not a Process" in stderr  # it built a file, not a process
