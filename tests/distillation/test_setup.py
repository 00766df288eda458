"""The distillation set-up in-process (what ``train.py distill=...`` runs, without its subprocess): a tiny teacher
run, the student's config and loss from it, a few Trainer steps from the teacher's weights, the student read back
as a consistency model; and the loss's EMA target resuming exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from diffusion import config as schema
from diffusion.consistency import ConsistencyModel
from diffusion.data import InMemoryImages
from diffusion.distillation import ConsistencyDistillation
from diffusion.distillation.setup import prepare_distillation
from diffusion.errors import ConfigError
from diffusion.runs import load_run
from diffusion.samplers import sample
from diffusion.training.checkpoint import load_checkpoint
from diffusion.training.loop import Trainer

REPO = Path(__file__).resolve().parents[2]


def compose_train(*overrides: str):
    schema.register()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=["model=unet_tiny", "trainer=smoke", "trainer.progress=false",
                                           "trainer.sample_every=0", "trainer.bpd_every=0", "sampler.steps=2",
                                           *overrides])


def images(n: int = 32, size: int = 8) -> InMemoryImages:
    data = torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return InMemoryImages(data, torch.zeros(n, dtype=torch.long), num_classes=None, split="train")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher")
    Trainer(compose_train("trainer.max_steps=2"), run, images()).fit()
    return run


def test_a_consistency_student_starts_from_its_teacher_and_reads_back(teacher, tmp_path):
    cfg = compose_train("distill=consistency", f"distill.teacher={teacher}", "trainer.max_steps=2", "trainer.lr=0")
    student_cfg, extra = prepare_distillation(cfg, tmp_path, resuming=False)
    assert student_cfg.distill.teacher == str(Path(load_checkpoint(teacher)["path"]).resolve())
    assert student_cfg.sampler.name == "consistency"
    assert isinstance(extra["loss"], ConsistencyDistillation) and "dataset" not in extra
    trainer = Trainer(student_cfg, tmp_path, images(), **extra)
    assert isinstance(trainer.model, ConsistencyModel)
    trainer.fit()
    state, original = load_checkpoint(tmp_path), load_checkpoint(teacher)
    for name, weight in original["ema"].items():  # lr = 0: the student is still the teacher's (EMA) network
        assert torch.equal(state["model"][name], weight), name
    assert state["loss"]  # the EMA target, for exact resume
    student = load_run(tmp_path)
    assert isinstance(student.model, ConsistencyModel)
    x = sample(student.process, student.model, (2, 1, 8, 8), "consistency", 2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_reflow_needs_a_rectified_flow_teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddpm_teacher")
    Trainer(compose_train("process=ddpm", "trainer.max_steps=1"), run, images()).fit()
    cfg = compose_train("distill=reflow", f"distill.teacher={run}")
    with pytest.raises(ConfigError, match="rectified flow.*distill=consistency"):
        prepare_distillation(cfg, run.parent / "student", resuming=False)
    with open_dict(cfg):
        cfg.distill.teacher = ""
    with pytest.raises(ConfigError, match="distill.teacher is not set"):
        prepare_distillation(cfg, run.parent / "student", resuming=False)


def test_the_ema_target_resumes_exactly():
    """Three calls straight == two calls, the state saved, a new loss loaded with it, one call: the same target."""
    from diffusion.processes import VPSDE
    from diffusion.toy import GaussianMixture

    process = VPSDE()
    gm = GaussianMixture.random(2, k=2, seed=0)
    net = torch.nn.Linear(2, 2)

    class Student(torch.nn.Module):
        prediction = "eps"

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t, class_labels=None):
            return self.net(x)

    student = ConsistencyModel(Student(), process)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def run(loss, calls, seed):
        gen = torch.Generator().manual_seed(seed)
        for _ in range(calls):
            value = loss(student, gm.sample(16, gen).float(), generator=gen).mean()
            opt.zero_grad()
            value.backward()
            opt.step()

    start = {k: v.clone() for k, v in net.state_dict().items()}
    straight = ConsistencyDistillation(process, gm.eps_model(process))
    run(straight, 2, 0)
    run(straight, 1, 1)
    net.load_state_dict(start)
    first = ConsistencyDistillation(process, gm.eps_model(process))
    run(first, 2, 0)
    resumed = ConsistencyDistillation(process, gm.eps_model(process))
    resumed.load_state_dict(first.state_dict())
    run(resumed, 1, 1)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
