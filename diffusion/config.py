"""Typed schemas of ``train.py``'s configuration, registered in Hydra's ConfigStore.

``configs/train.yaml`` starts from ``train_schema`` (``TrainConfig``), so every ``trainer.*`` value is
type-checked when the command line is composed: ``trainer.lr=abc`` or an unknown key such as
``trainer.nope=1`` fails before anything runs. Process and loss options get the same checks through the
``schema/process/*`` and ``schema/loss/*`` entries their YAML files extend. ``model``, ``data`` and ``sampler`` are owned by their
packages' YAML files and stay free-form here.

Call ``register()`` before composing (train.py and the tests do); it is idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, List, Optional

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
    # length and batch; batch_size is the global batch of one optimizer step (all processes and
    # accumulation steps together), so a recipe means the same thing on 1 CPU or 8 GPUs
    max_steps: int = 2000
    # wall-clock budget of the training loop in minutes (0: none); reaching it stops like max_steps
    # does (checkpoint, final sample grid), so a run fits a time slot on any machine
    max_minutes: float = 0.0
    batch_size: int = 64
    grad_accum: int = 1
    # AdamW with linear warm-up to lr, then constant (Ho et al. 2020)
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; <= 0 turns clipping off
    # exponential moving average of the weights; ema_warmup: decay_t = min(decay, (1+t)/(10+t))
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
    ckpt_every: int = 1000
    keep_last: int = 3  # checkpoints kept; 0 keeps all
    sample_every: int = 1000
    sample_count: int = 64
    sample_clip: Optional[float] = 1.0  # clip the grids' denoised estimates to [-1, 1] (null: off)
    bpd_every: int = 0
    bpd_count: int = 16
    # time samples of the variational bound; None: the bound's own default, all N terms for DDPM (N model
    # evaluations: sampling DDPM's terms is unbiased but so heavy-tailed, because of the t=0 decoder term,
    # that even 2,000 draws miss by 2x) and 256 stratified times (x4 evaluations) for the SDEs
    bpd_t_samples: Optional[int] = None
    progress: bool = True  # tqdm bar on the main process


@dataclass
class TrainConfig:
    model: Any = MISSING
    process: Any = MISSING
    sampler: Any = MISSING
    data: Any = MISSING
    loss: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # what the network predicts (eps | x0 | v | score | velocity | edm); samplers always see eps through
    # EpsModel (EDMPrecond for edm: EDM's preconditioning)
    prediction: str = "eps"
    # continue the run in hydra.run.dir from its latest checkpoint
    resume: bool = False


# ---- processes (configs/process/*.yaml extend these) ---------------------------------------------
@dataclass
class DDPMConfig:
    _target_: str = "diffusion.processes.DDPM"
    schedule: str = "linear"
    num_steps: int = 1000


@dataclass
class VPSDEConfig:
    _target_: str = "diffusion.processes.VPSDE"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_eps: float = 1e-5


@dataclass
class SubVPSDEConfig(VPSDEConfig):
    _target_: str = "diffusion.processes.SubVPSDE"


@dataclass
class VESDEConfig:
    _target_: str = "diffusion.processes.VESDE"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5
    t_eps: float = 1e-5


@dataclass
class EDMConfig:
    _target_: str = "diffusion.processes.EDM"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2


@dataclass
class RectifiedFlowConfig:
    _target_: str = "diffusion.processes.RectifiedFlow"
    t_sampling: str = "uniform"  # uniform | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    t_min: float = 2e-3
    t_eps: float = 1e-3
    t_max: float = 0.999


# ---- losses (configs/loss/*.yaml extend these; the process is passed when the loss is built) -----
@dataclass
class EpsMSEConfig:
    _target_: str = "diffusion.losses.EpsMSE"
    _partial_: bool = True
    min_snr_gamma: Optional[float] = None  # Min-SNR-gamma weighting (Hang et al. 2023 use 5); null: off


@dataclass
class EDMLossConfig:
    _target_: str = "diffusion.losses.EDMLoss"
    _partial_: bool = True


@dataclass
class FlowMatchingConfig:
    _target_: str = "diffusion.losses.FlowMatching"
    _partial_: bool = True


@dataclass
class DSMConfig:
    _target_: str = "diffusion.losses.DSM"
    _partial_: bool = True
    weighting: str = "sigma2"  # sigma2 | likelihood
    importance_sampling: bool = False


@dataclass
class HybridLossConfig:
    _target_: str = "diffusion.losses.HybridLoss"
    _partial_: bool = True
    vlb_weight: float = 0.001
    variance: str = "beta"  # reverse-step variance of the bound: beta | beta_tilde


@dataclass
class VLBLossConfig:
    _target_: str = "diffusion.losses.VLBLoss"
    _partial_: bool = True
    variance: str = "beta"


SCHEMAS: dict[tuple[Optional[str], str], type] = {
    (None, "train_schema"): TrainConfig,
    ("schema/process", "ddpm"): DDPMConfig,
    ("schema/process", "vpsde"): VPSDEConfig,
    ("schema/process", "subvpsde"): SubVPSDEConfig,
    ("schema/process", "vesde"): VESDEConfig,
    ("schema/process", "edm"): EDMConfig,
    ("schema/process", "rectified_flow"): RectifiedFlowConfig,
    ("schema/loss", "eps_mse"): EpsMSEConfig,
    ("schema/loss", "dsm"): DSMConfig,
    ("schema/loss", "hybrid"): HybridLossConfig,
    ("schema/loss", "vlb"): VLBLossConfig,
    ("schema/loss", "edm"): EDMLossConfig,
    ("schema/loss", "flow_matching"): FlowMatchingConfig,
}

_stamp: list[str] = []


def run_stamp() -> str:
    """The time stamp naming this run's folder (``${run_stamp:}`` in train.yaml). Fixed once per process;
    under torchrun train.py sets it to rank 0's so that every rank writes into one folder."""
    if not _stamp:
        _stamp.append(datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return _stamp[0]


def set_run_stamp(stamp: str) -> None:
    _stamp[:] = [stamp]


def register() -> None:
    """Put the schemas into Hydra's ConfigStore and register the ``run_stamp`` resolver."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
