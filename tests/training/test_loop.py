"""The training loop in-process on a 40-image 8x8 data set and the tiny U-Net: warm-up, bit-exact resume
across an epoch boundary, NaN stop, stop requests, gradient accumulation, class dropout, logging."""
from __future__ import annotations

import math
import time

import pytest
import torch

from diffusion.training.checkpoint import list_checkpoints, load_checkpoint
from diffusion.training.errors import TrainingError
from diffusion.evaluation.periodic import training_evaluations
from diffusion.training.budget import TimeBudget, estimate_costs
from diffusion.training.loop import Periodic, StopReason, Trainer, resolve_precision, warmup_lr

from .helpers import tiny_cfg, tiny_images


def test_warmup_schedule():
    lrs = [warmup_lr(k, 1e-3, 4) for k in range(6)]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert warmup_lr(0, 1e-3, 0) == 1e-3


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, lambda: 1.5) == "bf16"
    assert resolve_precision("auto", cpu, lambda: 1.1) == "fp32"   # not worth the rounding
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(TrainingError, match="fp16 needs CUDA"):
        resolve_precision("fp16", cpu)


def _equal_states(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for name in pa:
            assert torch.equal(pa[name], pb[name])
    for ra, rb in zip(a["rng"], b["rng"]):
        for name in ra:
            assert torch.equal(ra[name], rb[name]), f"rng {name}"


# dropout, random flips and class-label dropout: every random stream a resume must restore
RESUME = ("model.dropout=0.2", "model.num_classes=10", "trainer.class_dropout=0.5", "trainer.ckpt_every=0",
          "trainer.warmup_steps=3")


def test_resume_is_bit_exact_across_an_epoch_boundary(tmp_path):
    """8 steps straight == 3 steps, stop, resume, 5 steps (5 batches of 8 per epoch: the resume falls in
    epoch 0 and the run crosses into epoch 1)."""
    images = tiny_images(flip=True)
    straight = Trainer(tiny_cfg(*RESUME, "trainer.max_steps=8"), tmp_path / "a", images)
    straight.fit()
    first = Trainer(tiny_cfg(*RESUME, "trainer.max_steps=3"), tmp_path / "b", images)
    first.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3]
    state = load_checkpoint(tmp_path / "b")
    resumed = Trainer(tiny_cfg(*RESUME, "trainer.max_steps=8"), tmp_path / "b", images, resume=state)
    assert resumed.step == 3
    resumed.fit()
    _equal_states(load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b"))


def test_nan_loss_stops_without_overwriting_checkpoints(tmp_path):
    trainer = Trainer(tiny_cfg("trainer.max_steps=6", "trainer.ckpt_every=2"), tmp_path, tiny_images())
    loss_fn = trainer.loss_fn

    def poisoned(model, x0, **kwargs):
        loss = loss_fn(model, x0, **kwargs)
        return loss * math.nan if trainer.step == 2 else loss          # the third step (index 2)

    trainer.loss_fn = poisoned
    with pytest.raises(TrainingError) as e:
        trainer.fit()
    message = str(e.value)
    assert "at step 3" in message and "ckpt_2.pt" in message and "\n" not in message
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    state = load_checkpoint(tmp_path)
    assert all(torch.isfinite(w).all() for w in state["model"].values())


def test_stop_request_saves_and_stops(tmp_path):
    trainer = Trainer(tiny_cfg("trainer.max_steps=100", "trainer.ckpt_every=0"), tmp_path, tiny_images())
    loss_fn = trainer.loss_fn

    def stop_at_step_3(model, x0, **kwargs):
        if trainer.step == 2:
            trainer.request_stop()                                     # as the SIGTERM handler does
        return loss_fn(model, x0, **kwargs)

    trainer.loss_fn = stop_at_step_3
    summary = trainer.fit()
    assert summary["step"] == 3 and summary["stopped_by"] is StopReason.signal and summary["signal"] == "SIGTERM"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]


def test_a_finished_run_stops_at_max_steps(tmp_path):
    """StopReason.max_steps with the checkpoint of the last step; fit again: nothing left to do, same reason."""
    trainer = Trainer(tiny_cfg("trainer.max_steps=2", "trainer.ckpt_every=0"), tmp_path, tiny_images())
    summary = trainer.fit()
    assert summary["stopped_by"] is StopReason.max_steps and summary["signal"] is None and summary["step"] == 2
    assert summary["checkpoint"].name == "ckpt_2.pt"
    again = Trainer(tiny_cfg("trainer.max_steps=2"), tmp_path, tiny_images(), resume=load_checkpoint(tmp_path)).fit()
    assert again["stopped_by"] is StopReason.max_steps and again["step"] == 2


def test_periodic_actions_are_due_every_n_steps_and_at_the_end():
    every_3 = Periodic("grid", 3, lambda: None, at_end=True)
    assert [k for k in range(1, 10) if every_3.due(k, final=False)] == [3, 6, 9]
    assert every_3.due(4, final=True)
    off = Periodic("bits/dim", 0, lambda: None, at_end=False)
    assert not any(off.due(k, final=k == 9) for k in range(1, 10))


def _deterministic_loss(model, x0, class_labels=None, generator=None):
    """No random draws: the same batch gives the same loss however it is split."""
    t = torch.full((x0.shape[0],), 500.0)
    return model(x0, t).square().flatten(1).mean(1)


def test_grad_accumulation_equals_the_large_batch(tmp_path):
    """Two micro-batches of 4 with accumulation give the update of one batch of 8 (same 8 images)."""
    weights = []
    for accum in (1, 2):
        trainer = Trainer(tiny_cfg("trainer.max_steps=1", f"trainer.grad_accum={accum}", "trainer.ckpt_every=0",
                                   "trainer.grad_clip=0", "trainer.warmup_steps=0", "trainer.lr=1e-2"),
                          tmp_path / str(accum), tiny_images())
        assert trainer.micro_batch == 8 // accum
        trainer.loss_fn = _deterministic_loss
        trainer.fit()
        weights.append(trainer.net.state_dict())
    changed = 0
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)  # float32 sums in another order
        changed += 1
    assert changed > 0


def test_class_dropout_rate_and_null_label(tmp_path):
    trainer = Trainer(tiny_cfg("model.num_classes=10", "trainer.class_dropout=0.3"), tmp_path, tiny_images())
    labels = trainer._labels(torch.arange(20000) % 10)
    null = labels == trainer.net.null_class
    # binomial(20000, 0.3): std 0.0032, so 0.3 +- 0.02 is > 6 sigma
    assert abs(null.float().mean().item() - 0.3) < 0.02
    kept = ~null
    assert torch.equal(labels[kept], (torch.arange(20000) % 10)[kept])


def test_batch_size_must_divide(tmp_path):
    with pytest.raises(TrainingError, match="batch_size=6"):
        Trainer(tiny_cfg("trainer.batch_size=6", "trainer.grad_accum=4"), tmp_path, tiny_images())


def test_logs_scalars_and_sample_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg("trainer.max_steps=2", "trainer.log_every=1", "trainer.sample_every=2", "trainer.sample_count=4",
                   "trainer.bpd_every=2", "trainer.bpd_t_samples=2")
    holdout = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    trainer = Trainer(cfg, tmp_path, tiny_images(), evaluations=training_evaluations(cfg, holdout=holdout))
    trainer.fit()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/images_per_sec", "eval/bits_per_dim"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Tags()["images"] == ["samples"]
    assert (tmp_path / "samples" / "step_2.png").stat().st_size > 0


def test_time_budget_ends_the_run_like_max_steps(tmp_path):
    """trainer.max_minutes: checkpoint, final sample grid and bits/dim at the step where time ran out."""
    cfg = tiny_cfg("trainer.max_steps=1000", "trainer.max_minutes=1e-6", "trainer.ckpt_every=0", "trainer.sample_every=500",
                   "trainer.sample_count=4", "trainer.bpd_every=500", "trainer.bpd_t_samples=2")
    holdout = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    trainer = Trainer(cfg, tmp_path, tiny_images(), evaluations=training_evaluations(cfg, holdout=holdout))
    summary = trainer.fit()
    assert summary["stopped_by"] is StopReason.time and summary["step"] == 1 and summary["signal"] is None
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert (tmp_path / "samples" / "step_1.png").exists()


@pytest.mark.slow
def test_compiled_training_saves_the_bare_network(tmp_path):
    """trainer.compile=true (about a minute of compilation on a CPU): trains, and checkpoints hold the
    uncompiled network's keys, so load_model needs no compiler."""
    trainer = Trainer(tiny_cfg("trainer.max_steps=2", "trainer.compile=true"), tmp_path, tiny_images())
    trainer.fit()
    state = load_checkpoint(tmp_path)
    assert not any("_orig_mod" in k for k in state["model"]) and state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


COSINE = "trainer.lr_schedule._target_=diffusion.training.optim.warmup_cosine"


def test_budget_fit_lowers_max_steps_to_what_the_time_allows(tmp_path):
    """trainer.fit_budget: at 0.1 s per step a 10 s budget holds 0.97 * 10 / 0.1 = 97 steps (3% spare), so
    max_steps drops from 1000 to 97 and the cosine schedule is rebuilt to end there; a fast step leaves it."""
    from tqdm import tqdm

    trainer = Trainer(tiny_cfg("trainer.max_steps=1000", "trainer.max_minutes=1", "trainer.ckpt_every=0", COSINE,
                               "trainer.warmup_steps=2"), tmp_path, tiny_images())
    bar = tqdm(total=1000, disable=True)
    budget = TimeBudget(1, True, 0, 1000, trainer.device)
    budget.deadline = time.perf_counter() + 10.0                        # 10 s left
    assert budget.steps_that_fit(trainer.step, trainer.max_steps, 1e-4, trainer.periodic) is None
    trainer.set_max_steps(budget.steps_that_fit(trainer.step, trainer.max_steps, 0.1, trainer.periodic), bar)
    assert trainer.max_steps in (96, 97) and bar.total == trainer.max_steps
    assert trainer.tcfg.max_steps == 1000                               # the config stays as given
    last = trainer.max_steps - 1
    assert trainer.lr_at(last) == 0.0 and trainer.lr_at(last - 10) > 0.0   # the cosine now reaches its floor there


@pytest.mark.slow  # timed: a loaded machine can shift the fit
def test_budget_fit_in_a_run_is_saved_with_the_checkpoint(tmp_path):
    """A 3-second budget cannot hold 100,000 tiny steps: the run trains the fitted number (timed over its first
    steps) and its checkpoints carry it, so a resumed run keeps the same schedule; fit_budget=false keeps it."""
    trainer = Trainer(tiny_cfg("trainer.max_steps=100000", "trainer.max_minutes=0.05", "trainer.ckpt_every=0",
                               COSINE), tmp_path / "fit", tiny_images())
    summary = trainer.fit()
    fitted = trainer.max_steps
    assert 25 < fitted < 100000 and summary["step"] <= fitted and summary["max_steps"] == fitted
    state = load_checkpoint(tmp_path / "fit")
    assert state["budget_fit"] == {"configured": 100000, "max_steps": fitted}
    assert "max_steps: 100000\n" in state["config"]                    # the config as given, written once
    resumed = Trainer(tiny_cfg("trainer.max_steps=100000", "trainer.max_minutes=0.05", "trainer.ckpt_every=0", COSINE),
                      tmp_path / "fit", tiny_images(), resume=state)
    assert resumed.max_steps == fitted and resumed.lr_at(fitted - 1) == trainer.lr_at(fitted - 1)
    longer = Trainer(tiny_cfg("trainer.max_steps=200000", "trainer.max_minutes=0.05", "trainer.ckpt_every=0", COSINE),
                     tmp_path / "fit", tiny_images(), resume=state)
    assert longer.max_steps == 200000                                   # a new trainer.max_steps on resume wins
    kept = Trainer(tiny_cfg("trainer.max_steps=100000", "trainer.max_minutes=0.02", "trainer.ckpt_every=0",
                            "trainer.fit_budget=false"), tmp_path / "kept", tiny_images())
    assert kept.fit()["stopped_by"] is StopReason.time and kept.max_steps == 100000


def test_final_cost_estimate_ignores_the_first_calls_set_up(tmp_path):
    """The time budget reserves the final grid's and bits/dim's cost from timed forward passes. A first call that
    pays one-time set-up (here 0.3 s) must not be multiplied by the bound's ~1,000 terms: that once reserved more
    than the whole 9-minute budget and ended the default run at step 1."""
    cfg = tiny_cfg("trainer.max_steps=10", "trainer.max_minutes=9", "trainer.bpd_every=10", "trainer.sample_every=10",
                   "trainer.sample_count=4")
    grids, bits = training_evaluations(cfg, holdout=torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    trainer = Trainer(cfg, tmp_path, tiny_images(), evaluations=[grids, bits])
    model, calls = trainer.ema_model, []

    def slow_first_call(*args, **kwargs):
        calls.append(1)
        if len(calls) in (1, 4):  # the first call at each of the two batch shapes
            time.sleep(0.3)
        return model(*args, **kwargs)

    trainer.ema_model = slow_first_call
    estimate_costs(trainer.periodic, trainer.view())
    assert len(calls) == 6                                              # 3 timed calls per estimate
    from diffusion.likelihood import bound_cost

    terms = bound_cost(trainer.process, trainer.tcfg.bpd_t_samples)
    assert terms >= 100 and bits.seconds < 0.3 * terms / 2             # the sleep alone would give 0.3 terms
    assert grids.seconds < 0.3 * int(trainer.cfg.sampler.steps) / 2


def test_the_callers_config_stays_as_given(tmp_path):
    """The Trainer resolves loss=auto, prediction=auto and the precision in its own copy (what config.yaml and the
    checkpoints save); the config it was given is not changed, so train.py writes config.yaml once."""
    from omegaconf import OmegaConf

    cfg = tiny_cfg("trainer.max_steps=1", "trainer.precision=auto")
    before = OmegaConf.to_yaml(cfg)
    trainer = Trainer(cfg, tmp_path, tiny_images())
    trainer.fit()
    assert OmegaConf.to_yaml(cfg) == before
    assert (trainer.cfg.loss._target_, trainer.cfg.prediction) == ("diffusion.losses.FlowMatching", "velocity")
    assert trainer.cfg.trainer.precision.value == trainer.precision in ("fp32", "bf16")
    assert load_checkpoint(tmp_path)["config"] == OmegaConf.to_yaml(trainer.cfg, resolve=True)
