"""Every config group option and recipe composes against the typed schema and builds its objects."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from omegaconf import OmegaConf

from diffusion.training.build import build_loss, build_process, resolve_formulation
from diffusion.training.errors import ConfigError

from .helpers import REPO, compose_train


def test_default_run_settings():
    cfg = compose_train()
    assert cfg.model._target_ == "diffusion.nn.UNet" and cfg.model.image_size == 28
    assert cfg.process._target_ == "diffusion.processes.RectifiedFlow" and cfg.data._target_ == "diffusion.data.MNIST5k"
    assert (cfg.loss._target_, cfg.prediction) == ("diffusion.losses.default_loss", "auto")
    assert cfg.sampler.name == "dpmpp_2m" and cfg.sampler.steps == 20
    t = cfg.trainer
    assert (t.max_steps, t.max_minutes, t.batch_size, t.lr) == (1200, 9, 64, 1e-3)
    assert t.lr_schedule._target_ == "diffusion.training.optim.warmup_cosine" and t.fit_budget


# process -> (loss, prediction) that ``loss: auto`` and ``prediction: auto`` become
NATURAL = {"ddpm": ("EpsMSE", "eps"), "vpsde": ("EpsMSE", "eps"), "subvpsde": ("EpsMSE", "eps"),
           "vesde": ("EpsMSE", "eps"), "edm": ("EDMLoss", "edm"), "rectified_flow": ("FlowMatching", "velocity")}


@pytest.mark.parametrize("process", sorted(NATURAL))
def test_auto_loss_and_prediction_follow_the_process(process):
    """loss=auto, prediction=auto (the defaults) become the process's own loss and that loss's prediction, written
    into the config (what config.yaml and checkpoints save); explicit choices stay as given."""
    cfg = compose_train(f"process={process}")
    resolve_formulation(cfg)
    loss, prediction = NATURAL[process]
    assert (cfg.loss._target_, cfg.prediction) == (f"diffusion.losses.{loss}", prediction)
    assert "default_loss" not in OmegaConf.to_yaml(cfg.loss)
    assert type(instantiate(compose_train(f"process={process}").loss)(build_process(cfg))).__name__ == loss
    explicit = compose_train(f"process={process}", "loss=dsm", "prediction=x0")
    resolve_formulation(explicit)
    assert (explicit.loss._target_, explicit.prediction) == ("diffusion.losses.DSM", "x0")
    chosen = compose_train(f"process={process}", "loss=flow_matching")       # auto prediction follows the loss
    resolve_formulation(chosen)
    assert chosen.prediction == "velocity"


@pytest.mark.parametrize("process", sorted(p.stem for p in (REPO / "configs" / "process").glob("*.yaml")))
@pytest.mark.parametrize("loss", sorted(p.stem for p in (REPO / "configs" / "loss").glob("*.yaml")))
def test_every_process_and_loss_builds(process, loss):
    cfg = compose_train(f"process={process}", f"loss={loss}")
    built = build_process(cfg)
    assert built.name == process
    if loss in ("hybrid", "vlb") and process != "ddpm":                # the discrete bound needs DDPM
        with pytest.raises(ConfigError, match="cannot train on"):
            build_loss(cfg, built)
        return
    assert callable(build_loss(cfg, built))


RECIPES = {
    # Ho et al. 2020, CIFAR-10
    "ddpm_cifar10": dict(process="DDPM", model_dropout=0.1, batch=128, lr=2e-4, warmup=5000, ema=0.9999, clip=1.0,
                         steps=800_000, flip=True, embedding="sinusoidal"),
    # Song et al. 2021, DDPM++ cont. (VP) and NCSN++ cont. (VE)
    "vp_cifar10": dict(process="VPSDE", model_dropout=0.1, batch=128, lr=2e-4, warmup=5000, ema=0.9999, clip=1.0,
                       steps=1_300_000, flip=True, embedding="sinusoidal"),
    "ve_cifar10": dict(process="VESDE", model_dropout=0.1, batch=128, lr=2e-4, warmup=5000, ema=0.999, clip=1.0,
                       steps=1_300_000, flip=True, embedding="fourier"),
    # Karras et al. 2022, EDM config F, unconditional CIFAR-10 (200M images at batch 512, no gradient clipping)
    "edm_cifar10": dict(process="EDM", model_dropout=0.13, batch=512, lr=1e-3, warmup=19531, ema=0.99929, clip=0.0,
                        steps=390_625, flip=True, embedding="fourier"),
    # Liu et al. 2022 on Song et al.'s DDPM++ settings
    "rectified_flow_cifar10": dict(process="RectifiedFlow", model_dropout=0.1, batch=128, lr=2e-4, warmup=5000,
                                   ema=0.9999, clip=1.0, steps=1_300_000, flip=True, embedding="sinusoidal"),
    "ddpm_mnist": dict(process="DDPM", model_dropout=0.1, batch=128, lr=2e-4, warmup=500, ema=0.9995, clip=1.0,
                       steps=20_000, flip=False, embedding="sinusoidal"),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes(name):
    want = RECIPES[name]
    cfg = compose_train(f"experiment={name}")
    t = cfg.trainer
    assert cfg.process._target_.endswith(want["process"])
    assert (t.batch_size, t.lr, t.warmup_steps, t.ema_decay, t.grad_clip, t.max_steps) == \
        (want["batch"], want["lr"], want["warmup"], want["ema"], want["clip"], want["steps"])
    assert t.max_minutes == 0                                   # only the default run has a time budget
    assert t.lr_schedule._target_ == "diffusion.training.optim.warmup_constant"   # the papers' constant lr
    assert cfg.model.dropout == want["model_dropout"] and cfg.model.embedding == want["embedding"]
    assert cfg.data.get("flip", False) == want["flip"]
    if name.startswith(("vp", "ve")):
        assert cfg.loss._target_ == "diffusion.losses.DSM" and cfg.loss.weighting == "sigma2"
    if name == "edm_cifar10":
        assert (cfg.prediction, cfg.loss._target_, cfg.sampler.name) == ("edm", "diffusion.losses.EDMLoss", "heun")
    if name == "rectified_flow_cifar10":
        assert (cfg.prediction, cfg.loss._target_) == ("velocity", "diffusion.losses.FlowMatching")
    with torch.device("meta"):                                  # checks the constructor arguments, allocates nothing
        net = instantiate(cfg.model)
    if "cifar" in name:
        assert sum(p.numel() for p in net.parameters()) > 35e6      # DDPM's 35.7M network and up
    build_loss(cfg, build_process(cfg))


def test_cifar10_cpu_recipe():
    """experiment=cifar10_cpu: the users' default data (torchvision CIFAR-10), a 30-minute budget fitted by
    fit_budget, precision chosen by timing (never forced bf16 on a CPU), rectified flow with logit-normal training
    times on a 2.86M U-Net."""
    cfg = compose_train("experiment=cifar10_cpu")
    t = cfg.trainer
    assert cfg.data._target_ == "diffusion.data.CIFAR10" and cfg.data.flip
    assert (t.max_minutes, t.fit_budget, t.precision.value) == (30, True, "auto")
    assert t.bpd_every == 0 and t.sample_every > 0                # the final grid, no bits/dim inside the budget
    resolve_formulation(cfg)
    assert (cfg.process._target_, cfg.prediction) == ("diffusion.processes.RectifiedFlow", "velocity")
    assert build_process(cfg).t_sampling == "logit_normal"
    net = instantiate(cfg.model)
    assert 2.8e6 < sum(p.numel() for p in net.parameters()) < 2.9e6
    assert net(torch.zeros(2, 3, 32, 32), torch.zeros(2)).shape == (2, 3, 32, 32)
    build_loss(cfg, build_process(cfg))
    shared = compose_train("experiment=cifar10_cpu", "data=npz", "data.path=x.npz")   # how the benchmark reaches the
    assert shared.data._target_ == "diffusion.data.NpzImages" and shared.trainer.max_minutes == 30  # shared images


@pytest.mark.parametrize("method", ["consistency", "reflow"])
def test_a_distillation_runs_ten_minutes_unless_a_trainer_option_says_otherwise(method):
    """distill=<method>: the issue's 10 minutes, the steps fitted to them (max_steps only a cap); trainer=smoke,
    listed after it, still makes a few-step run of it (the tests' and the benchmark's smoke mode)."""
    t = compose_train(f"distill={method}", "distill.teacher=runs/x").trainer
    assert (t.max_minutes, t.fit_budget) == (10, True) and t.max_steps >= 10_000
    t = compose_train(f"distill={method}", "distill.teacher=runs/x", "trainer=smoke").trainer
    assert (t.max_steps, t.max_minutes) == (4, 0)
