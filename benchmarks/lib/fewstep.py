"""The few-step head to head (issue 13): our rows, the peers' rows per process, the recorded numbers
(``samplers_fewstep.json``: one ``[mixture, process, label, nfe, mean excess]`` per cell) and the tables and aims
drawn from them. Excess = FD / floor - 1, the mean over the x_T draws; lower is better."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from . import peers
from .report import ROOT, note
from .runs import Run, nan_inf

NFES = (5, 6, 10)
GRIDS = ("logsnr", "uniform", "karras", "gits")
OURS = {  # label: (sampler, options)
    "dpmpp_2m": ("dpmpp_2m", {}),
    "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc-3 bh2": ("unipc", dict(order=3, variant="bh2")),
    "unipc-3 bh1": ("unipc", dict(order=3, variant="bh1")),
    "unipc-2 bh2": ("unipc", dict(order=2, variant="bh2")),
    "unipc-2 bh1": ("unipc", dict(order=2, variant="bh1")),
    "ipndm": ("ipndm", {}),
    "ipndm (variable step)": ("ipndm", dict(variable_step=True)),
}
#: run on every process (the rest of OURS on DDPM only); the first three also on a grid fitted to them
CANDIDATES = ("ipndm", "unipc-2 bh2", "unipc-3 bh2", "dpmpp_3m", "dpmpp_2m")
REFINED = ("ipndm", "unipc-2 bh2", "unipc-3 bh2")
#: iPNDM on the GITS grid with its weights fitted to the model
COEFFICIENTS = "ours ipndm gits+weights"
#: the same with the grid refined while iPNDM's error, its weights refitted for each trial grid, falls
JOINT = "ours ipndm gits+refine+weights"
REFERENCE = "reference: ODE limit (dpmpp_3m, 200 steps)"
PEER_PREFIXES = ("diffusers", "k-diffusion", "official", "diff-sampler")
#: at 10 NFE (aim: at or below the best peer) a difference of excess below this (1% of the floor) is a tie
TIE = 0.01
#: where the numbers of the last full run are kept
RECORD = ROOT / "benchmarks" / "samplers_fewstep.json"


def load_summary(path: str | Path = RECORD) -> dict:
    """(mixture, process, label, nfe) -> mean excess, as recorded in ``path``."""
    return {tuple(row[:4]): row[4] for row in json.loads(Path(path).read_text())}


def save_summary(summary: dict, path: str | Path = RECORD) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps([[*key, value] for key, value in summary.items()]))
    tmp.replace(path)


def diffusers_peers(eps_ddpm, x_T) -> dict[str, Run]:
    """diffusers' UniPC, DPM-Solver++ and DEIS multistep schedulers on DDPM(linear, 1000), orders 2 and 3."""
    runs = {}
    try:
        import diffusers
    except ImportError as err:
        note(f"diffusers skipped: {err}")
        return runs
    for karras in (False, True):
        tag = " karras" if karras else ""
        for order in (2, 3):
            for variant in ("bh1", "bh2"):
                for final in ("zero", "sigma_min"):
                    if variant == "bh1" and final == "zero":
                        continue  # B(h) = h is infinite on a last step to sigma = 0: diffusers returns NaN
                    end = "" if final == "zero" else " ends at t=0"
                    runs[f"diffusers UniPC-{order} {variant}{tag}{end}"] = peers.diffusers_run(
                        diffusers.UniPCMultistepScheduler, eps_ddpm, x_T, solver_order=order, solver_type=variant,
                        use_karras_sigmas=karras, final_sigmas_type=final)
            for final in ("zero", "sigma_min"):
                end = "" if final == "zero" else " ends at t=0"
                runs[f"diffusers DPM++({order}M){tag}{end}"] = peers.diffusers_run(
                    diffusers.DPMSolverMultistepScheduler, eps_ddpm, x_T, algorithm_type="dpmsolver++",
                    solver_order=order, use_karras_sigmas=karras, final_sigmas_type=final)
            runs[f"diffusers DEIS-{order}{tag}"] = peers.diffusers_run(
                diffusers.DEISMultistepScheduler, eps_ddpm, x_T, solver_order=order, use_karras_sigmas=karras)
    return runs


def peer_runs(pname: str, proc, eps, x_T: Tensor, kd, official, ds) -> dict[str, Run]:
    """Every peer that runs on this process, on the same eps model and x_T."""
    runs: dict[str, Run] = {}
    if official is not None and pname in ("DDPM", "VP"):
        for order in (2, 3):
            for skip in ("logSNR", "time_uniform", "time_quadratic"):
                runs[f"official DPM-Solver++({order}M) {skip}"] = peers.official_dpm_solver(official, eps, proc, x_T, skip, order)
    if ds is not None and pname in ("DDPM", "VP", "EDM"):
        for schedule in ("polynomial", "logsnr", "time_uniform"):
            runs[f"diff-sampler ipndm {schedule}"] = peers.diff_sampler_run(ds, "ipndm", eps, proc, x_T, schedule, max_order=4)
            runs[f"diff-sampler unipc-3 {schedule}"] = peers.diff_sampler_run(ds, "unipc", eps, proc, x_T, schedule, max_order=3)
            runs[f"diff-sampler dpmpp-3 {schedule}"] = peers.diff_sampler_run(ds, "dpm_pp", eps, proc, x_T, schedule, max_order=3)
        runs["diff-sampler ipndm polynomial afs"] = peers.diff_sampler_run(ds, "ipndm", eps, proc, x_T, afs=True, max_order=4)
        runs["diff-sampler ipndm_v polynomial"] = peers.diff_sampler_run(ds, "ipndm_v", eps, proc, x_T, max_order=4)
        runs["diff-sampler deis-3 polynomial"] = peers.diff_sampler_run(ds, "deis", eps, proc, x_T, max_order=3)
        runs["diff-sampler GITS ipndm"] = peers.diff_sampler_run(ds, "ipndm", eps, proc, x_T, gits=True, max_order=4)
    if kd is not None and pname in ("DDPM", "VP", "EDM"):
        for grid in ("karras", "exponential"):
            runs[f"k-diffusion dpmpp_2m {grid}"] = peers.k_diffusion_run(kd, "sample_dpmpp_2m", eps, proc, x_T, grid)
            runs[f"k-diffusion dpmpp_3m_sde eta=0 {grid}"] = peers.k_diffusion_run(
                kd, "sample_dpmpp_3m_sde", eps, proc, x_T, grid, eta=0.0,
                noise_sampler=lambda sigma, sigma_next: torch.zeros_like(x_T))
            runs[f"k-diffusion lms {grid}"] = peers.k_diffusion_run(kd, "sample_lms", eps, proc, x_T, grid)
    if pname == "DDPM":
        runs.update(diffusers_peers(eps, x_T))
    return runs


def excess_ratio(ours_v: float, peer_v: float) -> float:
    """ours / peer excess; where the peer is at or below the floor (excess <= 0) only ours <= peer counts."""
    return ours_v / peer_v if peer_v > 0 else (0.0 if ours_v <= peer_v else float("inf"))


def tables(summary: dict, nfes) -> list[str]:
    """The few-step markdown tables from ``summary`` ((mixture, process, label, nfe) -> mean excess): per process
    with peers ours against them, the aims (best of ours against the best peer), ours on every process, our ranks."""
    mixtures = list(dict.fromkeys(m for m, _, _, _ in summary))
    labels = list(dict.fromkeys(lb for _, _, lb, _ in summary))
    ours_l = [lb for lb in labels if lb.startswith("ours")]
    peers_l = [lb for lb in labels if lb.startswith(PEER_PREFIXES)]
    with_peers = [p for p in dict.fromkeys(p for _, p, _, _ in summary)
                  if any((m, p, lb, nfes[0]) in summary for m in mixtures for lb in peers_l)]
    lines = []
    verdicts = []
    for proc in with_peers:
        # 1. ours and the peers, per mixture, and the mean over mixtures
        lines += [f"### {proc}: ours against the peers", "",
                  "| sampler | " + " | ".join(f"{k} NFE {m.split(',')[0]}" for k in nfes for m in mixtures)
                  + " | " + " | ".join(f"{k} NFE mean" for k in nfes) + " |",
                  "|---|" + "---:|" * (len(nfes) * (len(mixtures) + 1))]
        mean = {}
        for lb in labels:
            if all(math.isnan(summary.get((m, proc, lb, k), float("nan"))) for m in mixtures for k in nfes):
                continue
            cells = [f"{summary.get((m, proc, lb, k), float('nan')):.3g}" for k in nfes for m in mixtures]
            for k in nfes:
                vals = [summary.get((m, proc, lb, k), float("nan")) for m in mixtures]
                mean[(lb, k)] = sum(vals) / len(vals)
            lines.append(f"| {lb} | " + " | ".join(cells) + " | " + " | ".join(f"{mean[(lb, k)]:.3g}" for k in nfes) + " |")
        lines.append("")
        # 2. aims: per mixture and on the mean over mixtures
        for k in nfes:
            limit = 0.5 if k < 10 else 1.0
            for m in mixtures + ["mean"]:
                get = ((lambda lb: nan_inf(mean.get((lb, k), float("nan")))) if m == "mean" else  # noqa: E731
                       (lambda lb, m=m: nan_inf(summary.get((m, proc, lb, k), float("nan")))))
                ran_o = [lb for lb in ours_l if math.isfinite(get(lb))]
                ran_p = [lb for lb in peers_l if math.isfinite(get(lb))]
                if not ran_o or not ran_p:
                    continue
                bo, bp = min(ran_o, key=get), min(ran_p, key=get)
                ratio = excess_ratio(get(bo), get(bp))
                # at 10 NFE both may sit at the ODE limit of the same x_T: within 1% of the floor is a tie
                tie = k >= 10 and get(bo) <= get(bp) + TIE
                ode = get(REFERENCE)  # what infinitely many steps reach from these x_T
                verdicts.append((proc, k, m.split(",")[0], bo, get(bo), bp, get(bp), ratio, ode,
                                 ratio <= limit or tie, k < 10 and ode > limit * get(bp)))
    # the aims, one table
    lines += ["### Aims: best of ours against the best peer, excess over the floor (aim: ratio <= 0.5 at 5 and 6 "
              "NFE, <= 1 at 10 NFE; where the peer's excess is <= 0, met when ours is at or below it; at 10 NFE "
              f"within {TIE} of the peer is a tie: both sit at the ODE limit of the same x_T)", "",
              "The column *own error* is the same ratio of what each solver adds to the ODE limit of the same x_T "
              "(excess - ODE limit; a mean of paired differences, so the x_T draws' own FD, which dominates the "
              "2-D and 8-D cells, cancels): `fewstep_noise.py` below shows why it is the sharper reading.", "",
              "| process | NFE | mixture | best of ours | excess | best peer | excess | ratio | ODE limit | own error | aim |",
              "|---|---:|---|---|---:|---|---:|---:|---:|---:|---|"]
    for proc, k, m, bo, vo, bp, vp, ratio, ode, met, out_of_reach in verdicts:
        verdict = "met" if met else "missed; out of reach: the ODE limit is above the aim" if out_of_reach else "**missed**"
        own = excess_ratio(vo - ode, vp - ode)
        lines.append(f"| {proc} | {k} | {m} | {bo.removeprefix('ours ')} | {vo:.3g} | {bp} | {vp:.3g} | "
                     f"{ratio:.2f} | {ode:.3g} | {own:.2f} | {verdict} |")
    missed = [v for v in verdicts if not v[-2]]
    reach = [v for v in missed if not v[-1]]
    lines += ["", f"Aims met in {len(verdicts) - len(missed)} of {len(verdicts)} cells"
              + (": missed in " + "; ".join(f"{p} {k} NFE {m}" for p, k, m, *_ in missed) if missed else "") + "."
              + (f" {len(missed) - len(reach)} of the misses are out of reach of any sampler: there the ODE limit of "
                 "the same x_T (the excess that ever more steps converge to) is above half the best peer's excess."
                 if len(reach) < len(missed) else ""), ""]
    # 3. every process: our samplers' spread
    procs = list(dict.fromkeys(p for _, p, _, _ in summary))
    lines += ["### Ours on every process: mean excess over the mixtures [min, max over the mixtures]", "",
              "| sampler | " + " | ".join(f"{p} {k}" for p in procs for k in nfes) + " |",
              "|---|" + "---:|" * (len(procs) * len(nfes))]
    for lb in ours_l:
        cells = []
        for p in procs:
            for k in nfes:
                vals = [summary.get((m, p, lb, k), float("nan")) for m in mixtures]
                cells.append("-" if all(math.isnan(v) for v in vals) else
                             f"{sum(vals) / len(vals):.3g} [{min(vals):.2g}, {max(vals):.2g}]")
        lines.append(f"| {lb} | " + " | ".join(cells) + " |")
    lines.append("")
    # 4. rank of each of ours, averaged over every mixture x process x NFE (what the defaults are chosen on)
    ranks = {lb: [] for lb in ours_l}
    for m in mixtures:
        for p in procs:
            for k in nfes:
                ran = [lb for lb in ours_l if (m, p, lb, k) in summary]
                order = sorted(ran, key=lambda lb: nan_inf(summary[(m, p, lb, k)]))
                for i, lb in enumerate(order):
                    ranks[lb].append(i + 1)
    ranks = {lb: r for lb, r in ranks.items() if r}
    lines += ["### Mean rank of our configurations over every mixture, process and NFE they ran on (1 = best; "
              "DDPM-only rows rank among all, the rest among the candidates too)", "",
              "| configuration | mean rank | worst rank | cases |", "|---|---:|---:|---:|"]
    for lb in sorted(ranks, key=lambda lb: sum(ranks[lb]) / len(ranks[lb])):
        lines.append(f"| {lb} | {sum(ranks[lb]) / len(ranks[lb]):.1f} | {max(ranks[lb])} | {len(ranks[lb])} |")
    return lines + [""]
