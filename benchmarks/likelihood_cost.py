r"""Time and standard error of every likelihood estimator on a trained MNIST model, and the DDPM bounds by chain length.

    python benchmarks/likelihood_cost.py --ckpt runs/<run>                 # cost table (likelihood_cost.md)
    python benchmarks/likelihood_cost.py --ckpt runs/<run> --bounds        # bounds by K (likelihood_bounds.md)

**Cost.** On ``--n`` dequantized test digits (one batch), each estimator's bits/dim, the standard error across images
(what the table's "±" is), its Monte Carlo share (from the estimator's own per-image error), NFE per image and the
wall and CPU seconds of the batch. The exact-trace ODE costs d = 784 vector-Jacobian products per evaluation, so it is
timed for ``--exact-evals`` right-hand-side evaluations and extrapolated to the NFE the Hutchinson run needed at the
same tolerance (marked "extrapolated"). The uniform DDPM estimator (the former ``t_samples``) is measured beside the
importance-sampled one at the same NFE.

**Bounds.** The DDPM bound of the K-step chain, K in ``--steps``, with reverse variances beta, beta_tilde and analytic
(Gamma from ``<run>/eval/gamma_ema.json`` or estimated), all from the same model evaluations, each with its SE.
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion.device import describe_machine  # noqa: E402
from diffusion import likelihood  # noqa: E402
from diffusion.runs import load_run  # noqa: E402
from diffusion.evaluation.likelihood_table import stored_gamma  # noqa: E402
from diffusion.evaluation.quality import dataset_images  # noqa: E402
from diffusion.likelihood.analytic import gamma_path  # noqa: E402
from diffusion.likelihood.bound import ddpm_chain_bounds, sde_bound  # noqa: E402
from diffusion.likelihood.ode import exact_divergence  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    w, c = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - w, cpu_seconds() - c


def bpd_stats(nll: torch.Tensor, mc: torch.Tensor | None, d: int) -> tuple[float, float, float]:
    b = likelihood.bits_per_dim(nll.double(), d)
    scale = d * math.log(2)
    mc_se = float("nan") if mc is None else float(mc.double().pow(2).sum().sqrt() / len(nll) / scale)
    return float(b.mean()), float(b.std() / math.sqrt(len(b))), mc_se


def machine() -> str:
    return f"{describe_machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def cost_table(process, model, x, d, args) -> list[str]:
    rows = ["| estimator | settings | bits/dim | ± images | ± MC | NFE/image | wall s | CPU s |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]

    def row(name, settings, nll, mc, nfe, wall, cpu, note=""):
        m, se, mc_se = bpd_stats(nll, mc, d)
        rows.append(f"| {name} | {settings} | {m:.3f} | {se:.3f} | {'n/a' if mc_se != mc_se else f'{mc_se:.3f}'} | "
                    f"{nfe:.0f} | {wall:.0f}{note} | {cpu:.0f}{note} |")
        print(rows[-1], flush=True)

    hutch_nfe = {}
    for K, k, sampling in args.ddpm:
        xs = x[: args.full_n] if K is None and k is None else x  # the 1000-term sum: fewer images
        (out, nfe), w, c = timed(lambda: ddpm_chain_bounds(process, model, xs, steps=K, variances=("beta_tilde",), t_samples=k,
                                                           sampling=sampling, generator=torch.Generator().manual_seed(3)))
        how = (f"every term ({len(xs)} images)" if k is None else "")
        how = how or f"{k} {'importance-sampled steps + 2 decoder draws' if sampling == 'importance' else 'uniform terms (former estimator)'}"
        row("DDPM bound", f"K={K or process.num_steps}, beta_tilde, {how}", out["beta_tilde"][0], out["beta_tilde"][1], nfe, w, c)
    for k in args.sde:
        (b, se, nfe), w, c = timed(lambda: sde_bound(process, model, x, generator=torch.Generator().manual_seed(2), t_samples=k))
        row("SDE bound", f"{k} strata x 2 antithetic pairs", b, se, nfe, w, c)
    if args.exact_evals:
        tol = args.ode[0][0]
        xx = x[:1].clone().requires_grad_(True)  # one image: the cost is per image
        t = torch.full((1,), 100.0)

        def evals():
            for _ in range(args.exact_evals):
                with torch.enable_grad():
                    exact_divergence(model(xx, t), xx)
        _, w, c = timed(evals)
        nfe = hutch_nfe.get(tol, args.ode_nfe_guess)
        rows.append(f"| ODE NLL | dopri5 rtol=atol={tol:g}, exact trace ({d} VJPs per evaluation) | - | - | 0 | ~{nfe} | "
                    f"{w / args.exact_evals * nfe * len(x):.0f} (extrapolated) | {c / args.exact_evals * nfe * len(x):.0f} (extrapolated) |")
        print(rows[-1], flush=True)
    for tol, probes in args.ode:
        (nll, st), w, c = timed(lambda: likelihood.ode_nll(process, model, x, divergence="hutchinson", probes=probes, rtol=tol,
                                                          atol=tol, generator=torch.Generator().manual_seed(1), return_stats=True))
        hutch_nfe[tol] = st["nfe"]
        row("ODE NLL", f"dopri5 rtol=atol={tol:g}, Hutchinson {probes} probe{'s' if probes > 1 else ''}", nll, st["stderr"],
            st["nfe"], w, c)
    return rows


def bounds_table(process, model, x, d, gamma, args) -> list[str]:
    rows = ["| K | NFE/image | beta | beta_tilde | analytic |", "|---:|---:|---:|---:|---:|"]
    for K in args.steps:
        k = None if K <= args.full_below else args.bound_samples
        (out, nfe), w, _ = timed(lambda: ddpm_chain_bounds(process, model, x, steps=K, variances=("beta", "beta_tilde", "analytic"),
                                                           gamma=gamma, t_samples=k, generator=torch.Generator().manual_seed(4),
                                                           data_bounds=(-1.0, 1.0)))
        cells = []
        for v in ("beta", "beta_tilde", "analytic"):
            m, se, _ = bpd_stats(out[v][0], out[v][1], d)
            cells.append(f"{m:.2f} ± {se:.2f}")
        rows.append(f"| {K} | {nfe} ({'every term' if k is None else f'{k} sampled'}) | " + " | ".join(cells) + " |")
        print(rows[-1], f"({w:.0f} s)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--n", type=int, default=8, help="test digits (one batch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bounds", action="store_true", help="the bounds-by-K table instead of the cost table")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--full-below", type=int, default=100, help="chains up to this K use every term; longer ones sample")
    p.add_argument("--bound-samples", type=int, default=64)
    p.add_argument("--exact-evals", type=int, default=1)
    p.add_argument("--full-n", type=int, default=2, help="images for the 1000-term DDPM bound (1000 NFE each)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ode-nfe-guess", type=int, default=74, help="NFE for the exact-trace extrapolation (measured: 74 at 1e-3)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.ode = [(1e-3, 2), (1e-2, 2), (1e-3, 1)] if not args.quick else [(1e-2, 1)]
    args.sde = [8, 16] if not args.quick else [4]
    args.ddpm = ([(None, 16, "importance"), (None, 18, "uniform"), (None, 64, "importance"), (10, None, "importance"),
                  (10, 4, "importance"), (None, None, "importance")] if not args.quick else [(None, 4, "importance")])
    trained = load_run(args.ckpt, True, torch.device("cpu"))
    model, process, path = trained.model, trained.process, trained.path
    images = dataset_images(trained.data("test"))[: args.n]
    x = likelihood.dequantize(images, torch.Generator().manual_seed(0))
    d = x[0].numel()
    print(f"{path}, {process!r}, {len(x)} test digits; {machine()}", flush=True)
    if args.bounds:
        gamma = stored_gamma(process, model, gamma_path(trained.run_dir, True), str(path),
                             lambda: dataset_images(trained.data("train")))
        rows = bounds_table(process, model, x, d, gamma, args)
    else:
        rows = cost_table(process, model, x, d, args)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
