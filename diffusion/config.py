"""Typed schemas of ``train.py``'s configuration, registered in Hydra's ConfigStore.

``configs/train.yaml`` starts from ``train_schema`` (``TrainConfig``), so every ``trainer.*`` value is
type-checked when the command line is composed: ``trainer.lr=abc`` or an unknown key such as
``trainer.nope=1`` fails before anything runs. Process, loss and sampler options get the same checks through the
``schema/process/*``, ``schema/loss/*`` and ``schema/sampler/*`` entries their YAML files extend; those schemas are
generated from the classes' and functions' signatures (``generated_schemas``), where the defaults live. ``model``
and ``data`` are owned by their packages' YAML files and stay free-form here.

Call ``register()`` before composing (train.py and the tests do); it is idempotent.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf


class Precision(Enum):
    """Arithmetic of the forward/backward pass. ``auto``: bf16 on CUDA when supported (fp16 with a
    GradScaler otherwise); on CPU bf16 only if a quick timing of the real training step finds it faster."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"


@dataclass
class TrainerConfig:
    """Every trainer setting and its default: the default run's values (configs/trainer/default.yaml sets none).

    The default run is unet_mnist on the 5,000 bundled digits in under 10 minutes on 2 CPU cores in fp32: the loop
    stops at max_steps or after max_minutes, whichever comes first, and on a machine too slow for max_steps the
    budget fit (fit_budget) shortens the schedule to the time; on a GPU max_steps ends it in about a minute. The
    recipes in configs/experiment/ and trainer=smoke override what they change (benchmarks/default_run.md)."""

    # length and batch; batch_size is the global batch of one optimizer step (all processes and
    # accumulation steps together), so a recipe means the same thing on 1 CPU or 8 GPUs
    max_steps: int = 1200
    # wall-clock budget of the training loop in minutes (0: none); reaching it stops like max_steps
    # does (checkpoint, final sample grid), so a run fits a time slot on any machine
    max_minutes: float = 9.0
    # when the first steps show that max_steps will not fit max_minutes, lower max_steps (once, logged, saved in
    # the checkpoints) so that the lr schedule and the EMA still finish in time; false: stop where time runs out
    fit_budget: bool = True
    batch_size: int = 64
    grad_accum: int = 1
    # the optimizer and the learning-rate schedule (diffusion/training/optim.py): config targets built with the
    # values below; default AdamW with linear warm-up to lr, then a cosine decay to 0 at max_steps: in a short run
    # the decay does what a long EMA would (the paper recipes in configs/experiment/ keep DDPM's constant lr)
    optimizer: Dict[str, Any] = field(default_factory=lambda: {"_target_": "diffusion.training.optim.adamw"})
    lr_schedule: Dict[str, Any] = field(default_factory=lambda: {"_target_": "diffusion.training.optim.warmup_cosine"})
    lr: float = 1e-3  # above DDPM's 2e-4: a small net and a short run
    warmup_steps: int = 100  # linear warm-up from lr/warmup_steps to lr
    weight_decay: float = 0.0
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; <= 0 turns clipping off
    # exponential moving average of the weights; ema_warmup: decay_t = min(decay, (1+t)/(10+t)), useful
    # averages in short runs
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: Precision = Precision.auto
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    num_workers: int = 0
    # classifier-free guidance: probability of replacing a label with the null class (class-conditional models)
    class_dropout: float = 0.1
    # when things happen (in optimizer steps; 0 turns a periodic action off)
    log_every: int = 50
    ckpt_every: int = 250
    keep_last: int = 3  # checkpoints kept; 0 keeps all
    sample_every: int = 500
    sample_count: int = 64
    sample_clip: Optional[float] = 1.0  # clip the grids' denoised estimates x0_pred to [-1, 1] (null: off)
    # bits/dim of the held-out batch every N steps and at the end (0: off); ~1 min in the default run
    bpd_every: int = 2500
    bpd_count: int = 16
    # time samples of the variational bound; None: the bound's own default, all N terms for DDPM (N model
    # evaluations: sampling DDPM's terms is unbiased but so heavy-tailed, because of the t=0 decoder term,
    # that even 2,000 draws miss by 2x) and 256 stratified times (x4 evaluations) for the SDEs
    bpd_t_samples: Optional[int] = None
    fid_every: int = 0  # FID/KID (and digit FD/KID) of fid_count EMA samples to TensorBoard every N steps (0: off)
    fid_count: int = 1000
    fid_inception: bool = True  # false: only the digit scores (MNIST), which need no Inception network
    progress: bool = True  # tqdm bar on the main process


class DistillMethod(Enum):
    consistency = "consistency"  # consistency distillation (diffusion.distillation.consistency), every process
    reflow = "reflow"            # reflow on the teacher's couplings (diffusion.distillation.reflow), rectified flow


@dataclass
class DistillConfig:
    """``train.py distill=consistency|reflow distill.teacher=<run>`` (configs/distill/): a student trained from a
    teacher run, starting from its weights (diffusion/distillation/setup.py)."""

    method: DistillMethod = DistillMethod.consistency
    teacher: str = ""            # the teacher's run folder or checkpoint file (the student's config keeps the file)
    teacher_ema: bool = True     # the teacher's EMA weights (false: its raw trained weights)
    # consistency distillation (ConsistencyDistillation): the ODE's discretization, the teacher's step, the distance,
    # the target network and the weights of the time steps (benchmarks/distillation.md)
    steps: int = 18
    spacing: str = "karras"      # karras | logsnr | uniform
    solver: str = "heun"         # heun | ddim
    distance: str = "pseudo_huber"  # pseudo_huber | l2
    target: str = "ema"          # ema | stopgrad
    target_decay: float = 0.95   # the EMA target's decay
    weighting: str = "ict"       # ict (1 / (s_{n+1} - s_n)) | uniform
    # reflow: couplings drawn once with the teacher's sampler (a configs/sampler node) into <run>/couplings
    pairs: int = 5000
    pair_sampler: Any = None     # configs/distill/reflow.yaml: the few-step sampler fitted to the teacher
    pair_seed: int = 0
    pair_batch_size: int = 500


@dataclass
class TrainConfig:
    model: Any = MISSING
    process: Any = MISSING
    sampler: Any = MISSING
    data: Any = MISSING
    loss: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # what the network predicts (eps | x0 | v | score | velocity | edm); samplers always see eps through
    # EpsModel (EDMPrecond for edm: EDM's preconditioning); auto: what the loss trains natively
    # (training.build.resolve_formulation: velocity for flow matching, edm for EDM's loss, else eps)
    prediction: str = "auto"
    # continue the run in hydra.run.dir from its latest checkpoint
    resume: bool = False
    # build whatever the resumed checkpoint's saved config names (default: only the project's own classes)
    trust_checkpoint_config: bool = False
    # distill=consistency|reflow distill.teacher=<run>: train a student from a teacher run (configs/distill/)
    distill: Optional[DistillConfig] = None


# ---- processes, losses and samplers: schemas generated from their signatures (diffusion/schemas.py) ----------
def generated_schemas() -> dict[tuple[str, str], type]:
    """``(group, name) -> dataclass`` for every process (by ``Process.name``), loss (``losses.LOSSES``: the process
    is passed when the loss is built) and registered sampler."""
    from diffusion import losses, processes, samplers
    from diffusion.buildable import _REGISTERED
    from diffusion.schemas import schema_from_signature

    out: dict[tuple[str, str], type] = {}
    for path, obj in _REGISTERED.items():
        if isinstance(obj, type) and issubclass(obj, processes.Process) and path.startswith("diffusion."):
            public = f"diffusion.processes.{obj.__name__}"
            target = public if getattr(processes, obj.__name__, None) is obj else path
            out[("schema/process", obj.name)] = schema_from_signature(obj, target)
    for key, cls in losses.LOSSES.items():
        out[("schema/loss", key)] = schema_from_signature(cls, f"diffusion.losses.{cls.__name__}",
                                                          skip=("process",), fixed={"_partial_": True})
    steps = inspect.signature(samplers.SamplerSpec).parameters["steps"].default
    for name, fn in samplers.SAMPLERS.items():
        out[("schema/sampler", name)] = schema_from_signature(fn, "diffusion.samplers.SamplerSpec", name=f"{name}_sampler",
                                                              keyword_only=True, fixed={"name": name, "steps": steps})
    return out


SCHEMAS: dict[tuple[Optional[str], str], type] = {(None, "train_schema"): TrainConfig}

_stamp: list[str] = []


def run_stamp() -> str:
    """The time stamp naming this run's folder (``${run_stamp:}`` in train.yaml). Fixed once per process;
    under torchrun train.py sets it to rank 0's so that every rank writes into one folder."""
    if not _stamp:
        _stamp.append(datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return _stamp[0]


def set_run_stamp(stamp: str) -> None:
    _stamp[:] = [stamp]


def __getattr__(name: str):
    # the loss table lives with the losses (diffusion.losses.LOSSES, name -> class); this old name maps to class names
    if name == "LOSSES":
        from diffusion.losses import LOSSES

        return {key: cls.__name__ for key, cls in LOSSES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> None:
    """Put the training schemas and the generated group schemas into Hydra's ConfigStore and register the
    ``run_stamp`` resolver; idempotent. ``sample.py`` and ``evaluate.py``'s own schemas live with their tasks:
    ``diffusion.evaluation.config.register`` adds them (and calls this); ``diffusion.cli.run_main`` calls that."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for (group, name), node in {**SCHEMAS, **generated_schemas()}.items():
        cs.store(group=group, name=name, node=node)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
