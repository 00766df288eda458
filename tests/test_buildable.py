"""diffusion.buildable: the allowlist of what a config read from a file may build."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffusion.buildable import allowed_targets, buildable, check_config
from diffusion.errors import UntrustedConfigError
from diffusion.processes import Process

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("group", ["process", "model", "loss", "data"])
def test_every_shipped_config_is_buildable(group):
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        check_config(OmegaConf.load(path), str(path))  # raises if one names a target outside the list


def test_public_and_defining_paths_are_both_allowed():
    names = allowed_targets()
    assert {"diffusion.processes.DDPM", "diffusion.processes.ddpm.DDPM", "diffusion.nn.UNet",
            "diffusion.losses.EpsMSE", "diffusion.data.MNIST5k"} <= names
    assert not any(name.startswith(("builtins.", "os.", "pathlib.", "functools.", "operator.")) for name in names)
    # the project's own functions that touch files are not on the list either
    assert "diffusion.training.checkpoint.save_checkpoint" not in names


@pytest.mark.parametrize("cfg, where", [
    ({"process": {"_target_": "os.system", "_args_": ["true"]}}, "process._target_='os.system'"),
    ({"model": {"_target_": "diffusion.nn.UNet", "x": [1, {"_target_": "pathlib.Path"}]}}, "model.x[1]._target_"),
    ({"a": {"_args_": [{"_target_": "builtins.exec"}]}}, "a._args_[0]._target_='builtins.exec'"),
    ({"loss": {"_target_": "diffusion.training.checkpoint.save_checkpoint", "_partial_": True}}, "loss._target_"),
    ({"process": {"_target_": 3}}, "process._target_=3"),
    ({"data": {"root": "${oc.env:HOME}"}}, "interpolation at data.root"),
    ({"data": {"root": "x/${other}"}}, "interpolation at data.root"),
])
def test_hostile_configs_are_one_line_errors(cfg, where):
    with pytest.raises(UntrustedConfigError) as info:
        check_config(OmegaConf.create(cfg), "ckpt.pt")
    message = str(info.value)
    assert "\n" not in message and message.startswith("ckpt.pt: ") and where in message
    assert "trust_checkpoint_config=true" in message


def test_a_new_process_registers_itself_and_functions_by_decorator():
    class Throwaway(Process):  # defined here: allowed by virtue of subclassing Process
        def log_alpha(self, t): return t * 0
        def sigma2(self, t): return t
        def f_coef(self, t): return t * 0
        def g2(self, t): return t * 0 + 1

    assert f"{Throwaway.__module__}.{Throwaway.__qualname__}" in allowed_targets()

    @buildable
    def make_thing():
        return 1

    check_config(OmegaConf.create({"x": {"_target_": f"{make_thing.__module__}.{make_thing.__qualname__}"}}), "f")
