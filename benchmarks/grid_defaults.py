"""The default fixed grid of each multistep solver, re-checked on targets of other shapes than ``samplers.py``'s.

    PYTHONPATH=. python benchmarks/grid_defaults.py             # ~2 minutes of CPU (one thread)
    PYTHONPATH=. python benchmarks/grid_defaults.py --n 4000    # less sampling noise in FD

Every multistep solver (the samplers registered with ``layout=SOLVER``) walks each fixed spacing (``logsnr``,
``uniform``, ``karras``, ``quadratic`` in t, which is DPM-Solver's ``time_quadratic``; for ``ipndm`` also its
default, the process's own grid) at 5, 10 and 20 NFE, on three Gaussian mixtures of shapes that the few-step
benchmark does not use, under every process (DDPM, VP, sub-VP, VE, EDM, rectified flow), with the mixture's exact
eps. Each cell starts from the same x_T for every spacing and is scored two ways:

* **FD / floor**: the Frechet distance of the samples' Gaussian fit to the exact mixture moments over the
  exact-sample floor (the mean FD of n exact samples): what the samples look like;
* **ODE error** (deterministic solvers): the mean distance of each sample from the ODE solution of its own x_T
  (``dpmpp_3m``, 200 logsnr steps: third order): the solver's own error, free of sampling noise.

It prints, per solver and NFE, the geometric mean of FD / floor over the 18 (target, process) cells with the
number of cells each spacing wins, and the same for the ODE error; FD / floor per process at 10 NFE; then the
verdict: a default changes only where another spacing wins most cells on both scores at every NFE. Results: ``benchmarks/samplers.md``, "Default grids of the multistep
solvers, re-checked".
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from diffusion import processes
from diffusion.device import describe_machine
from diffusion.evaluation.frechet import frechet_distance_to
from diffusion.samplers import sample, sampler_options
from diffusion.samplers.registry import solver_layout_samplers
from diffusion.toy import GaussianMixture

SPACINGS = ("logsnr", "uniform", "karras", "quadratic")
NFES = (5, 10, 20)
STOCHASTIC = ("dpmpp_2m_sde",)


def targets() -> dict[str, GaussianMixture]:
    """Three shapes unlike ``samplers.py``'s (64-D narrow, 16-D wide, 8-D skewed, 2-D): few dimensions with far
    apart components, many dimensions with broad ones, and very narrow components in between."""
    return {"4-D, 5 far apart (0.05-0.2)": GaussianMixture.random(4, k=5, spread=2.0, scale=(0.05, 0.2), seed=11),
            "32-D, 3 broad (0.2-0.6)": GaussianMixture.random(32, k=3, spread=1.0, scale=(0.2, 0.6), seed=12),
            "12-D, 6 very narrow (0.01-0.05)": GaussianMixture.random(12, k=6, scale=(0.01, 0.05), seed=13)}


def all_processes() -> list[processes.Process]:
    return [processes.DDPM("linear", 1000), processes.VPSDE(), processes.SubVPSDE(), processes.VESDE(),
            processes.EDM(), processes.RectifiedFlow()]


def fd_floor(gm: GaussianMixture, n: int, draws: int = 5) -> float:
    g = torch.Generator().manual_seed(99)
    return statistics.mean(frechet_distance_to(gm.sample(n, g).double(), gm.mean(), gm.cov()) for _ in range(draws))


def measure(n: int) -> tuple[dict, list[str]]:
    """{(sampler, nfe, spacing): [(fd / floor, ode error or None) per (target, process) cell]}."""
    solvers = solver_layout_samplers()
    results: dict[tuple[str, int, str], list[tuple[float, float | None]]] = {}
    for label, gm in targets().items():
        floor = fd_floor(gm, n)
        for process in all_processes():
            model = gm.eps_model(process)
            x_T = process.prior_sample((n, gm.means.shape[1]), torch.Generator().manual_seed(0), dtype=torch.float64)
            exact = sample(process, model, None, "dpmpp_3m", 200, x_T=x_T, spacing="logsnr")
            for name in solvers:
                spacings = SPACINGS + (("default",) if sampler_options(name)["spacing"] == "default" else ())
                for nfe in NFES:
                    for spacing in spacings:
                        x = sample(process, model, None, name, nfe, torch.Generator().manual_seed(1), x_T=x_T,
                                   spacing=spacing)
                        fd = frechet_distance_to(x, gm.mean(), gm.cov()) / floor
                        err = None if name in STOCHASTIC else float((x - exact).norm(dim=1).mean())
                        results.setdefault((name, nfe, spacing), []).append((fd, err))
            print(f"  {label} / {process!r} done", flush=True)
    return results, list(solvers)


def geomean(values) -> float:
    return math.exp(statistics.mean(math.log(max(v, 1e-12)) for v in values))


def spacings_of(results: dict, name: str) -> list[str]:
    return [sp for sp in SPACINGS + ("default",) if (name, NFES[0], sp) in results]


def wins(results: dict, name: str, nfe: int, score: int, cells: range | None = None) -> dict[str, int]:
    """Cells each spacing wins (ties credit every tied spacing: ipndm's default is uniform, or karras on EDM)."""
    spacings = spacings_of(results, name)
    count = {sp: 0 for sp in spacings}
    for c in cells if cells is not None else range(len(results[(name, nfe, spacings[0])])):
        values = {sp: results[(name, nfe, sp)][c][score] for sp in spacings}
        for sp, v in values.items():
            count[sp] += v == min(values.values())
    return count


def table(results: dict, solvers: list[str]) -> str:
    """Per solver and NFE, per spacing: the geometric mean over the cells [cells won]; the most wins in bold."""
    lines = []
    for score, title in ((0, "FD / floor, geometric mean over the 18 cells [cells won]"),
                         (1, "ODE error, geometric mean over the 18 cells [cells won] (deterministic solvers)")):
        lines += [f"**{title}**", "", "| solver (default) | NFE | " + " | ".join(SPACINGS + ("default",)) + " |",
                  "|---|---:|" + "---:|" * (len(SPACINGS) + 1)]
        for name in solvers:
            if score == 1 and name in STOCHASTIC:
                continue
            for nfe in NFES:
                won = wins(results, name, nfe, score)
                cells = []
                for sp in SPACINGS + ("default",):
                    if sp not in won:
                        cells.append("")
                        continue
                    text = f"{geomean(v[score] for v in results[(name, nfe, sp)]):.3g} [{won[sp]}]"
                    cells.append(f"**{text}**" if won[sp] == max(won.values()) else text)
                lines.append(f"| {name} ({sampler_options(name)['spacing']}) | {nfe} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def by_process(results: dict, solvers: list[str], nfe: int = 10) -> str:
    """At ``nfe``: per solver and process, FD / floor per spacing, geometric mean over the 3 targets."""
    names = [repr(p).split("(")[0] for p in all_processes()]
    lines = [f"**FD / floor at {nfe} NFE per process, geometric mean over the 3 targets**", "",
             "| solver | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name in solvers:
        spacings = spacings_of(results, name)
        row = []
        for p in range(len(names)):
            cells = [t * len(names) + p for t in range(len(targets()))]
            means = {sp: geomean(results[(name, nfe, sp)][c][0] for c in cells) for sp in spacings}
            best = min(means, key=means.get)
            row.append(", ".join(f"{'**' if sp == best else ''}{sp} {means[sp]:.3g}{'**' if sp == best else ''}"
                                 for sp in spacings))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def verdict(results: dict, solvers: list[str]) -> list[str]:
    """A spacing other than the default that wins most cells on every score at every NFE."""
    out = []
    for name in solvers:
        default = sampler_options(name)["spacing"]
        scores = (0,) if name in STOCHASTIC else (0, 1)
        best = set()
        for nfe in NFES:
            for score in scores:
                won = wins(results, name, nfe, score)
                best |= {sp for sp, w in won.items() if w == max(won.values())}
        if len(best) == 1 and best != {default}:
            out.append(f"{name}: {best.pop()} wins most cells at every NFE on every score: change the default "
                       f"from {default}")
        else:
            out.append(f"{name}: keep {default} (no other spacing wins most cells at every NFE on every score; "
                       f"the most-winning: {', '.join(sorted(best))})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per cell")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small batches: a second thread only contends on a shared machine
    solvers = solver_layout_samplers()
    print(f"{len(solvers)} solvers x {len(SPACINGS)}+ spacings x {len(NFES)} NFE on 3 mixtures x 6 processes, "
          f"n={args.n}: a few minutes on 2 CPU cores")
    started = time.perf_counter()
    results, solvers = measure(args.n)
    print(f"\nMachine: {describe_machine()}; n = {args.n} samples per cell; {time.perf_counter() - started:.0f} s\n")
    print(table(results, solvers))
    print(by_process(results, solvers))
    print("\n".join(f"- {line}" for line in verdict(results, solvers)))


if __name__ == "__main__":
    main()
