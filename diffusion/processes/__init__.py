"""Noise processes: DDPM (discrete, with its Bayes posterior), the VP, sub-VP and VE SDEs, EDM and rectified flow."""
from diffusion.processes.base import MARKOV_CHAIN, SPACINGS, Process, posterior
from diffusion.processes.ddpm import DDPM, cosine_betas, linear_betas
from diffusion.processes.edm import EDM
from diffusion.processes.rectified_flow import RectifiedFlow
from diffusion.processes.ve import VESDE
from diffusion.processes.vp import VPSDE, SubVPSDE

__all__ = ["Process", "posterior", "SPACINGS", "MARKOV_CHAIN", "DDPM", "VPSDE", "SubVPSDE", "VESDE", "EDM", "RectifiedFlow",
           "linear_betas", "cosine_betas"]
