"""Few-step samplers head to head (issue 13): ours on fixed and fitted grids against every peer, at 5, 6 and 10 NFE.

    python benchmarks/fewstep.py                          # full run: hours on 2 CPU cores
    python benchmarks/fewstep.py --tables-only            # the tables again from samplers_fewstep.json (seconds)
    python benchmarks/fewstep.py --labels 'ours ipndm gits+weights'   # rerun those rows, merge into the json
    python benchmarks/fewstep.py --fit-seed 1 --json <copy> --out <copy>.md --labels ...   # another fit draw

Measures FD / floor - 1 (the excess over n exact samples) on four exact mixtures of different dimension,
component widths and weights (``targets.fewstep_mixtures``), on DDPM, VP, EDM, sub-VP, VE and rectified flow, the
mean over ``--draws`` x_T draws shared by every row: ours on every grid and on grids and iPNDM weights fitted to
the model (``lib/fitting.py``), against every peer that runs on the process (``lib/peers.py``: diffusers on DDPM,
the official DPM-Solver++ on DDPM and VP, zju-pi/diff-sampler and k-diffusion on DDPM, VP and EDM; a missing peer
is skipped with a note). Writes every cell to ``benchmarks/samplers_fewstep.json`` and the tables and aims into
the ``fewstep`` section of ``benchmarks/samplers.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.samplers import sample  # noqa: E402

from benchmarks.lib import fewstep, fitting, peers  # noqa: E402
from benchmarks.lib.report import add_common_flags, begin, command, footer, machine, note, publish  # noqa: E402
from benchmarks.lib.runs import Run, grid_run, ours  # noqa: E402
from benchmarks.lib.targets import PROCESSES, Target, fewstep_mixtures  # noqa: E402


def description(args) -> list[str]:
    """The section's heading and its account of every row."""
    procs, draws, n = [p for p in PROCESSES if p in args.processes], args.draws, args.n
    lines = ["## Few-step samplers head to head (FD / floor - 1: excess over exact samples; lower is better)", "",
             f"Mean over {draws} x_T draws of {n} samples (the same x_T for every row of a draw), on "
             f"{', '.join(procs)}. Ours: every sampler on every grid on DDPM, the candidates on every process; "
             "`gits` = `optimize_timesteps(sampler=ipndm)` fitted on 256 other prior draws (fine grid 100 logsnr "
             "steps; its 101 calls on 256 samples are not counted in the NFE); `gits+refine` = "
             f"`optimize_timesteps(sampler=<that sampler>, refine={args.refine})`, the GITS grid then moved "
             "while the sampler's own end error on the fitting draws falls (sampler runs on 256 samples, also not "
             "counted). `ipndm gits+weights` = iPNDM on the `gits` grid with its weights fitted to the model "
             "(`fit_coefficients`, ridge least squares against a fine solve through the grid, on 256 further "
             "draws; not counted either); `ipndm gits+refine+weights` = the same on a grid refined (refine=4) "
             "while iPNDM's held-out end error with weights refitted for each trial grid falls (`optimize_timesteps(options="
             "{'coefficients': 'fitted'})`). The reference row is the ODE limit of the same x_T: the FD that more "
             "steps converge to. "
             "Peers, on the same eps model and x_T: "
             "on DDPM(linear, 1000) diffusers' UniPC, DPM-Solver++ and DEIS multistep schedulers (orders 2 and 3, "
             "default and karras sigmas; UniPC and DPM++ also with `final_sigmas_type=sigma_min`, \"ends at t=0\": "
             "our solvers' layout; UniPC bh1 only so, as its last step to sigma = 0 is NaN); on DDPM and VP the "
             "official DPM-Solver++ (Lu et al.'s `dpm_solver_pytorch.py`, multistep orders 2 and 3, every skip "
             "type, lower_order_final); on DDPM, VP and EDM zju-pi/diff-sampler (iPNDM of order 4, UniPC-3, "
             "DPM-Solver++(3M) on its polynomial = Karras rho 7, logsnr and time_uniform grids, iPNDM with the "
             "analytical first step, iPNDM_v, DEIS-3, and its own GITS with iPNDM: the settings of its launch.sh) "
             "and k-diffusion's dpmpp_2m, dpmpp_3m_sde (eta = 0: the 3M ODE solver) and lms on Karras and "
             "exponential (= logsnr) sigmas. k-diffusion and diff-sampler run in EDM's variables x / alpha, "
             "sigma / alpha, our eps model wrapped as a denoiser (`edm_space`).", ""]
    return lines


def run_cells(args, summary: dict) -> dict:
    """Score every row on every mixture and process into ``summary`` ((mixture, process, label, nfe) -> mean
    excess); with ``--labels`` only those rows, on the grids and x_T of a full run."""
    procs = {name: make() for name, make in PROCESSES.items() if name in args.processes}
    nfes, draws, n = args.nfes, args.draws, args.n
    kd = peers.load_k_diffusion()
    official, ds = peers.load_official(args.dpm_solver_path), peers.load_diff_sampler(args.diff_sampler_path)
    only = set(args.labels or ())
    started = time.perf_counter()
    for mname, gm in fewstep_mixtures(args.seed).items():
        target = Target(gm, n, args.floor_draws, args.seed)
        dim = gm.d
        for pname, proc in procs.items():
            eps = gm.eps_model(proc)
            fit_seed = args.seed + 1000 * args.fit_seed
            gits, fit = fitting.gits_fit(proc, eps, dim, nfes, fit_seed)
            fitted = {label: fitting.refined_fit(proc, eps, dim, nfes, *fewstep.OURS[label], args.refine, fit)
                      for label in fewstep.REFINED if not only or f"ours {label} gits+refine" in only}
            weights = (fitting.gits_weights(proc, eps, dim, gits, fit_seed)
                       if not only or fewstep.COEFFICIENTS in only else {})
            joint, joint_weights = ({}, {}) if only and fewstep.JOINT not in only else fitting.joint_fit(
                proc, eps, dim, nfes, fit_seed, args.refine)
            table: dict[str, dict[int, list[float]]] = {}
            for draw in range(draws):
                x_T = proc.prior_sample((n, dim), torch.Generator().manual_seed(args.seed + 200 + draw))
                limit = sample(proc, eps, None, "dpmpp_3m", 200, x_T=x_T)
                runs: dict[str, Run] = {fewstep.REFERENCE: lambda k, x=limit: (x, k)}
                for label, (name, opts) in fewstep.OURS.items():
                    if pname != "DDPM" and label not in fewstep.CANDIDATES:
                        continue
                    for grid in fewstep.GRIDS:
                        if grid == "gits":
                            runs[f"ours {label} gits"] = grid_run(proc, eps, x_T, name, opts, gits)
                        else:
                            runs[f"ours {label} {grid}"] = ours(proc, eps, x_T, name, spacing=grid, **opts)
                    if label in fitted:
                        runs[f"ours {label} gits+refine"] = grid_run(proc, eps, x_T, name, opts, fitted[label])
                if weights:
                    runs[fewstep.COEFFICIENTS] = grid_run(proc, eps, x_T, "ipndm", {}, gits, weights)
                if joint:
                    runs[fewstep.JOINT] = grid_run(proc, eps, x_T, "ipndm", {}, joint, joint_weights)
                if only:
                    runs = {label: run for label, run in runs.items() if label in only}
                else:
                    runs.update(fewstep.peer_runs(pname, proc, eps, x_T, kd, official, ds))
                score(runs, nfes, target, table, pname, draw)
            for label, row in table.items():
                for k in nfes:
                    summary[(mname, pname, label, k)] = float(torch.tensor(row[k]).mean())
            print(f"  few-step {mname} / {pname}: {time.perf_counter() - started:.0f} s", flush=True)
    return summary


def score(runs: dict[str, Run], nfes, target: Target, table: dict, pname: str, draw: int) -> None:
    """Append each run's excess at each NFE to ``table[label][nfe]`` (NaN where it failed or ran another NFE)."""
    for label, run in runs.items():
        for k in nfes:
            try:
                x, counted = run(k)
                r = target.ratio(x) - 1 if counted == k else float("nan")
            except (ValueError, AssertionError, RuntimeError) as err:
                if label.startswith(fewstep.PEER_PREFIXES) and draw == 0:
                    note(f"{label} on {pname} at {k} NFE failed: {type(err).__name__}: {err}"[:300])
                r = float("nan")
            table.setdefault(label, {}).setdefault(k, []).append(r)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p, peers=("dpm_solver_path", "diff_sampler_path"))
    p.add_argument("--nfes", type=int, nargs="+", default=list(fewstep.NFES))
    p.add_argument("--draws", type=int, default=3, help="x_T draws scored per cell")
    p.add_argument("--refine", type=int, default=4, help="refine sweeps of the per-sampler fitted grids")
    p.add_argument("--processes", nargs="+", default=list(PROCESSES), choices=list(PROCESSES))
    p.add_argument("--json", default=str(fewstep.RECORD), help="where every cell is kept")
    p.add_argument("--tables-only", action="store_true", help="re-render the tables from --json (runs nothing)")
    p.add_argument("--fit-seed", type=int, default=0,
                   help="another draw of the 256 prior samples every grid and weight fit runs on (the spread of the "
                        "fitted rows over fits); the mixtures and the scored x_T stay")
    p.add_argument("--labels", nargs="+", default=None,
                   help="rerun only these rows (e.g. 'ours ipndm gits+weights') and merge them into --json; the grids "
                        "and x_T are those of a full run")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    started = begin(args.threads, f"re-rendering the few-step tables from {args.json}" if args.tables_only else
                    f"few-step head to head: {len(fewstep_mixtures())} mixtures x {len(args.processes)} processes x "
                    f"{args.draws} draws of {args.n} samples at NFE {args.nfes} (hours on 2 CPU cores)")
    if args.tables_only:
        body = [f"(Tables re-rendered from `{Path(args.json).name}`: the numbers of the last full run.)", ""]
        summary = fewstep.load_summary(args.json)
    else:
        summary = run_cells(args, fewstep.load_summary(args.json) if args.labels else {})
        fewstep.save_summary(summary, args.json)
        body = []
    section = [f"Generated by `{command(argv)}`; " + machine()
               + f" Load average at the start {load:.1f} on {os.cpu_count()} cores (only the run time"
               " depends on it)."
               + (f" Only the rows {', '.join(map(repr, args.labels))} were run (on the mixtures, grids and x_T of a "
                  f"full run); every other number is the last full run's, kept in `{Path(args.json).name}`."
                  if args.labels else ""), ""]
    publish(args.out, "fewstep", section + description(args) + body + fewstep.tables(summary, args.nfes) + footer(started))


if __name__ == "__main__":
    main()
