"""Rebuilding a trained model from a checkpoint's saved config (what sample.py and evaluate.py use), and
the config of a resumed run."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from diffusion.parameterization import EpsModel
from diffusion.processes import VPSDE
from diffusion.runs import load_model
from diffusion.training import CheckpointError, ConfigError, Trainer, load_checkpoint

from .helpers import tiny_cfg, tiny_images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    Trainer(tiny_cfg("process=vpsde", "loss=dsm", "trainer.max_steps=2"), path, tiny_images()).fit()
    return path


def test_load_model_rebuilds_process_network_and_ema(run_dir):
    state = load_checkpoint(run_dir)
    model, process, cfg = load_model(run_dir)
    assert isinstance(model, EpsModel) and isinstance(process, VPSDE) and not model.training
    assert cfg.process._target_ == "diffusion.processes.VPSDE" and cfg.trainer.precision == "fp32"
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, state["ema"][name])
    raw, _, _ = load_model(run_dir / "checkpoints" / "ckpt_2.pt", use_ema=False)
    for name, value in raw.net.state_dict().items():
        assert torch.equal(value, state["model"][name])
    x = torch.randn(2, 1, 8, 8)
    assert model(x, torch.full((2,), 0.5)).shape == x.shape


def test_load_model_errors(run_dir, tmp_path):
    state = load_checkpoint(run_dir)
    del state["path"]
    state["ema"] = {}
    torch.save(state, tmp_path / "no_ema.pt")
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_model(tmp_path / "no_ema.pt")
    state["model"] = {"nope": torch.zeros(1)}
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load_model(tmp_path / "mismatch.pt", use_ema=False)


def test_resume_config_takes_trainer_overrides_and_refuses_model_changes():
    from diffusion.training import setup as train_cli

    saved = OmegaConf.create(OmegaConf.to_yaml(tiny_cfg("trainer.lr=1e-3", "trainer.precision=fp32"), resolve=True))
    composed = tiny_cfg("trainer.max_steps=50", "resume=true")
    cfg = train_cli.resume_config(saved, composed, ["trainer.max_steps=50", "resume=true", "model=unet_tiny"])
    assert cfg.trainer.max_steps == 50 and cfg.trainer.lr == 1e-3 and cfg.resume
    assert str(cfg.trainer.precision.value) == "fp32"                  # the run's resolved precision stays
    with pytest.raises(ConfigError, match="changes process"):
        train_cli.resume_config(saved, tiny_cfg("process=vesde"), ["process=vesde"])
    with pytest.raises(ConfigError, match="changes model"):
        train_cli.resume_config(saved, tiny_cfg("model.base_channels=32"), ["model.base_channels=32"])
