r"""diffusers' ``DDPMScheduler`` config <-> our DDPM process and the network's prediction.

A DDPMScheduler (or DDIMScheduler: the same training chain) holds the betas of the chain

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{i<=t} (1 - beta_i),   t = 0 .. N-1,

which is ``diffusion.processes.DDPM`` with the same betas (Ho et al. 2020): the network sees the step index t in
both. Betas, as diffusers computes them: ``linear`` linspace(beta_start, beta_end, N) (Ho et al.),
``scaled_linear`` linspace(sqrt(beta_start), sqrt(beta_end), N)^2 (latent diffusion), ``squaredcos_cap_v2`` the
cosine schedule (Nichol & Dhariwal 2021, our ``cosine``), ``sigmoid`` (GeoDiff) and explicit ``trained_betas``.
``prediction_type`` epsilon / v_prediction / sample is our eps / v / x0. The scheduler's sampling options
(variance_type, clip_sample, thresholding, timestep_spacing) configure diffusers' sampler, not the model: they are
kept with the import for reference, and our samplers take their own options.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffusion.errors import CheckpointError
from diffusion.processes.base import Process
from diffusion.processes.ddpm import DDPM, cosine_betas, linear_betas
from diffusion.processes.vp import VPSDE

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def _refuse(source: str, field: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{source}: {field}={value!r} is not supported ({why})")


def diffusers_betas(config: Mapping[str, Any], source: str = "scheduler/scheduler_config.json") -> torch.Tensor:
    """The betas a DDPMScheduler config describes, in float64."""
    n = int(config.get("num_train_timesteps", 1000))
    b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    if config.get("trained_betas") is not None:
        return torch.tensor([float(b) for b in config["trained_betas"]], dtype=torch.float64)
    schedule = config.get("beta_schedule", "linear")
    if schedule == "linear":
        return torch.linspace(b0, b1, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        return cosine_betas(n)
    if schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, n, dtype=torch.float64)) * (b1 - b0) + b0
    raise _refuse(source, "beta_schedule", schedule, f"choose one of {', '.join(BETA_SCHEDULES)} or trained_betas")


def process_from_scheduler(config: Mapping[str, Any],
                           source: str = "scheduler/scheduler_config.json") -> tuple[dict[str, Any], str]:
    """(our DDPM's config with ``_target_``, our prediction) for a DDPMScheduler config (a dict from its JSON)."""
    name = config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULERS:
        raise _refuse(source, "_class_name", name, f"the DDPM chain is read from {' or '.join(SCHEDULERS)}")
    if config.get("rescale_betas_zero_snr"):
        raise _refuse(source, "rescale_betas_zero_snr", True, "a chain ending at abar = 0 has no Gaussian prior step")
    if str(config.get("variance_type", "fixed_small")).startswith("learned"):
        raise _refuse(source, "variance_type", config["variance_type"], "networks with learned variances "
                      "(a second output half) are not imported")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise _refuse(source, "prediction_type", prediction, f"choose one of {', '.join(PREDICTIONS)}")
    betas = diffusers_betas(config, source)
    n = len(betas)
    if n < 1 or not bool(((betas > 0) & (betas < 1)).all()):
        raise _refuse(source, "trained_betas" if config.get("trained_betas") is not None else "beta_start",
                      config.get("beta_start"), "every beta must lie in (0, 1)")
    process: dict[str, Any] = {"_target_": "diffusion.processes.DDPM", "num_steps": n, "betas": None}
    if torch.allclose(betas, linear_betas(n), rtol=1e-12, atol=0):  # Ho et al.'s (1000/N-rescaled) line
        process["schedule"] = "linear"
    elif torch.allclose(betas, cosine_betas(n), rtol=1e-12, atol=0):
        process["schedule"] = "cosine"
    else:
        process["schedule"] = "linear"  # named only; the betas below are the chain
        process["betas"] = betas.tolist()
    return process, PREDICTIONS[prediction]


def scheduler_from_process(process: Process, prediction: str) -> dict[str, Any]:
    """The DDPMScheduler config of our DDPM process (or of a VP SDE's chain at the network's labels, see
    ``vp_betas``) with the network's prediction; ``CheckpointError`` (one line) for processes diffusers' DDPM
    chain cannot hold and predictions it has no name for."""
    to_diffusers = {ours: theirs for theirs, ours in PREDICTIONS.items()}
    if prediction not in to_diffusers:
        raise CheckpointError(f"prediction={prediction!r} has no DDPMScheduler prediction_type (it knows "
                              f"{', '.join(PREDICTIONS)}); only eps, v and x0 networks are exported")
    if isinstance(process, DDPM):
        betas, n = process.betas, process.num_steps
        if process.schedule == "linear" and torch.allclose(betas, linear_betas(n), rtol=1e-12, atol=0):
            chain = {"beta_schedule": "linear", "beta_start": 1e-4 * 1000 / n, "beta_end": 0.02 * 1000 / n,
                     "trained_betas": None}
        elif process.schedule == "cosine" and torch.allclose(betas, cosine_betas(n), rtol=1e-12, atol=0):
            chain = {"beta_schedule": "squaredcos_cap_v2", "trained_betas": None}
        else:
            chain = {"beta_schedule": "linear", "trained_betas": betas.tolist()}
    elif type(process) is VPSDE:
        betas = vp_betas(process)
        n, chain = len(betas), {"beta_schedule": "linear", "trained_betas": betas.tolist()}
    else:
        raise CheckpointError(f"{process!r} is not exported: diffusers' DDPMScheduler walks x_t = sqrt(abar) x_0 + "
                              "sqrt(1 - abar) eps at integer steps, which this process is not, and no diffusers "
                              "scheduler feeds the network the noise label it was trained on")
    return {"_class_name": "DDPMScheduler", "num_train_timesteps": int(n), **chain,
            "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0,
            "prediction_type": to_diffusers[prediction], "thresholding": False, "timestep_spacing": "leading",
            "steps_offset": 0, "rescale_betas_zero_snr": False}


def vp_betas(process: VPSDE, steps: int = 1000) -> torch.Tensor:
    """The DDPM chain of a VP SDE at the times its network labels with the step index i (label 999 t):
    abar_i = alpha(t_i)^2, t_i = max(i / 999, t_eps), beta_i = 1 - abar_i / abar_{i-1} (abar_{-1} = 1). At
    i >= 1 the network sees exactly what our VP model gives it; at i = 0 diffusers feeds label 0 where our
    model would feed 999 t_eps (t = 0 itself has beta = 0, a singular chain step)."""
    t = (torch.arange(steps, dtype=torch.float64) / (steps - 1)).clamp_min(process.t_eps)
    abar = torch.exp(2 * process.log_alpha(t))
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return 1 - abar / prev


__all__ = ["SCHEDULERS", "PREDICTIONS", "BETA_SCHEDULES", "diffusers_betas", "process_from_scheduler",
           "scheduler_from_process", "vp_betas"]
