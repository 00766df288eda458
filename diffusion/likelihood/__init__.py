"""Likelihoods: exact NLL through the probability-flow ODE, variational bounds, and bits/dim."""
from diffusion.likelihood.analytic import Gamma, estimate_gamma, optimal_variance
from diffusion.likelihood.bits import bits_per_dim, dequantize
from diffusion.likelihood.bound import bound_cost, variational_bound
from diffusion.likelihood.ode import ode_nll

__all__ = ["ode_nll", "variational_bound", "bound_cost", "bits_per_dim", "dequantize", "estimate_gamma", "Gamma",
           "optimal_variance"]
