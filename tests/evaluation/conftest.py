"""Shared fixtures: a per-session cache, the shipped digit classifier, tiny trained runs, and a way
to call sample.py / evaluate.py in-process (as the command line would) or as real subprocesses."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def digit_cache(tmp_path_factory):
    """$DIFFUSION_CACHE of this session (computed reference statistics, converted weights)."""
    path = tmp_path_factory.getbasetemp() / "diffusion_cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def digits():
    """The shipped digit classifier and reference statistics."""
    from diffusion.evaluation.digit_features import load_digit_features

    return load_digit_features()


@pytest.fixture(scope="session")
def config_args(tmp_path_factory) -> list[str]:
    """Hydra arguments that make every registered sampler selectable: configs/sampler/<name>.yaml where present,
    else a stand-in that extends the sampler's generated schema (the sampler configs are maintained with the
    samplers)."""
    from diffusion.samplers import SAMPLERS

    missing = [n for n in SAMPLERS if not (ROOT / "configs" / "sampler" / f"{n}.yaml").is_file()]
    if not missing:
        return []
    folder = tmp_path_factory.mktemp("standin_configs")
    (folder / "sampler").mkdir()
    for name in missing:
        (folder / "sampler" / f"{name}.yaml").write_text(
            f"defaults:\n  - /schema/sampler/{name}@_here_\n  - _self_\nsteps: 10\n")
    return [f"hydra.searchpath=[file://{folder}]"]


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _train(run_dir: Path, process: str, config_args: list[str], *extra: str) -> Path:
    """A unet_tiny model trained for 2 steps with train.py (seconds)."""
    if not list((run_dir / "checkpoints").glob("ckpt_*.pt")):
        cmd = [sys.executable, str(ROOT / "train.py"), *config_args, "model=unet_tiny", "trainer=smoke",
               f"process={process}", "trainer.max_steps=2", "trainer.ckpt_every=2", "trainer.sample_every=0",
               "trainer.progress=false", f"hydra.run.dir={run_dir}", *extra]
        done = subprocess.run(cmd, cwd=run_dir.parent, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def ddpm_run(tmp_path_factory, config_args) -> Path:
    return _train(tmp_path_factory.getbasetemp() / "run_ddpm", "ddpm", config_args)


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory, config_args) -> Path:
    return _train(tmp_path_factory.getbasetemp() / "run_conditional", "ddpm", config_args, "model.num_classes=10")


@pytest.fixture(scope="session")
def vp_run(tmp_path_factory, config_args) -> Path:
    return _train(tmp_path_factory.getbasetemp() / "run_vpsde", "vpsde", config_args)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Hydra finds configs/ next to the script file only for a task defined in __main__ (as under `python
    # sample.py`); for any other module name it would look for a Python package called configs
    module.hydra_main.__wrapped__.__module__ = "__main__"
    return module


class CLI:
    """``cli("sample", "ckpt=...", ...)`` runs ``python sample.py ...`` in this process: (exit code, stdout, stderr)."""

    def __init__(self, capsys, monkeypatch, config_args, digit_cache):
        self.capsys, self.monkeypatch, self.config_args = capsys, monkeypatch, config_args
        monkeypatch.setenv("DIFFUSION_CACHE", str(digit_cache))
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        self.modules = {}

    def __call__(self, script: str, *args: str) -> tuple[int, str, str]:
        module = self.modules.get(script) or self.modules.setdefault(script, _load_script(script))
        self.monkeypatch.setattr(sys, "argv", [f"{script}.py", *self.config_args, "progress=false", *args])
        self.capsys.readouterr()
        code = module.main()
        out, err = self.capsys.readouterr()
        return code, out, err

    def subprocess(self, script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / f"{script}.py"), *self.config_args, "progress=false", *args]
        env = _env(DIFFUSION_CACHE=os.environ["DIFFUSION_CACHE"])
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli(capsys, monkeypatch, config_args, digit_cache) -> CLI:
    return CLI(capsys, monkeypatch, config_args, digit_cache)


class MakesFile:
    """A pickle whose loading would create a file: proof, by the file's absence, that no code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="session")
def bad_checkpoints(tmp_path_factory, ddpm_run) -> dict[str, Path]:
    """Files that must be refused with one line: missing, truncated, corrupt, foreign, code-running pickle."""
    folder = tmp_path_factory.mktemp("bad_ckpts")
    good = sorted((ddpm_run / "checkpoints").glob("ckpt_*.pt"))[-1].read_bytes()
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    (folder / "corrupt.pt").write_bytes(bytes(range(256)) * 16)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, folder / "foreign.pt")
    torch.save({"format": "diffusion-ckpt", "version": 1, "step": 1, "model": MakesFile(folder / "MARKER"),
                "config": "model: {}\nprocess: {}\n"}, folder / "pickle.pt")
    return {"missing": folder / "missing.pt", "truncated": folder / "truncated.pt", "corrupt": folder / "corrupt.pt",
            "foreign": folder / "foreign.pt", "pickle": folder / "pickle.pt", "marker": folder / "MARKER"}
