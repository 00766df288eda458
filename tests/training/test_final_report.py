"""What train.py prints at its end (``training.setup.final_report``): the commands that continue from the run
folder, which for a consistency student name its own sampler and no likelihood."""
from __future__ import annotations

from diffusion.training.setup import final_report

from .helpers import compose_train

SUMMARY = {"world_size": 1, "stopped_by": "max_steps", "checkpoint": "runs/x/checkpoints/ckpt_4.pt", "step": 4}


def test_a_trained_run_is_sampled_and_its_likelihood_measured():
    text = final_report(SUMMARY, compose_train(), "runs/x")
    assert "python sample.py ckpt=runs/x sampler=dpmpp_2m" in text
    assert "python evaluate.py ckpt=runs/x task=likelihood" in text


def test_a_consistency_student_names_its_sampler_and_no_likelihood():
    cfg = compose_train("distill=consistency", "distill.teacher=runs/teacher")
    text = final_report(SUMMARY, cfg, "runs/student")
    assert "python sample.py ckpt=runs/student sampler=consistency" in text
    assert "task=likelihood" not in text and "no probability-flow ODE" in text


def test_a_reflowed_run_keeps_its_likelihood():
    cfg = compose_train("distill=reflow", "distill.teacher=runs/teacher")
    assert "python evaluate.py ckpt=runs/student task=likelihood" in final_report(SUMMARY, cfg, "runs/student")


def test_a_time_budget_says_how_to_train_on():
    text = final_report({**SUMMARY, "stopped_by": "time", "max_steps": 9}, compose_train(), "runs/x")
    assert "used up at step 4 of 9" in text and "python train.py resume=true hydra.run.dir=runs/x" in text
