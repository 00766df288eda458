"""Diffusion models with interchangeable noise processes, samplers and likelihoods.

    from diffusion import processes, sample, likelihood
    proc = processes.VPSDE(beta_min=0.1, beta_max=20.0)
    x0 = sample(proc, model, (16, 1, 28, 28), sampler="dpmpp_2m", steps=20, generator=g)
    nll = likelihood.ode_nll(proc, model, x)          # nats per sample
"""
from diffusion import likelihood, processes
from diffusion.samplers import sample
from diffusion.conditioning import inpaint

__all__ = ["processes", "sample", "likelihood", "inpaint"]
__version__ = "0.1.0"
