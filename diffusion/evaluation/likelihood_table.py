r"""Side by side on the same images: the exact likelihood of the probability-flow ODE and the variational bound.

Both are reported in bits per dimension of the 8-bit data, with uniform dequantization (Theis et al. 2016;
Ho et al. 2020 sec. 3.3): every image u in {0..255}^D becomes x = dequantize(u) in [-1, 1], and

    bits/dim = ( E_U[-log p(x)] + D log(scale) ) / (D log 2),

an upper bound on the discrete model's -log2 P(u) / D (``diffusion.likelihood.bits_per_dim`` adds the change
of scale from [-1, 1] to the 256 integer bins). The two estimators see the very same dequantized x.

Errors. Each image gives one estimate b_i (for the bound and for Hutchinson's divergence, a Monte-Carlo one).
The reported mean's standard error is std(b_i) / sqrt(n) across images: it already contains the Monte-Carlo
noise, since that noise is part of each b_i. Where the estimator reports its own Monte-Carlo error per image
s_i (several Hutchinson probes; the bound's time samples), its share sqrt(sum s_i^2) / n is shown separately.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.runs.store import json_safe
from diffusion.processes.base import Process
from diffusion.utils import derive_seed


@dataclass
class Estimate:
    """Per-image bits/dim of one estimator, with its Monte-Carlo errors (NaN where unknown) and its cost."""

    name: str
    detail: str
    bpd: Tensor  # (n,) float64
    mc_stderr: Tensor  # (n,) float64, in bits/dim; 0 for exact, NaN where not estimated
    nfe: float  # model evaluations per batch (mean over batches)
    seconds: float

    @property
    def mean(self) -> float:
        return float(self.bpd.mean())

    @property
    def stderr(self) -> float:
        n = len(self.bpd)
        return float(self.bpd.std() / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def mc(self) -> float:
        """Monte-Carlo standard error of the mean, sqrt(sum s_i^2) / n (NaN if the estimator gives none)."""
        return float(self.mc_stderr.pow(2).sum().sqrt() / len(self.mc_stderr))

    def summary(self) -> dict[str, Any]:
        return {"estimator": self.name, "detail": self.detail, "bits_per_dim": self.mean, "stderr": self.stderr,
                "mc_stderr": self.mc, "nfe": self.nfe, "seconds": self.seconds}


@dataclass
class LikelihoodTable:
    """The estimates of ``likelihood_table`` plus what they were computed on."""

    estimates: list[Estimate]
    n: int
    dims: int
    settings: dict[str, Any]
    x: Tensor | None = field(default=None, repr=False)  # the dequantized images both estimators saw

    def __getitem__(self, name: str) -> Estimate:
        for e in self.estimates:
            if e.name == name:
                return e
        raise KeyError(name)

    def to_markdown(self) -> str:
        head = (f"Likelihood on {self.n} images ({self.dims} dims), uniformly dequantized; "
                f"bits/dim ± standard error across images (MC: Monte-Carlo share).\n\n")
        rows = ["| estimator | settings | bits/dim | ± (images) | ± (MC) | NFE | seconds |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for e in self.estimates:
            rows.append(f"| {e.name} | {e.detail} | {e.mean:.4f} | {_fmt(e.stderr)} | {_fmt(e.mc)} | "
                        f"{e.nfe:.0f} | {e.seconds:.1f} |")
        return head + "\n".join(rows) + "\n"

    def to_json(self) -> str:
        return json.dumps(json_safe({"n": self.n, "dims": self.dims, "settings": self.settings,
                                     "estimates": [e.summary() for e in self.estimates],
                                     "per_image_bits_per_dim": {e.name: e.bpd.tolist() for e in self.estimates}}),
                          indent=2, allow_nan=False)


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.4f}"


def _mc(stats: dict | None, n: int, dims: int) -> Tensor:
    """Per-image Monte-Carlo stderr in bits/dim from an estimator's stats (NaN if it reports none)."""
    s = None if stats is None else stats.get("stderr")
    if s is None:
        return torch.full((n,), float("nan"), dtype=torch.float64)
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1).cpu()
    if s.numel() == 1:
        s = s.expand(n)
    return s / (dims * math.log(2))


def likelihood_table(process: Process, model: Callable[..., Tensor], images: Tensor, *, ode: bool = True,
                     bound: bool = True, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                     divergence: str = "exact", probes: int = 1, t_samples: int | None = None,
                     batch_size: int = 64, seed: int = 0,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     progress: bool = False) -> LikelihoodTable:
    """Bits/dim of uint8 ``images`` (n, C, H, W) under ``model`` by the ODE NLL and by the variational bound.

    All images are dequantized once with a CPU generator seeded with ``seed`` (so ``dequantize(images,
    Generator().manual_seed(seed))`` reproduces ``table.x``); batches of ``batch_size`` then go through
    ``likelihood.ode_nll(method, rtol, atol, divergence, probes)`` and ``likelihood.variational_bound(t_samples)``
    (None: its default, all N terms for DDPM, 256 stratified times for an SDE) on ``device`` in ``dtype``; their own randomness (probes, bound's times and noise) comes from one generator
    per estimator seeded with ``derive_seed(seed, "likelihood_table", <estimator name>)``.
    """
    from diffusion import likelihood

    if images.dtype != torch.uint8:
        raise ValueError(f"likelihood_table takes the raw uint8 images, got {images.dtype}: pass the data set with as_uint8=True")
    if not (ode or bound):
        raise EvaluationError("nothing to compute: enable ode or bound")
    n, dims = images.shape[0], images[0].numel()
    x = likelihood.dequantize(images, torch.Generator().manual_seed(seed)).to(dtype)
    estimates = []
    runs: list[tuple[str, str, Callable]] = []
    if ode:
        detail = f"{method}, rtol={rtol:g}, atol={atol:g}, {divergence}" + (f" ({probes} probe{'s' if probes > 1 else ''})" if divergence == "hutchinson" else "")
        runs.append(("ODE NLL", detail, lambda xb, g: likelihood.ode_nll(
            process, model, xb, divergence=divergence, probes=probes, rtol=rtol, atol=atol, method=method,
            generator=g, return_stats=True)))
    if bound:
        detail = f"{process!r}" + (f", {t_samples} time samples" if t_samples else "")
        runs.append(("variational bound", detail, lambda xb, g: likelihood.variational_bound(
            process, model, xb, generator=g, t_samples=t_samples, return_stats=True)))
    for name, detail, fn in runs:
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "likelihood_table", name))
        nlls, mcs, nfes = [], [], []
        start = time.perf_counter()
        batches = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=name, unit="batch", dynamic_ncols=True)
        for lo in batches:
            xb = x[lo:lo + batch_size].to(device)
            out = fn(xb, generator)
            nll, stats = out if isinstance(out, tuple) else (out, None)
            nlls.append(nll.detach().double().cpu())
            mcs.append(_mc(stats, len(xb), dims))
            if stats is not None and "nfe" in stats:
                nfes.append(float(stats["nfe"]))
        seconds = time.perf_counter() - start
        bpd = likelihood.bits_per_dim(torch.cat(nlls), dims).double()
        estimates.append(Estimate(name, detail, bpd, torch.cat(mcs), float(sum(nfes) / len(nfes)) if nfes else float("nan"), seconds))
    settings = {"method": method, "rtol": rtol, "atol": atol, "divergence": divergence, "probes": probes,
                "t_samples": t_samples, "batch_size": batch_size, "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                "process": repr(process)}
    return LikelihoodTable(estimates, n, dims, settings, x)
