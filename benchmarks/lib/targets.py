"""Exact targets: Gaussian mixtures whose score is known in closed form (so every error is the solver's), the
processes they are sampled under, and the Frechet distance of a sample set scored against the exact-sample floor."""
from __future__ import annotations

import argparse

import torch
from torch import Tensor

from diffusion import processes
from diffusion.evaluation.frechet import frechet_distance_to
from diffusion.toy import GaussianMixture

#: the processes of the few-step head to head; the peers run on the first three
PROCESSES = {"DDPM": lambda: processes.DDPM("linear", 1000), "VP": processes.VPSDE, "EDM": processes.EDM,
             "sub-VP": processes.SubVPSDE, "VE": processes.VESDE, "RF": processes.RectifiedFlow}


class Target:
    """The mixture, its exact moments, and the exact-sample floor: the mean FD of ``draws`` independent sets of n
    exact samples to the exact moments (n exact samples score above 0 too)."""

    def __init__(self, gm: GaussianMixture, n: int, draws: int, seed: int):
        self.gm, self.n = gm, n
        self.mu, self.cov = gm.mean(), gm.cov()
        g = torch.Generator().manual_seed(seed + 1)
        fds = torch.tensor([frechet_distance_to(gm.sample(n, g), self.mu, self.cov) for _ in range(draws)])
        self.floor, self.floor_std = float(fds.mean()), float(fds.std()) if draws > 1 else float("nan")

    def ratio(self, x: Tensor) -> float:
        """FD(x) / floor: 1 is as close as n exact samples; NaN when x is not finite."""
        if not torch.isfinite(x).all():
            return float("nan")
        return frechet_distance_to(x.reshape(x.shape[0], -1).double(), self.mu, self.cov) / self.floor


def narrow_mixture(dim: int = 64, k: int = 4, scale: tuple[float, float] = (0.01, 0.1), seed: int = 0) -> GaussianMixture:
    """The quality benchmark's target: narrow components (per-axis std 0.01 to 0.1, random rotations) around means
    of spread 1, so the score is sharply multimodal at low noise."""
    return GaussianMixture.random(dim, k=k, scale=scale, seed=seed)


def add_mixture_flags(p: argparse.ArgumentParser) -> None:
    """``narrow_mixture``'s shape as flags: --dim, --k, --scale."""
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=4, help="mixture components")
    p.add_argument("--scale", type=float, nargs=2, default=(0.01, 0.1), help="range of the components' per-axis std")


def fewstep_mixtures(seed: int = 0) -> dict[str, GaussianMixture]:
    """The few-step head to head's targets, of different shapes: dimension, component widths and weights."""
    skewed = GaussianMixture.random(8, k=4, scale=(0.03, 0.3), seed=seed + 7)
    skewed = GaussianMixture(torch.tensor([0.7, 0.2, 0.07, 0.03], dtype=torch.float64), skewed.means, skewed.covs)
    return {"64-D, 4 narrow (0.01-0.1)": narrow_mixture(seed=seed),
            "16-D, 8 wide (0.1-0.5)": GaussianMixture.random(16, k=8, scale=(0.1, 0.5), seed=seed + 1),
            "8-D, 4 skewed weights 0.7/0.2/0.07/0.03": skewed,
            "2-D, 3 (0.1-0.3)": GaussianMixture.random(2, k=3, scale=(0.1, 0.3), seed=seed)}
