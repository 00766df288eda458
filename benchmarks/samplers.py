r"""Sampler quality against NFE on an exact target: ours and the peers, 5 to 1000 NFE, on the VP SDE and DDPM.

    python benchmarks/samplers.py                  # defaults: ~5 minutes on 2 shared CPU cores
    python benchmarks/samplers.py --quick          # smoke run (a minute or two)
    python benchmarks/samplers.py --n 4000 --peer-max-nfe 1000     # bigger

**Target.** ``GaussianMixture.random(dim, k, scale=(0.01, 0.1))``: narrow components (per-axis std 0.01 to 0.1,
random rotations) around means of spread 1, so the score is sharply multimodal at low noise. The model is the
exact noise predictor ``gm.eps_model(process)``: every error below is the solver's, none is the network's.

**Sample quality.** Every sampler starts from the same x_T (n draws of the prior) and its output is scored by
the Frechet distance of its Gaussian fit to the exact mixture moments. n exact mixture samples score above 0 too
(finite-sample error): the *exact-sample floor* is the mean FD of ``--floor-draws`` independent sets of n exact
samples. Tables and the plot give FD / floor; 1 is as good as n samples can show. NFE is counted by
``CountingModel`` (peers: by the same counter around the model they call).

Ours, on the VP SDE (beta 0.1..20, t_min 1e-3): ``ddim``, ``euler_maruyama``, ``pc`` (1 corrector step, NFE =
2 x steps), ``dpmpp_2m`` (default spacing; ``--spacings`` are compared in their own table), ``ode`` (dopri5 over
a sweep of rtol = atol; NFE as counted). On DDPM(linear, 1000): ``ddpm``, ``ddim``, ``dpmpp_2m``.

Peers, on the same model and x_T (``lib/peers.py``; each skipped with a note when unavailable):
* official DPM-Solver++(2M) (Lu et al.'s ``dpm_solver_pytorch.py``, ``--dpm-solver-path``), VP linear schedule,
  multistep order 2, lower_order_final, t_end = 1e-3, every skip_type, and both endpoints: ``steps = NFE`` ending
  at t_end (no denoising) or ``steps = NFE - 1`` plus ``denoise_to_zero`` (our endpoint: x0_pred at t_min);
* diffusers ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2), ``UniPCMultistepScheduler`` and
  ``DDIMScheduler`` (timestep_spacing="trailing", so that the first step starts at the prior, and clip_sample=False:
  its default clips x0_pred to [-1, 1], which the mixture exceeds) on DDPM(linear, 1000);
* k-diffusion ``sample_dpmpp_2m``, ``sample_euler``, ``sample_heun``, ``sample_lms`` on Karras sigmas (rho 7) from
  sigma_max = sigma(1)/alpha(1) to sigma_min = sigma(1e-3)/alpha(1e-3), our VP eps model wrapped as an EDM
  denoiser D(x, s) = x - s eps(alpha x, t(s)) with x = x_VP / alpha.
A head to head at a few NFE over ``--h2h-seeds`` x_T draws and the aims judged on it close the section.

Writes the ``quality`` section of ``benchmarks/samplers.md`` and the plot ``benchmarks/samplers.png``. (The few-step
head to head is ``fewstep.py``, the ODE likelihood ``ode_likelihood.py``, the README's plot
``plot_quality_vs_nfe.py``.)
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion import processes  # noqa: E402
from diffusion.samplers import CountingModel, sample  # noqa: E402

from benchmarks.lib import peers  # noqa: E402
from benchmarks.lib.report import add_common_flags, begin, command, footer, machine, note, publish  # noqa: E402
from benchmarks.lib.runs import Run, cell, default_spacing, nan_inf, ours, r3, sweep  # noqa: E402
from benchmarks.lib.targets import Target, add_mixture_flags, narrow_mixture  # noqa: E402

NFES = (5, 10, 20, 50, 100, 200, 500, 1000)
SPACINGS = ("logsnr", "uniform", "quadratic", "karras")
ODE_TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def quality_section(args, target: Target) -> tuple[list[str], dict]:
    """Every sweep on one x_T: ours and the peers on VP and DDPM, the ODE sampler over tolerances, dpmpp_2m's time
    grids, then the head to head over several x_T and its aims. Returns (markdown lines, data for the plot)."""
    gm, n, dim = target.gm, args.n, args.dim
    vp, ddpm = processes.VPSDE(), processes.DDPM("linear", 1000)
    eps_vp, eps_ddpm = gm.eps_model(vp), gm.eps_model(ddpm)
    x_T = vp.prior_sample((n, dim), torch.Generator().manual_seed(args.seed + 2))
    all_nfes = [k for k in args.nfes]
    peer_nfes = [k for k in all_nfes if k <= args.peer_max_nfe]
    groups: dict[str, dict] = {"VP SDE": {}, "DDPM(linear, 1000)": {}}
    vp_res, dd_res = groups["VP SDE"], groups["DDPM(linear, 1000)"]
    default_grid = default_spacing("dpmpp_2m")

    print(f"\nFD / floor (floor = {target.floor:.4g}; n = {n}, d = {dim})", flush=True)
    t0 = time.perf_counter()
    sweep(f"ours dpmpp_2m ({default_grid})", ours(vp, eps_vp, x_T, "dpmpp_2m"), all_nfes, target, vp_res)
    sweep("ours ddim", ours(vp, eps_vp, x_T, "ddim"), all_nfes, target, vp_res)
    sweep("ours euler_maruyama", ours(vp, eps_vp, x_T, "euler_maruyama"), all_nfes, target, vp_res)
    sweep("ours pc (1 corrector)", ours(vp, eps_vp, x_T, "pc", steps_for=lambda k: max(k // 2, 1)),
          all_nfes, target, vp_res)
    official = peers.load_official(args.dpm_solver_path)
    if official is not None:
        for skip in ("logSNR", "time_uniform", "time_quadratic"):
            for denoise in (True, False):
                end = "denoise_to_zero" if denoise else "ends at t_end"
                sweep(f"official DPM-Solver++(2M) ({skip}, {end})",
                      peers.official_dpm_solver(official, eps_vp, vp, x_T, skip, denoise=denoise), peer_nfes, target, vp_res)
    kd = peers.load_k_diffusion()
    if kd is not None:
        for fn in ("sample_dpmpp_2m", "sample_euler", "sample_heun", "sample_lms"):
            sweep(f"k-diffusion {fn.removeprefix('sample_')} (karras)", peers.k_diffusion_run(kd, fn, eps_vp, vp, x_T),
                  peer_nfes, target, vp_res)
    print(f"  [VP group: {time.perf_counter() - t0:.0f} s]", flush=True)

    t0 = time.perf_counter()
    sweep(f"ours dpmpp_2m ({default_grid}) [DDPM]", ours(ddpm, eps_ddpm, x_T, "dpmpp_2m"), all_nfes, target, dd_res)
    sweep("ours ddpm [DDPM]", ours(ddpm, eps_ddpm, x_T, "ddpm"), all_nfes, target, dd_res)
    sweep("ours ddim [DDPM]", ours(ddpm, eps_ddpm, x_T, "ddim"), all_nfes, target, dd_res)
    try:
        import diffusers
        for label, cls, config in (
                ("diffusers DPMSolverMultistep (++, 2M)", diffusers.DPMSolverMultistepScheduler,
                 dict(algorithm_type="dpmsolver++", solver_order=2)),
                ("diffusers UniPCMultistep", diffusers.UniPCMultistepScheduler, {}),
                ("diffusers DDIM (trailing)", diffusers.DDIMScheduler,
                 dict(timestep_spacing="trailing", clip_sample=False))):
            sweep(label, peers.diffusers_run(cls, eps_ddpm, x_T, **config), peer_nfes, target, dd_res)
    except ImportError as err:
        note(f"diffusers skipped: {err}")
    print(f"  [DDPM group: {time.perf_counter() - t0:.0f} s]", flush=True)

    # the ODE sampler's NFE is the adaptive solver's; one row per tolerance
    ode_rows = []
    for tol in args.ode_tols:
        counter = CountingModel(eps_vp)
        x = sample(vp, counter, None, sampler="ode", x_T=x_T, rtol=tol, atol=tol)
        ode_rows.append((tol, counter.nfe, target.ratio(x)))
        print(f"  ours ode (dopri5) rtol=atol={tol:g}: NFE {counter.nfe}, FD/floor {ode_rows[-1][2]:.3g}", flush=True)

    # time grids of dpmpp_2m
    spacing_rows = {}
    for pname, proc, eps in (("VP SDE", vp, eps_vp), ("DDPM", ddpm, eps_ddpm)):
        for spacing in args.spacings:
            res: dict = {}
            sweep(f"dpmpp_2m spacing={spacing} [{pname}]", ours(proc, eps, x_T, "dpmpp_2m", spacing=spacing),
                  args.spacing_nfes, target, res)
            spacing_rows[(pname, spacing)] = next(iter(res.values()))

    lines = [f"## Sample quality: FD / exact-sample floor (1 = as close as {n} exact samples)", "",
             f"Floor: FD of {n} exact mixture samples to the exact moments = {target.floor:.4g} "
             f"(std {target.floor_std:.2g} over {args.floor_draws} draws). Same x_T for every row. "
             "A cell `r (k)` ran k NFE instead of the column's; `n/a`: the configuration cannot run there. "
             "The FD of n samples is dominated by how many land in each component, so it varies a lot between "
             "x_T draws: deterministic samplers converge to the *ODE limit* of this x_T (last row of the ODE table), "
             "which can lie below or above 1; differences between rows at the same x_T are what the table compares.", ""]
    for gname, res in groups.items():
        lines += [f"### {gname}", "", "| sampler | " + " | ".join(f"{k}" for k in all_nfes) + " |",
                  "|---|" + "---:|" * len(all_nfes)]
        for label, row in res.items():
            lines.append(f"| {label} | " + " | ".join(cell(row.get(k), k) for k in all_nfes) + " |")
        lines.append("")
    lines += ["### Probability-flow ODE (`ode`, dopri5), NFE set by the tolerance", "",
              "| rtol = atol | NFE | FD / floor |", "|---:|---:|---:|"]
    lines += [f"| {tol:g} | {k} | {r:.3g} |" for tol, k, r in ode_rows]
    lines += ["", f"### Time grids of `dpmpp_2m` (FD / floor; default in the code: `{default_grid}`)", "",
              "| process | spacing | " + " | ".join(f"{k}" for k in args.spacing_nfes) + " |",
              "|---|---|" + "---:|" * len(args.spacing_nfes)]
    for (pname, spacing), row in spacing_rows.items():
        lines.append(f"| {pname} | {spacing} | " + " | ".join(cell(row.get(k), k) for k in args.spacing_nfes) + " |")
    h2h_lines, h2h = head_to_head(args, target, official, kd) if args.h2h_seeds > 0 else ([], {})
    lines += [""] + h2h_lines + verdicts(h2h, default_grid, args)
    return lines, {"groups": groups, "ode": ode_rows}


def head_to_head(args, target: Target, official, kd) -> tuple[list[str], dict]:
    """FD / floor at a few NFE averaged over ``--h2h-seeds`` independent x_T draws (shared by all rows per draw):
    at one x_T the FD moves by about the floor with the component counts, so rankings near the floor need this."""
    gm, n, dim = target.gm, args.n, args.dim
    vp, ddpm = processes.VPSDE(), processes.DDPM("linear", 1000)
    eps_vp, eps_ddpm = gm.eps_model(vp), gm.eps_model(ddpm)
    table: dict[str, dict[int, list[float]]] = {}
    for seed in range(args.h2h_seeds):
        x_T = vp.prior_sample((n, dim), torch.Generator().manual_seed(args.seed + 100 + seed))
        runs: dict[str, Run] = {f"ours dpmpp_2m {sp}": ours(vp, eps_vp, x_T, "dpmpp_2m", spacing=sp)
                                for sp in ("logsnr", "uniform", "quadratic", "karras")}
        runs["ours dpmpp_2m logsnr [DDPM]"] = ours(ddpm, eps_ddpm, x_T, "dpmpp_2m", spacing="logsnr")
        runs["ours ddpm [DDPM]"] = ours(ddpm, eps_ddpm, x_T, "ddpm")
        if official is not None:
            for skip in ("logSNR", "time_uniform", "time_quadratic"):
                for denoise in (True, False):
                    runs[f"official ({skip}, {'denoise_to_zero' if denoise else 'ends at t_end'})"] = \
                        peers.official_dpm_solver(official, eps_vp, vp, x_T, skip, denoise=denoise)
        if kd is not None:
            for fn in ("sample_dpmpp_2m", "sample_lms", "sample_euler"):
                runs[f"k-diffusion {fn.removeprefix('sample_')} (karras)"] = peers.k_diffusion_run(kd, fn, eps_vp, vp, x_T)
        try:
            import diffusers
            runs["diffusers DPMSolverMultistep (++, 2M)"] = peers.diffusers_run(
                diffusers.DPMSolverMultistepScheduler, eps_ddpm, x_T, algorithm_type="dpmsolver++", solver_order=2)
            runs["diffusers UniPCMultistep"] = peers.diffusers_run(diffusers.UniPCMultistepScheduler, eps_ddpm, x_T)
        except ImportError:
            pass
        for label, run in runs.items():
            for nfe in args.h2h_nfes:
                try:
                    x, counted = run(nfe)
                    r = target.ratio(x) if counted == nfe else float("nan")
                except (ValueError, AssertionError):
                    r = float("nan")
                table.setdefault(label, {}).setdefault(nfe, []).append(r)
    lines = [f"### Head to head over {args.h2h_seeds} x_T draws (FD / floor: mean ± std over the draws)", "",
             "| sampler | " + " | ".join(f"{k} NFE" for k in args.h2h_nfes) + " |",
             "|---|" + "---:|" * len(args.h2h_nfes)]
    means = {}
    for label, row in table.items():
        cells = []
        for k in args.h2h_nfes:
            v = torch.tensor(row[k], dtype=torch.float64)
            means[(label, k)] = float(v.mean())
            cells.append(f"{float(v.mean()):.3g} ± {float(v.std()):.2g}" if torch.isfinite(v).all() else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(f"  h2h {label:<44s} " + "  ".join(cells), flush=True)
    return lines + [""], means


def verdicts(h2h: dict, default_spacing: str, args) -> list[str]:
    """The issue's aims, judged on the head-to-head means (several x_T draws)."""
    if not h2h:
        return []
    out = ["### Aims (head-to-head means)", ""]
    labels = sorted({label for label, _ in h2h})
    peers = [lb for lb in labels if not lb.startswith("ours")]
    official = [lb for lb in peers if lb.startswith("official")]
    mine = [lb for lb in labels if lb.startswith("ours")]
    default = f"ours dpmpp_2m {default_spacing}"
    for nfe in args.h2h_nfes:
        get = lambda lb: nan_inf(h2h.get((lb, nfe), float("nan")))  # noqa: E731
        if official and default in labels:
            best = min(official, key=get)
            out.append(f"- {nfe} NFE, `dpmpp_2m` (default `{default_spacing}`) {get(default):.3g} vs the best official "
                       f"DPM-Solver++(2M) variant, {best}, {get(best):.3g}: "
                       f"**{'met' if r3(get(default)) <= r3(get(best)) else 'missed'}**; "
                       f"official with our endpoint and grid (logSNR, ends at t_end): "
                       f"{get('official (logSNR, ends at t_end)'):.3g}.")
        if peers and mine:
            best_mine, best_peer = min(mine, key=get), min(peers, key=get)
            verdict = ("tie" if r3(get(best_mine)) == r3(get(best_peer))
                       else "ours better" if get(best_mine) < get(best_peer) else "peer better")
            out.append(f"- {nfe} NFE, best of ours ({best_mine}) {get(best_mine):.3g} vs the best peer ({best_peer}) "
                       f"{get(best_peer):.3g}: **{verdict}**.")
        grids = {lb.split()[-1]: get(lb) for lb in mine if lb.startswith("ours dpmpp_2m") and "[" not in lb}
        if grids:
            out.append(f"- {nfe} NFE, `dpmpp_2m` by grid: " + ", ".join(f"{g} {v:.3g}" for g, v in grids.items())
                       + f"; best `{min(grids, key=grids.get)}`.")
    return out + [""]


def plot(data: dict, target: Target, path: Path, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = data["groups"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    band = (max(1 - target.floor_std / target.floor, 0.05), 1 + target.floor_std / target.floor)
    peer_styles = ["--", "-.", ":"]
    for ax, (gname, res) in zip(axes, groups.items()):
        ax.axhspan(*band, color="0.85", zorder=0, label="n exact samples (floor ± 1 std)")
        ax.axhline(1.0, color="0.5", lw=0.8, zorder=0)
        ours_i, peer_i = 0, 0
        for label, row in res.items():
            pts = sorted((c, r) for r, c, err in row.values() if err is None and c and math.isfinite(r))
            if not pts:
                continue
            if label.startswith("official") and "logSNR, denoise" not in label:
                continue  # one official line (the endpoint we use); the table has them all
            is_ours = label.startswith("ours")
            style = dict(lw=2.2, marker="o", ms=4, ls="-", color=f"C{ours_i}") if is_ours else \
                dict(lw=1.3, marker="x", ms=4, ls=peer_styles[peer_i % 3], color=f"C{(peer_i + 4) % 10}")
            ours_i, peer_i = ours_i + is_ours, peer_i + (not is_ours)
            ax.plot(*zip(*pts), label=label.replace(" [DDPM]", ""), **style)
        if data["ode"]:
            ax.axhline(data["ode"][-1][2], color="k", ls=":", lw=1, zorder=0,
                       label=f"ODE limit of this x_T (dopri5, rtol {data['ode'][-1][0]:g})")
        if gname == "VP SDE" and data["ode"]:
            pts = sorted((k, r) for _, k, r in data["ode"] if math.isfinite(r))
            ax.plot(*zip(*pts), lw=2.2, marker="s", ms=4, color="C9", label="ours ode (dopri5, rtol sweep)")
        ax.set(xscale="log", yscale="log", xlabel="NFE (model evaluations)", title=gname, ylim=(0.05, None))
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("Frechet distance / exact-sample floor")
    fig.suptitle(f"Sample quality vs NFE: exact eps model, {args.k}-component mixture in {args.dim}-D with narrow "
                 f"components, n = {args.n}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p, peers=("dpm_solver_path",))
    add_mixture_flags(p)
    p.add_argument("--nfes", type=int, nargs="+", default=list(NFES))
    p.add_argument("--peer-max-nfe", type=int, default=200, help="peers run the NFE grid up to this")
    p.add_argument("--spacings", nargs="+", default=list(SPACINGS))
    p.add_argument("--spacing-nfes", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--h2h-seeds", type=int, default=5, help="x_T draws for the head-to-head table (0: skip)")
    p.add_argument("--h2h-nfes", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--ode-tols", type=float, nargs="+", default=list(ODE_TOLS))
    p.add_argument("--quick", action="store_true", help="smoke run: small n, short grids, fewer draws")
    p.add_argument("--png", default=str(ROOT / "benchmarks" / "samplers.png"))
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.nfes, args.peer_max_nfe = min(args.n, 500), [5, 10, 20, 50], 50
        args.spacing_nfes, args.ode_tols, args.floor_draws = [5, 10], [1e-2, 1e-4], 4
        args.h2h_seeds, args.h2h_nfes = 2, [5, 10]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    started = begin(args.threads, f"sample quality vs NFE on a {args.k}-component {args.dim}-D mixture, n = {args.n}, "
                    f"NFE {args.nfes}, head to head over {args.h2h_seeds} draws "
                    f"({'a minute or two' if args.quick else '~5 minutes'} on 2 CPU cores)")
    gm = narrow_mixture(args.dim, args.k, tuple(args.scale), args.seed)
    target = Target(gm, args.n, args.floor_draws, args.seed)
    lines, data = quality_section(args, target)
    plot(data, target, Path(args.png), args)
    section = [f"Generated by `{command(argv)}`. "
               f"Target: `GaussianMixture.random({args.dim}, k={args.k}, scale={tuple(args.scale)}, seed={args.seed})`, "
               "exact eps model. See the script's docstring for the setup of every row.", "", machine(), ""]
    publish(args.out, "quality", section + lines + footer(started))


if __name__ == "__main__":
    main()
