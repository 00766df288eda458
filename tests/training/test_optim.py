"""The optimizer and learning-rate schedule as config targets: today's AdamW + warm-up by default, built with the
trainer's own values; warmup_cosine against its closed form."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.training.errors import ConfigError
from diffusion.training.loop import Trainer
from diffusion.training.optim import warmup_constant, warmup_cosine, warmup_lr

from .helpers import tiny_cfg, tiny_images


def test_warmup_constant_is_the_warmup_schedule():
    for k in range(8):
        assert warmup_constant(k, lr=1e-3, warmup_steps=4, max_steps=6) == warmup_lr(k, 1e-3, 4)
    assert [warmup_constant(k, lr=1.0, warmup_steps=4) for k in (0, 3, 100)] == [0.25, 1.0, 1.0]


def test_warmup_cosine_closed_form():
    lr, warm, steps, floor = 2e-3, 10, 110, 0.1
    at = [warmup_cosine(k, lr=lr, warmup_steps=warm, max_steps=steps, floor=floor) for k in range(steps)]
    assert at[:warm] == pytest.approx([lr * (k + 1) / warm for k in range(warm)], rel=1e-12)  # the warm-up
    assert at[warm - 1] == pytest.approx(lr)
    # p = (k + 1 - W) / (N - W): halfway at k = 59, lr (floor + (1 - floor) / 2); the last step at the floor
    assert at[59] == pytest.approx(lr * (floor + (1 - floor) / 2), rel=1e-12)
    assert at[-1] == pytest.approx(floor * lr, rel=1e-12)
    assert at[warm + 24] == pytest.approx(lr * (floor + (1 - floor) * (1 + math.cos(math.pi * 0.25)) / 2), rel=1e-12)
    assert all(a >= b for a, b in zip(at[warm - 1:], at[warm:]))                      # non-increasing after it
    assert warmup_cosine(500, lr=lr, warmup_steps=warm, max_steps=steps, floor=floor) == pytest.approx(floor * lr)
    # no steps after the warm-up: the warm-up alone; floor 0 decays to 0
    assert warmup_cosine(3, lr=lr, warmup_steps=8, max_steps=5) == pytest.approx(lr / 2)
    assert warmup_cosine(steps - 1, lr=lr, warmup_steps=0, max_steps=steps) == pytest.approx(0.0, abs=1e-18)
    with pytest.raises(ConfigError, match="floor"):
        warmup_cosine(0, lr=lr, warmup_steps=0, max_steps=10, floor=1.5)


def test_default_optimizer_takes_the_trainer_values(tmp_path):
    cfg = tiny_cfg("trainer.lr=3e-3", "trainer.adam_betas=[0.8,0.95]", "trainer.adam_eps=1e-6",
                   "trainer.weight_decay=0.01", "trainer.warmup_steps=4")
    assert cfg.trainer.optimizer._target_ == "diffusion.training.optim.adamw"
    assert cfg.trainer.lr_schedule._target_ == "diffusion.training.optim.warmup_cosine"
    trainer = Trainer(cfg, tmp_path, tiny_images())
    opt = trainer.optimizer
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is True
    assert (opt.defaults["betas"], opt.defaults["eps"], opt.defaults["weight_decay"]) == ((0.8, 0.95), 1e-6, 0.01)
    steps = cfg.trainer.max_steps
    assert [trainer.lr_at(k) for k in range(6)] == [warmup_cosine(k, lr=3e-3, warmup_steps=4, max_steps=steps)
                                                    for k in range(6)]
    assert [trainer.lr_at(k) for k in range(4)] == [warmup_lr(k, 3e-3, 4) for k in range(4)]


def test_cosine_schedule_drives_the_optimizer(tmp_path):
    cfg = tiny_cfg("trainer.max_steps=5", "trainer.warmup_steps=1", "trainer.lr=1e-2", "trainer.ckpt_every=0",
                   "trainer.lr_schedule._target_=diffusion.training.optim.warmup_cosine",
                   "+trainer.lr_schedule.floor=0.2", "+trainer.optimizer.fused=false")
    trainer = Trainer(cfg, tmp_path, tiny_images())
    assert trainer.optimizer.defaults["fused"] is False
    batches = trainer._batches()
    for k in range(5):
        _, _, lr = trainer.train_step(batches)
        want = warmup_cosine(k, lr=1e-2, warmup_steps=1, max_steps=5, floor=0.2)
        assert lr == want and trainer.optimizer.param_groups[0]["lr"] == want
    assert lr == pytest.approx(2e-3)


def test_bad_schedule_option_fails_before_training(tmp_path):
    cfg = tiny_cfg("trainer.lr_schedule._target_=diffusion.training.optim.warmup_cosine", "+trainer.lr_schedule.floor=2")
    with pytest.raises(ConfigError, match="floor=2"):
        Trainer(cfg, tmp_path, tiny_images())
