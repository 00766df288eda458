"""trainer.fid_every: the digit scores (and FID/KID where Inception is on) of EMA samples go to TensorBoard at the
set steps and at the end, beside their real-vs-real floors; nothing is logged when it is off (the default)."""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion.evaluation.periodic import training_evaluations
from diffusion.training.loop import Trainer
from tests.training.helpers import tiny_cfg, tiny_images


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow  # ~20 s on 2 shared cores: the digit report's real features and nearest neighbours
def test_digit_scores_are_logged_every_fid_every_steps(tmp_path):
    # 28x28 digits of the default data set (mnist5k): the digit report applies; Inception is off to stay fast
    # DDPM: its 3-step model samples pure noise (the untrained rectified-flow default's samples are closer to digits)
    cfg = tiny_cfg("trainer.max_steps=3", "trainer.fid_every=2", "trainer.fid_count=8", "trainer.fid_inception=false",
                   "process=ddpm")
    Trainer(cfg, tmp_path, tiny_images(size=28), evaluations=training_evaluations(cfg)).fit()
    scalars = _scalars(tmp_path)
    assert [s for s, _ in scalars["fid/digit_fd"]] == [2, 3]  # every 2 steps and at the end
    assert {"fid/digit_fd_floor", "fid/digit_kid", "fid/digit_kid_floor", "fid/digit_near_copies"} <= set(scalars)
    assert not any(t in scalars for t in ("fid/fid", "fid/kid"))
    # noise-like samples of a 3-step model are far from digits, real digits at the same n are not
    assert all(v > 5 * floor for (_, v), (_, floor) in zip(scalars["fid/digit_fd"], scalars["fid/digit_fd_floor"]))


def test_off_by_default(tmp_path):
    cfg = tiny_cfg("trainer.max_steps=2")
    assert cfg.trainer.fid_every == 0
    Trainer(cfg, tmp_path, tiny_images(size=28), evaluations=training_evaluations(cfg)).fit()
    assert not any(t.startswith("fid/") for t in _scalars(tmp_path))
