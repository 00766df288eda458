"""``train.py distill=consistency|reflow distill.teacher=<run>``: the student's run, made from the teacher's.

The teacher is read like every checkpoint (weights only, its config through the allowlist). The student takes the
teacher's model, process, prediction and data configs, and this command's trainer and sampler settings; its config
keeps the ``distill`` node (the teacher's checkpoint among it), so ``sample.py`` and ``evaluate.py`` read the
student like any run and know what it is. The student starts from the teacher's weights (EMA by default).

* ``consistency`` (every process): the network is wrapped in ``diffusion.consistency.ConsistencyModel`` and trained
  with ``ConsistencyDistillation`` against the frozen teacher.
* ``reflow`` (rectified flow): couplings are drawn once with the teacher's sampler into ``<run>/couplings`` (seeded,
  resumable), then the student is trained by flow matching on them (``CouplingDataset``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from diffusion.distillation.consistency import ConsistencyDistillation
from diffusion.distillation.reflow import CouplingDataset, draw_couplings
from diffusion.device import pick_device
from diffusion.errors import ConfigError
from diffusion.fitting import resolve_sampler
from diffusion.losses import FlowMatching
from diffusion.processes import RectifiedFlow
from diffusion.runs import load_run
from diffusion.samplers import sampler_from_config
from diffusion.training import distributed as D

log = logging.getLogger("train")

METHODS = ("consistency", "reflow")
#: the teacher's, never this command's: what the student is
TAKEN_FROM_TEACHER = ("model", "process", "data", "prediction", "loss")


def student_config(cfg: DictConfig, teacher_cfg: DictConfig, teacher_path: Path) -> DictConfig:
    """The teacher's model, process, data, prediction and loss with this command's other settings; ``distill``
    names the teacher's checkpoint file."""
    student = cfg.copy()
    with open_dict(student):
        for key in TAKEN_FROM_TEACHER:
            if key in teacher_cfg:
                student[key] = teacher_cfg[key]
        student.distill.teacher = str(teacher_path.resolve())
    return student


def prepare_distillation(cfg: DictConfig, run_dir: Path, resuming: bool) -> tuple[DictConfig, dict[str, Any]]:
    """Load the teacher (on the trainer's device); the student's config and the ``Trainer``'s extra arguments:
    ``loss``, ``init_state`` (the teacher's network weights; not when ``resuming``, where the student's own
    checkpoint has them and ``cfg`` is already the student's saved config) and, for reflow, ``dataset``."""
    d, dist = cfg.distill, D.current()
    device = pick_device(str(cfg.trainer.device), dist.local_rank, setting="trainer.device")
    method = getattr(d.method, "value", str(d.method))
    if method not in METHODS:
        raise ConfigError(f"unknown distill.method {method!r}; choose one of {', '.join(METHODS)}")
    if not d.teacher:
        raise ConfigError("distill.teacher is not set: give the teacher's run folder, distill.teacher=runs/<run>")
    teacher = load_run(d.teacher, ema=bool(d.teacher_ema), device=device)
    teacher.model.requires_grad_(False)
    if not resuming:
        cfg = student_config(cfg, teacher.cfg, teacher.path)
    init_state = None if resuming else {k: v.detach().clone() for k, v in teacher.model.net.state_dict().items()}
    if method == "consistency":
        if cfg.trainer.bpd_every:  # a consistency model defines no ODE or chain: its bits/dim would be meaningless
            log.info("trainer.bpd_every=0 for a consistency student (it has no likelihood bound)")
            cfg = cfg.copy()
            cfg.trainer.bpd_every = 0
        loss = ConsistencyDistillation(teacher.process, teacher.model, steps=int(d.steps), spacing=str(d.spacing),
                                       solver=str(d.solver), distance=str(d.distance), target=str(d.target),
                                       ema_decay=float(d.target_decay), weighting=str(d.weighting))
        return cfg, {"loss": loss, "init_state": init_state}
    if not isinstance(teacher.process, RectifiedFlow):
        raise ConfigError(f"distill=reflow straightens a rectified flow; the teacher {teacher.path} is "
                          f"{teacher.process!r}: use distill=consistency for it")
    with open_dict(cfg):  # the student learns by flow matching on the couplings, whatever the teacher's loss
        cfg.loss = OmegaConf.create({"_target_": "diffusion.losses.FlowMatching", "_partial_": True})
    if d.pair_sampler is None:
        raise ConfigError("distill.pair_sampler is not set: give the couplings' sampler, e.g. distill.pair_sampler={name: dpmpp_3m, steps: 20}")
    spec = sampler_from_config(d.pair_sampler)
    shape, _ = teacher.shape()
    folder = run_dir / "couplings"
    if dist.is_main:
        spec = _concrete(spec, teacher, shape, device)
        draw_couplings(teacher.process, teacher.model, spec, int(d.pairs), shape, folder, seed=int(d.pair_seed),
                       batch_size=int(d.pair_batch_size), device=device, log=log.info)
    D.barrier()  # every rank waits for rank 0's couplings
    return cfg, {"loss": FlowMatching(teacher.process), "init_state": init_state, "dataset": CouplingDataset(folder)}


def _concrete(spec, teacher, shape, device):
    """The pairs' sampler with ``fitted`` options made concrete for the teacher: its grid fitted once into the
    teacher's ``eval/schedules`` (as ``sample.py`` fits it), or read from there."""
    return resolve_sampler(spec, teacher.process, teacher.model, shape, schedules_dir=teacher.run_dir / "eval" / "schedules",
                           meta=teacher.provenance, device=device, log=log.info)


__all__ = ["prepare_distillation", "student_config", "METHODS"]
