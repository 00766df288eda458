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

from diffusion.errors import ConfigError
from diffusion.processes.base import MARKOV_CHAIN, Process
from diffusion.runs.store import json_safe
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
        t_eps = self.settings.get("t_eps")
        head = (f"Likelihood on {self.n} images ({self.dims} dims), uniformly dequantized (x = (k + u)/128 - 1, "
                f"u ~ U[0,1)); bits/dim ± standard error across images (MC: its Monte-Carlo share). "
                + (f"The ODE NLL and the SDE bound are of the density at t_eps={t_eps:g}; " if t_eps is not None else "")
                + "DDPM bounds are of the clean data through the decoder. NFE: model evaluations per image "
                "(an ODE evaluation also takes one vector-Jacobian product per probe, or per dimension for the exact trace).\n\n")
        ref = next((e for e in self.estimates if e.name == "ODE NLL"), None)
        rows = ["| estimator | settings | bits/dim | ± (images) | ± (MC) | NFE | seconds |"
                + (" minus ODE NLL (paired) |" if ref is not None else ""),
                "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if ref is not None else "")]
        for e in self.estimates:
            row = (f"| {e.name} | {e.detail} | {e.mean:.4f} | {_fmt(e.stderr)} | {_fmt(e.mc)} | "
                   f"{e.nfe:.0f} | {e.seconds:.1f} |")
            if ref is not None:
                row += " |" if e is ref else f" {_paired(e, ref)} |"
            rows.append(row)
        note = ("\nThe last column compares each bound with the ODE NLL image by image (same dequantized images): its "
                "± is the standard error of the mean difference, much smaller than either figure's own.\n") if ref is not None and len(self.estimates) > 1 else ""
        return head + "\n".join(rows) + "\n" + note

    def to_json(self) -> str:
        return json.dumps(json_safe({"n": self.n, "dims": self.dims, "settings": self.settings,
                                     "estimates": [e.summary() for e in self.estimates],
                                     "per_image_bits_per_dim": {e.name: e.bpd.tolist() for e in self.estimates}}),
                          indent=2, allow_nan=False)


def _paired(e: Estimate, ref: Estimate) -> str:
    diff = e.bpd - ref.bpd
    se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return f"{float(diff.mean()):+.4f} ± {_fmt(se)}"


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


class _Progress:
    """One bar for the whole table, in image-evaluations of the model (an ODE right-hand side with the exact
    trace counts 1 + d, with P Hutchinson probes 1 + P: the vector-Jacobian products, each about a forward pass),
    so that its time left covers every estimator. The ODE's cost is guessed until its first batch is measured."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc="likelihood", unit="eval", unit_scale=True, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} image-evals [{elapsed}<{remaining}]")

    def plan(self, units: float) -> None:
        if self.bar is not None:
            self.bar.total = (self.bar.total or 0) + units
            self.bar.refresh()

    def desc(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def update(self, units: float) -> None:
        if self.bar is not None:
            self.bar.update(units)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


#: guessed ODE right-hand-side evaluations per batch (rescaled once the first batch is measured)
ODE_NFE_GUESS = 60


def likelihood_table(process: Process, model: Callable[..., Tensor], images: Tensor, *, ode: bool = True,
                     bound: bool = True, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                     divergence: str = "exact", probes: int = 1, t_samples: int | None = None,
                     batch_size: int = 64, seed: int = 0,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     progress: bool = False, sde_bound: bool = True, steps: int | None = None,
                     variances: tuple[str, ...] = ("beta_tilde", "analytic"), gamma=None,
                     data_bounds: tuple[float, float] | None = (-1.0, 1.0)) -> LikelihoodTable:
    """Bits/dim of uint8 ``images`` (n, C, H, W) under ``model`` by the ODE NLL and by variational bounds.

    All images are dequantized once (uniformly) with a CPU generator seeded with ``seed`` (so ``dequantize(images,
    Generator().manual_seed(seed))`` reproduces ``table.x``); batches of ``batch_size`` then go through
    ``likelihood.ode_nll(method, rtol, atol, divergence, probes)`` and the bounds on ``device`` in ``dtype``; each
    estimator's own randomness (probes, times, noise) comes from one generator seeded from ``seed``.

    Continuous processes: "ODE NLL" and "variational bound" (the SDE bound, ``t_samples`` stratified times,
    default 256). DDPM: "ODE NLL" (its continuous view, density at t_eps = 0), "SDE bound" (the same density, if
    ``sde_bound``), and the discrete bound on the clean data, "DDPM bound (K=.., variance)", for the full chain and,
    if ``steps`` is given, the ``steps``-step chain, for each of ``variances`` (``beta``, ``beta_tilde``,
    ``analytic``; analytic needs ``gamma``, a ``likelihood.Gamma``); ``t_samples`` importance-sampled steps
    (None: every term). All variances of one chain share its model evaluations.
    """
    from diffusion import likelihood
    from diffusion.likelihood.bound import SDE_T_SAMPLES, ddpm_chain_bounds

    if images.dtype != torch.uint8:
        raise ConfigError(f"likelihood_table takes the raw uint8 images, got {images.dtype}: pass the data set with as_uint8=True")
    if not (ode or bound):
        raise ConfigError("nothing to compute: enable ode or bound")
    n, dims = images.shape[0], images[0].numel()
    x = likelihood.dequantize(images, torch.Generator().manual_seed(seed)).to(dtype)
    estimates = []
    # (names, details, fn(xb, generator) -> {name: (nll, stats)}, expected image-evaluations per image)
    runs: list[tuple[list[str], list[str], Callable, float]] = []
    t_eps = process.t_eps
    bar = _Progress(progress)
    weight = [1.0]  # image-evaluations per image per model call of the running estimator

    def counted(x_t: Tensor, t: Tensor, *args, **kwargs) -> Tensor:
        bar.update(x_t.shape[0] * weight[0])
        return model(x_t, t, *args, **kwargs)

    if ode:
        detail = (f"{method}, rtol={rtol:g}, atol={atol:g}, {divergence}"
                  + (f" ({probes} probe{'s' if probes > 1 else ''})" if divergence == "hutchinson" else ""))
        per_eval = 1 + (dims if divergence == "exact" else probes)
        runs.append((["ODE NLL"], [detail], lambda xb, g: {"ODE NLL": likelihood.ode_nll(
            process, counted, xb, divergence=divergence, probes=probes, rtol=rtol, atol=atol, method=method,
            generator=g, return_stats=True)}, ODE_NFE_GUESS * per_eval))
    if bound and (MARKOV_CHAIN not in process.offers or sde_bound):
        k = SDE_T_SAMPLES if t_samples is None else t_samples
        name = "variational bound" if MARKOV_CHAIN not in process.offers else "SDE bound"
        detail = f"{process!r}, {k} stratified log-SNR times x 2 antithetic pairs"

        def sde(xb, g, k=k, name=name):
            from diffusion.likelihood.bound import sde_bound as sde_fn

            with torch.no_grad():
                b, se, nfe = sde_fn(process, counted, xb, generator=g, t_samples=k)
            return {name: (b, {"stderr": se, "nfe": nfe})}

        runs.append(([name], [detail], sde, 4 * k))
    if bound and MARKOV_CHAIN in process.offers:
        for K in [None] + ([int(steps)] if steps is not None and int(steps) != process.num_steps else []):
            label = process.num_steps if K is None else K
            names = [f"DDPM bound (K={label}, {v})" for v in variances]
            every = t_samples is None or t_samples + 2 >= label
            how = "every term" if every else f"{t_samples} importance-sampled steps + exact prior, 2 decoder draws"
            details = [f"{label}-step chain, reverse variance {v}, {how}"
                       + (" (model evaluations shared by the variances)" if len(variances) > 1 else "") for v in variances]

            def ddpm(xb, g, K=K, names=names):
                with torch.no_grad():
                    out, nfe = ddpm_chain_bounds(process, counted, xb, steps=K, variances=tuple(variances), gamma=gamma,
                                                 t_samples=t_samples, generator=g, data_bounds=data_bounds)
                return {nm: (out[v][0], {"stderr": out[v][1], "nfe": nfe}) for nm, v in zip(names, variances)}

            cost = label if every else t_samples + 2
            runs.append((names, details, ddpm, cost))
    for _, _, _, cost in runs:
        bar.plan(cost * n)
    for k, (names, details, fn, cost) in enumerate(runs):
        bar.desc(names[0])
        # one model call on b images costs b image-evaluations (times 1 + probes, or 1 + d, inside the ODE)
        weight[0] = cost / ODE_NFE_GUESS if names == ["ODE NLL"] else 1.0
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "likelihood_table", k))
        nlls = {nm: [] for nm in names}
        mcs = {nm: [] for nm in names}
        nfes = []
        start = time.perf_counter()
        for lo in range(0, n, batch_size):
            xb = x[lo:lo + batch_size].to(device)
            outs = fn(xb, generator)
            for nm, out in outs.items():
                nll, stats = out if isinstance(out, tuple) else (out, None)
                nlls[nm].append(nll.detach().double().cpu())
                mcs[nm].append(_mc(stats, len(xb), dims))
                if nm == names[0] and stats is not None and "nfe" in stats:
                    nfes.append(float(stats["nfe"]))
            if names == ["ODE NLL"] and lo == 0 and nfes:  # the ODE's cost is now known: re-plan the bar
                bar.plan((nfes[0] - ODE_NFE_GUESS) * weight[0] * n)
        seconds = time.perf_counter() - start
        for nm, detail in zip(names, details):
            bpd = likelihood.bits_per_dim(torch.cat(nlls[nm]), dims).double()
            estimates.append(Estimate(nm, detail, bpd, torch.cat(mcs[nm]), float(sum(nfes) / len(nfes)) if nfes else float("nan"),
                                      seconds))
    bar.close()
    settings = {"method": method, "rtol": rtol, "atol": atol, "divergence": divergence, "probes": probes,
                "t_samples": t_samples, "batch_size": batch_size, "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                "process": repr(process), "dequantization": "uniform", "t_eps": t_eps,
                "steps": steps, "variances": list(variances) if MARKOV_CHAIN in process.offers else None,
                "gamma": None if gamma is None else {"images_per_step": gamma.images_per_step, "grid": len(gamma.times),
                                                      **gamma.meta}}
    return LikelihoodTable(estimates, n, dims, settings, x)


def stored_gamma(process: Process, model: Callable[..., Tensor], path, checkpoint: str, train_images: Callable[[], Tensor], *,
                 steps: int = 100, images_per_step: int = 8, seed: int = 0, batch_size: int = 64,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, progress: bool = False,
                 log: Callable[[str], None] = print):
    """Analytic-DPM's Gamma for ``checkpoint``, read from ``path`` (JSON) when it was estimated for that checkpoint and
    process, else estimated (``likelihood.estimate_gamma`` on a ``steps`` grid, ``images_per_step`` dequantized training
    images per step, ``train_images()`` giving uint8 images) and saved there for samplers and later bounds."""
    from pathlib import Path

    from diffusion import likelihood
    from diffusion.likelihood.analytic import Gamma

    path = Path(path)
    if path.is_file():
        gamma = Gamma.load(path)
        if gamma.meta.get("checkpoint") == checkpoint and gamma.process == repr(process):
            log(f"Gamma from {path}")
            return gamma
        log(f"{path} was estimated for {gamma.meta.get('checkpoint')} ({gamma.process}): estimating it again")
    images = train_images()
    if images.dtype != torch.uint8:
        raise ConfigError(f"Gamma is estimated from raw uint8 training images, got {images.dtype}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)[: steps * images_per_step]
    x = likelihood.dequantize(images[order], generator).to(device=device, dtype=dtype)
    start = time.perf_counter()
    gamma = likelihood.estimate_gamma(process, model, x, steps=steps, generator=torch.Generator(device=device).manual_seed(seed),
                                      images_per_step=images_per_step, batch_size=batch_size, progress=progress)
    gamma.meta.update(checkpoint=checkpoint, seed=seed, seconds=time.perf_counter() - start, split="train",
                      dequantization="uniform")
    gamma.save(path)
    log(f"estimated Gamma on a {steps}-step grid from {images_per_step} training images per step "
        f"({steps * images_per_step} model rows, {gamma.meta['seconds']:.0f} s); saved {path}")
    return gamma

