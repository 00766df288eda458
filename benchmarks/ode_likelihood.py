r"""The probability-flow ODE likelihood's accuracy and cost on an exact target: exact trace, Hutchinson, a prototype
Hutch++ and score_sde_pytorch, against the closed-form log-density.

    python benchmarks/ode_likelihood.py                # defaults: ~3 minutes on 2 shared CPU cores
    python benchmarks/ode_likelihood.py --quick        # smoke run (under a minute)
    python benchmarks/ode_likelihood.py --repeats 32   # tighter standard deviations

On exact samples of ``GaussianMixture.random(dim, k, scale)`` (the narrow mixture of ``samplers.py``), the error of
``likelihood.ode_nll`` against the exact ``gm.marginal_log_prob(process, x, process.t_eps)`` in nats/dim, its NFE
and seconds, at rtol = atol in ``--tols``, with the exact trace and Hutchinson's estimate (1, 4, 16 batched
probes), beside score_sde_pytorch's ``likelihood.get_likelihood_fn`` (``--score-sde-path``; scipy RK45, one
Rademacher probe) on the same model, and a prototype Hutch++ divergence (``lib/hutchpp.py``; Meyer et al. 2021):
same ODE, the probe budget spent on a rank-m sketch whose trace is exact plus Hutchinson on the deflated rest. The
Hutchinson rows give the standard deviation of each sample's estimate across ``--repeats`` independent probe draws,
and "var x s" = variance (nats/dim)^2 x seconds per run: the cost of a given accuracy, lower is better.

Writes the ``likelihood`` section of ``benchmarks/samplers.md``. Timings are noisy on a shared machine: compare
ratios within one run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion import likelihood, processes  # noqa: E402
from diffusion.samplers import encode  # noqa: E402

from benchmarks.lib import peers  # noqa: E402
from benchmarks.lib.hutchpp import hutchpp_in_ode_nll  # noqa: E402
from benchmarks.lib.report import add_common_flags, begin, command, footer, machine, publish  # noqa: E402
from benchmarks.lib.targets import add_mixture_flags, narrow_mixture  # noqa: E402


def likelihood_section(args) -> list[str]:
    """Every row on the same exact samples; returns the markdown lines."""
    d = args.dim
    gm = narrow_mixture(d, args.k, tuple(args.scale), args.seed)
    vp = processes.VPSDE()
    eps = gm.eps_model(vp)
    g = torch.Generator().manual_seed(args.seed + 3)
    x = gm.sample(args.batch, g)  # float64
    # The model's density uses the prior N(0, I) at t = 1, not the exact p_1 (alpha(1) = 0.0066 > 0): that gap is
    # the same for every method and no solver's doing, so it is measured once (x_T by a tight ODE solve) and removed.
    x_T = encode(vp, eps, x, rtol=1e-8, atol=1e-8, t_min=vp.t_eps)
    prior_gap = vp.prior_log_prob(x_T) - gm.marginal_log_prob(vp, x_T, vp.t_max)
    exact = -gm.marginal_log_prob(vp, x, vp.t_eps) - prior_gap  # the exact NLL under the N(0, I) prior
    R = args.repeats
    rows = []

    def ours_run(x_in, tol, divergence, probes, seed):
        t0 = time.perf_counter()
        nll, stats = likelihood.ode_nll(vp, eps, x_in, divergence=divergence, probes=probes, rtol=tol, atol=tol,
                                        generator=torch.Generator().manual_seed(seed), return_stats=True)
        return nll.double(), stats["nfe"], time.perf_counter() - t0

    def record(label, tol, runs):
        errs = torch.stack([(nll - exact) / d for nll, _, _ in runs])  # (repeats, batch)
        nfe = sum(k for _, k, _ in runs) / len(runs)
        sec = sum(s for _, _, s in runs) / len(runs)
        std = float(errs.std(0).mean()) if len(runs) > 1 else 0.0
        rows.append(dict(label=label, tol=tol, bias=float(errs.mean()), abs=float(errs.abs().mean()),
                         max=float(errs.abs().max()), std=std, nfe=nfe, sec=sec, runs=len(runs)))
        r = rows[-1]
        print(f"  {label:<40s} tol {tol:g}: mean err {r['bias']:+.2e}, mean |err| {r['abs']:.2e}, "
              f"std {r['std']:.2e} nats/dim, NFE {nfe:.0f}, {sec:.2f} s", flush=True)

    print(f"\nODE likelihood, {d}-D, batch {args.batch}, nats/dim", flush=True)
    peer = peers.load_score_sde(args.score_sde_path)
    for tol in args.tols:
        record("ours exact trace (float64)", tol, [ours_run(x, tol, "exact", 1, 0)])
        record("ours exact trace (float32)", tol, [ours_run(x.float(), tol, "exact", 1, 0)])
        for probes in args.probes:
            record(f"ours Hutchinson, {probes} probe{'s' * (probes > 1)} (batched)", tol,
                   [ours_run(x.float(), tol, "hutchinson", probes, s) for s in range(R)])
        with hutchpp_in_ode_nll():
            for probes in args.hutchpp_probes:
                record(f"prototype Hutch++, {probes} probes (m = {probes // 3})", tol,
                       [ours_run(x.float(), tol, "hutchinson", probes, s) for s in range(R)])
        if peer is not None:
            lik, sde_lib = peer
            record("score_sde_pytorch, 1 probe (RK45)", tol, [peers.score_sde_nll(lik, sde_lib, eps, x, d, tol, s) for s in range(R)])

    lines = [f"## Probability-flow ODE likelihood (VP SDE, t_eps = 1e-5), {d}-D mixture, {args.batch} exact samples",
             "", "Error = ode_nll - exact, nats/dim, where exact = -log p_{t_eps}(x) (closed form) corrected by the prior "
             "mismatch log N(x_T; 0, I) - log p_1(x_T) along the exact flow (x_T by `encode` at rtol 1e-8): mean |gap| "
             f"{float(prior_gap.abs().mean()) / d:.2e} nats/dim, max {float(prior_gap.abs().max()) / d:.2e}; it is the "
             "same for every method and would otherwise hide the solver error. Hutchinson rows: error mean and std over "
             f"{R} independent probe draws per sample (std averaged over the samples); var x s = std^2 x seconds "
             "(cost of a given accuracy, lower is better). Our Hutchinson and Hutch++ runs use float32 data like "
             "score_sde_pytorch (which casts to float32).", "",
             "| method | rtol = atol | mean err | mean abs err | max abs err | std (probe draws) | NFE | s / run | var x s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        var_s = f"{r['std'] ** 2 * r['sec']:.2e}" if r["std"] > 0 else "-"
        std = f"{r['std']:.2e}" if r["std"] > 0 else "-"
        lines.append(f"| {r['label']} | {r['tol']:g} | {r['bias']:+.2e} | {r['abs']:.2e} | {r['max']:.2e} | {std} | "
                     f"{r['nfe']:.0f} | {r['sec']:.2f} | {var_s} |")
    return lines + [""]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p, samples=False, peers=("score_sde_path",))
    add_mixture_flags(p)
    p.add_argument("--batch", type=int, default=32, help="exact samples whose NLL is computed")
    p.add_argument("--repeats", type=int, default=8, help="probe draws per Hutchinson configuration")
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-5])
    p.add_argument("--probes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--hutchpp-probes", type=int, nargs="+", default=[12])
    p.add_argument("--quick", action="store_true", help="smoke run: a small batch, fewer repeats, one tolerance")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.tols, args.probes = min(args.batch, 8), 3, [1e-3], [1, 4]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    started = begin(args.threads, f"ODE likelihood of {args.batch} exact samples of a {args.dim}-D mixture at rtol = atol "
                    f"in {args.tols}, {args.repeats} probe draws per Hutchinson row "
                    f"({'under a minute' if args.quick else '~3 minutes'} on 2 CPU cores)")
    lines = likelihood_section(args)
    publish(args.out, "likelihood", [f"Generated by `{command(argv)}`; " + machine(), ""] + lines + footer(started))


if __name__ == "__main__":
    main()
