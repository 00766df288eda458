"""How much of a few-step aim cell is the scored x_T draws: the cells of ``samplers.md``'s aims table over more draws.

    python benchmarks/fewstep_noise.py                  # 20 x_T draws of 1000 samples per cell (~10 min on 2 CPUs)
    python benchmarks/fewstep_noise.py --draws 3        # the aims table's own draws (seeds 200-202)

The aims table of ``samplers.md`` scores each row by its excess over the exact-sample floor, FD / floor - 1, the
mean over 3 x_T draws shared by every row. This script takes chosen cells (process, mixture, NFE) with the row
that is the best of ours there, fitted three times exactly as ``fewstep.py`` fits it (``lib/fitting.py``) (fit seeds K = 0, 1, 2),
and the best peer, and scores them with the ODE limit of the same x_T (``dpmpp_3m``, 200 steps) on ``--draws``
draws (seeds 200, 201, ...: the table's first). It prints, per cell, the mean excess and its standard error over
the draws, the paired excess over the ODE limit of the same x_T (what a solver's own error adds), and the aim's
ratio (ours / peer, excess over the floor) over the first 3 draws and over all of them.

Needs zju-pi/diff-sampler's gits-main folder (``--diff-sampler-path``) and the official DPM-Solver (``--dpm-solver-path``), as
``fewstep.py`` does. Prints its table (recorded by hand in ``samplers.md``); writes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion.device import describe_machine  # noqa: E402
from diffusion.samplers import sample  # noqa: E402

from benchmarks.lib import fitting, peers  # noqa: E402
from benchmarks.lib.fewstep import COEFFICIENTS, JOINT, NFES  # noqa: E402
from benchmarks.lib.report import PEER_PATHS  # noqa: E402
from benchmarks.lib.targets import PROCESSES, Target, fewstep_mixtures  # noqa: E402

#: (process, mixture prefix, NFE, our row, the best peer: diff-sampler solver, schedule, options) of the aims table
CELLS = [
    ("VP", "2-D", 6, JOINT, ("ipndm", "logsnr", {"max_order": 4})),
    ("EDM", "2-D", 6, JOINT, ("deis", "polynomial", {"max_order": 3})),
    ("EDM", "8-D", 10, COEFFICIENTS, ("ipndm_v", "polynomial", {"max_order": 4})),
    ("DDPM", "2-D", 6, JOINT, ("ipndm", "logsnr", {"max_order": 4})),
    ("VP", "8-D", 6, JOINT, None),  # the best peer there is the official DPM-Solver++(3M): see --official
]


def fitted_rows(row: str, proc, eps, dim: int, nfe: int, fits: int) -> list[tuple[list[float], list[list[float]]]]:
    """The grid and weights of ``row`` at ``nfe`` for fit seeds 0..fits-1, made by ``fewstep.py``'s own fits (``lib/fitting.py``) (each
    generator serves the table's NFEs in turn, so the NFE's fit is the one the table scored)."""
    out = []
    for k in range(fits):
        if row == JOINT:
            grids, weights = fitting.joint_fit(proc, eps, dim, NFES, 1000 * k, refine=4)
        else:
            grids, _ = fitting.gits_fit(proc, eps, dim, NFES, 1000 * k)
            weights = fitting.gits_weights(proc, eps, dim, grids, 1000 * k)
        out.append((grids[nfe], weights[nfe]))
    return out


def mean_se(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--fits", type=int, default=3)
    p.add_argument("--diff-sampler-path", default=PEER_PATHS["diff_sampler_path"])
    p.add_argument("--dpm-solver-path", default=PEER_PATHS["dpm_solver_path"])
    args = p.parse_args()
    if args.draws < 3:
        p.error("--draws must be at least 3 (the aims table's own)")
    ds, official = peers.load_diff_sampler(args.diff_sampler_path), peers.load_official(args.dpm_solver_path)
    if ds is None or official is None:
        p.error("the cells' best peers are diff-sampler's and the official DPM-Solver's: fetch zju-pi/diff-sampler and "
                "LuChengTHU/dpm-solver, and pass --diff-sampler-path and --dpm-solver-path")
    mixtures = fewstep_mixtures(seed=0)
    started = time.perf_counter()
    rows = ["| process | NFE | mixture | row | excess, 3 draws | excess, all draws (± s.e.) | minus ODE limit (paired, ± s.e.) | aim ratio, 3 draws | aim ratio, all draws |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for pname, prefix, nfe, row, peer in CELLS:
        mname, gm = next((m, g) for m, g in mixtures.items() if m.startswith(prefix))
        proc = PROCESSES[pname]()
        eps, target = gm.eps_model(proc), Target(gm, 1000, 10, 0)
        fits = fitted_rows(row, proc, eps, gm.d, nfe, args.fits)
        peer_label = (f"diff-sampler {peer[0]} {peer[1]}" if peer else "official DPM-Solver++(3M) time_quadratic")
        scores: dict[str, list[float]] = {"ODE limit": [], peer_label: [], **{f"{row[5:]} (fit {k})": [] for k in range(len(fits))}}
        for draw in range(args.draws):
            x_T = proc.prior_sample((1000, gm.d), torch.Generator().manual_seed(200 + draw))
            scores["ODE limit"].append(target.ratio(sample(proc, eps, None, "dpmpp_3m", 200, x_T=x_T)) - 1)
            run = (peers.diff_sampler_run(ds, peer[0], eps, proc, x_T, peer[1], **peer[2]) if peer else
                   peers.official_dpm_solver(official, eps, proc, x_T, "time_quadratic", 3))
            x, counted = run(nfe)
            scores[peer_label].append(target.ratio(x) - 1 if counted == nfe else float("nan"))
            for k, (ts, weights) in enumerate(fits):
                x = sample(proc, eps, None, "ipndm", x_T=x_T, timesteps=ts, coefficients=weights)
                scores[f"{row[5:]} (fit {k})"].append(target.ratio(x) - 1)
        limit, theirs = scores["ODE limit"], scores[peer_label]
        for label, values in scores.items():
            paired = [v - lim for v, lim in zip(values, limit)]
            ratio3 = (f"{statistics.mean(values[:3]) / statistics.mean(theirs[:3]):.2f}"
                      if label not in ("ODE limit", peer_label) else "")
            ratio = (f"{statistics.mean(values) / statistics.mean(theirs):.2f}"
                     if label not in ("ODE limit", peer_label) else "")
            rows.append(f"| {pname} | {nfe} | {mname} | {label} | {statistics.mean(values[:3]):.3f} | {mean_se(values)} | "
                        f"{'' if label == 'ODE limit' else mean_se(paired)} | {ratio3} | {ratio} |")
        print(f"  {pname} {mname} {nfe} NFE: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"{args.draws} x_T draws of 1000 samples per cell; {describe_machine()}; {time.perf_counter() - started:.0f} s\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
