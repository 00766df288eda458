"""One- and two-step sampling from a trained run: consistency distillation and reflow against the teacher's own
best few-step solver (issue 28's measurement), on the MNIST default teacher.

    python benchmarks/distillation.py                          # trains the default teacher too (~10 more min)
    python benchmarks/distillation.py --teacher runs/<run>     # about 45 minutes of 2 CPU cores (estimate below)
    python benchmarks/distillation.py --smoke --out /tmp/x     # a tiny end-to-end check (a minute); no record

Each method distills the teacher through ``train.py distill=<method> distill.teacher=<run>`` (what users run) for
``--minutes`` of training (``trainer.max_minutes`` with ``trainer.fit_budget``: the schedule is shortened to fit);
the wall time counted is the whole command's (reflow's couplings and its grid fit included). Model calls are the
teacher's, in image evaluations: consistency = student steps x batch x the teacher's calls per step (heun 2, ddim
1); reflow = pairs x the pair sampler's NFE (measured). Then ``--n`` samples (one seed, the same for every row) at
each NFE of ``--nfe`` are scored by the digit metric (``diffusion.evaluation.quality``: Frechet distance and KID in
the shipped digit classifier's features against the MNIST5k test split, beside real digits at the same n):
consistency with ``sampler=consistency``; reflow with ``ddim`` (Euler) and, from 2 NFE, ``dpmpp_2m`` and iPNDM
on a grid with weights fitted to the student; the teacher with iPNDM on a grid with weights fitted to it
(``timesteps=fitted coefficients=fitted``, fitted once into each run's ``eval/schedules``) and its ODE limit (``dpmpp_3m``, 100 steps). The section between this script's markers
in ``benchmarks/distillation.md`` is replaced (the rest is kept) and the sample grids are copied to
``benchmarks/distillation/<row>_<nfe>.png``. Time on 2 idle CPU cores (an estimate from the recorded sampling and
fitting costs, not yet timed end to end): two distillations of --minutes each, plus ~10 min for reflow's 5,000
couplings and their sampler's grid fit (UniPC-3, 10 NFE, refine=4), ~8 min for the teacher's grid + weight fits at
1, 2 and 4 NFE, ~4 min for the ODE limit (1,000 x 100 NFE) and ~3 min for the rest; a shared machine takes longer.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORD = ROOT / "benchmarks" / "distillation.md"
BEGIN, END = "<!-- benchmarks/distillation.py: begin -->", "<!-- benchmarks/distillation.py: end -->"
METHODS = ("consistency", "reflow")
AIMS = "2 NFE: the better method <= 1.5x the teacher's ODE-limit digit FD; 1 NFE: <= 2.5x; each method at 2 NFE: <= 3x"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.SubprocessError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def train(overrides: list[str], run: Path, threads: int) -> float:
    """``train.py <overrides>`` into ``run`` (its output into ``<run>.log``); the command's wall time."""
    command = [sys.executable, str(ROOT / "train.py"), *overrides, "trainer.progress=false", f"hydra.run.dir={run}"]
    print(f"[{run.name}] train.py {' '.join(overrides)}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=run.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    Path(f"{run}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"train.py failed ({proc.returncode}), see {run}.log:\n{proc.stderr[-2000:]}")
    return wall


def distill(method: str, teacher: Path, out: Path, args) -> dict:
    """Distill with ``method``; its wall time, student steps and the teacher's model calls."""
    from omegaconf import OmegaConf

    from diffusion.training.checkpoint import load_checkpoint

    if args.smoke:
        budget = ["trainer=smoke", "trainer.max_steps=2"]
        if method == "reflow":  # UniPC-3 on its fixed grid: no fit
            budget += ["distill.pairs=16", "distill.pair_batch_size=8", "distill.pair_sampler.steps=2",
                       "distill.pair_sampler.timesteps=null"]
    else:
        budget = [f"trainer.max_minutes={args.minutes}", "trainer.fit_budget=true"]
    run = out / method
    shutil.rmtree(run, ignore_errors=True)
    wall = train([f"distill={method}", f"distill.teacher={teacher}", "trainer.bpd_every=0", *budget], run, args.threads)
    state = load_checkpoint(run)
    cfg = OmegaConf.create(state["config"])
    steps, batch = int(state["step"]), int(cfg.trainer.batch_size)
    if method == "consistency":
        per_step = 2 if cfg.distill.solver == "heun" else 1
        calls, how = steps * batch * per_step, f"{steps:,} steps x batch {batch} x {per_step} ({cfg.distill.solver})"
    else:
        nfe = pair_nfe(cfg.distill.pair_sampler, teacher)
        calls, how = int(cfg.distill.pairs) * nfe, f"{int(cfg.distill.pairs):,} pairs x {nfe} NFE"
    return {"method": method, "run": run, "wall_s": wall, "steps": steps, "calls": calls, "how": how}


def pair_nfe(node, teacher: Path) -> int:
    """The NFE of reflow's pair sampler, counted on one sample (its fitted grid is cached with the teacher)."""
    from diffusion.fitting import resolve_sampler
    from diffusion.runs import generate, load_run
    from diffusion.samplers import sampler_from_config

    run = load_run(teacher)
    shape, _ = run.shape()
    spec = resolve_sampler(sampler_from_config(node), run.process, run.model, shape,
                           schedules_dir=run.run_dir / "eval" / "schedules", meta=run.provenance)
    return int(generate(run.process, run.model, 1, shape, sampler=spec)[2].nfe)


def rows_to_score(args) -> list[tuple[str, str, int, str, dict]]:
    """(row, which run, NFE, sampler name, options): every sample set the table holds."""
    ode_steps = 10 if args.smoke else 100
    rows = [("teacher: ODE limit (dpmpp_3m)", "teacher", ode_steps, "dpmpp_3m", {})]
    for nfe in args.nfe:
        rows += [("teacher: ipndm, fitted grid + weights", "teacher", nfe, "ipndm",
                  {"timesteps": "fitted", "coefficients": "fitted"}),
                 ("consistency: consistency", "consistency", nfe, "consistency", {}),
                 ("reflow: ddim (Euler)", "reflow", nfe, "ddim", {})]
        if nfe >= 2:  # a fitted 1-step grid is Euler's; from 2 NFE the student's own fitted grid and weights help
            rows += [("reflow: dpmpp_2m", "reflow", nfe, "dpmpp_2m", {}),
                     ("reflow: ipndm, fitted grid + weights", "reflow", nfe, "ipndm",
                      {"timesteps": "fitted", "coefficients": "fitted"})]
    return rows


def score_all(runs: dict[str, Path], args, out: Path) -> list[dict]:
    from diffusion.evaluation.quality import data_quality
    from diffusion.fitting import resolve_sampler
    from diffusion.runs import generate, load_run, save_uint8_grid
    from diffusion.samplers.spec import SamplerSpec

    loaded = {name: load_run(path) for name, path in runs.items()}
    teacher = loaded["teacher"]
    shape, _ = teacher.shape()
    quality = data_quality(shape, teacher.cfg.data, fid=False, digit_fd=True, log=lambda s: None)
    fit = {"n": 16, "fine_steps": 10, "refine": 0} if args.smoke else {}
    results = []
    for row, which, nfe, name, options in rows_to_score(args):
        run = loaded[which]
        spec = resolve_sampler(SamplerSpec(name, nfe, **options), run.process, run.model, shape,
                               schedules_dir=run.run_dir / "eval" / "schedules", meta=run.provenance,
                               log=lambda s: print(f"  {s}", flush=True), **fit)
        images, _, stats = generate(run.process, run.model, args.n, shape, sampler=spec, seed=0,
                                    batch_size=min(250, args.n), progress=not args.smoke)
        scores = quality(images)
        method = row.split(":")[0]
        grid = out / f"{method if name == method else f'{method}_{name}'}_{nfe}.png"
        save_uint8_grid(images[:64], grid)
        results.append({"row": row, "nfe": int(stats.nfe), "fd": scores["digit_fd"], "kid": scores["digit_kid"],
                        "kid_std": scores["digit_kid_std"], "floor": scores["digit_fd_floor"], "grid": grid,
                        "seconds": stats.seconds})
        print(f"[{row} @ {int(stats.nfe)} NFE] digit FD {scores['digit_fd']:.2f}, KID {scores['digit_kid']:.4f}",
              flush=True)
    return results


def aims(results: list[dict]) -> list[str]:
    limit = results[0]["fd"]
    best = {}  # (method, nfe) -> the best digit FD of the method's samplers there
    for r in results:
        method = r["row"].split(":")[0]
        if method in METHODS:
            best[method, r["nfe"]] = min(best.get((method, r["nfe"]), float("inf")), r["fd"])

    def ratio(method: str, nfe: int) -> float:
        return best.get((method, nfe), float("nan")) / limit

    lines = []
    for nfe, bound in ((2, 1.5), (1, 2.5)):
        if any((m, nfe) in best for m in METHODS):
            m = min(METHODS, key=lambda m: best.get((m, nfe), float("inf")))
            ok = "met" if ratio(m, nfe) <= bound else "missed"
            lines.append(f"- {nfe} NFE, the better method ({m}): {ratio(m, nfe):.2f}x the ODE limit "
                         f"(aim <= {bound}x): **{ok}**")
    solver = {r["nfe"]: r["fd"] for r in results if r["row"].startswith("teacher: ipndm")}
    for m in METHODS:
        if (m, 2) in best:
            ok = "met" if ratio(m, 2) <= 3 else "missed"
            beside = f"; {best[m, 2] / solver[2]:.2f}x the teacher's fitted solver there" if 2 in solver else ""
            lines.append(f"- 2 NFE, {m}: {ratio(m, 2):.2f}x (aim <= 3x): **{ok}**{beside}")
    return lines


def section(results: list[dict], costs: list[dict], args, teacher: Path, loads: list[str], wall: float,
            grids: Path) -> str:
    limit = results[0]["fd"]
    lines = ["| row | NFE | digit FD | digit KID | FD / ODE limit | sampling s |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['nfe']} | {r['fd']:.2f} | {r['kid']:.3f} ± {r['kid_std']:.3f} | "
                     f"{r['fd'] / limit:.2f} | {r['seconds']:.0f} |")
    lines.append(f"| real training digits against the test split (floor) | | {results[0]['floor']:.2f} | | | |")
    cost = ["| method | wall s (whole train.py) | student steps | teacher model calls (image evaluations) |",
            "|---|---:|---:|---:|"]
    cost += [f"| {c['method']} | {c['wall_s']:.0f} | {c['steps']:,} | {c['calls']:,} ({c['how']}) |" for c in costs]
    pictures = " ".join(f"![{r['row']} @ {r['nfe']}]({grids.name}/{r['grid'].name})" for r in results)
    smoke = "SMOKE (tiny settings; not a measurement). " if args.smoke else ""
    budget = ("2 steps of distillation each" if args.smoke
              else f"{args.minutes:g} minutes of distillation each (trainer.max_minutes, trainer.fit_budget)")
    return (f"## MNIST default teacher: consistency distillation and reflow (`benchmarks/distillation.py`), "
            f"{datetime.date.today().isoformat()}\n\n{smoke}`python benchmarks/distillation.py {' '.join(args.argv)}`"
            f"\n\nTeacher: `{teacher}`. {budget}. "
            f"Machine: {cpu_model()}, {args.threads} threads; load averages (1/5/15 min) at the start, after the "
            f"distillations and at the end: {'; '.join(loads)}; {wall:.0f} s in all. {args.n:,} samples per row "
            f"(seed 0); digit FD and KID against the MNIST5k test split.\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(cost) + f"\n\nAims ({AIMS}):\n\n" + "\n".join(aims(results)) + "\n\n" + pictures + "\n")


def write_record(path: Path, text: str) -> None:
    """Replace this script's marked section of ``path`` (before anything else after the title, so that
    ``distillation_toy.py``, which rewrites from its own heading to the end, keeps it)."""
    old = path.read_text() if path.exists() else "# Distillation\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + "\n" + old[old.index(END) + len(END):].lstrip("\n")
    else:
        head, _, rest = old.partition("\n")
        new = f"{head}\n\n{block}\n{rest.lstrip(chr(10))}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, help="the teacher's run folder (default: train `python train.py`)")
    p.add_argument("--minutes", type=float, default=10.0, help="each distillation's training budget")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "distillation_benchmark")
    p.add_argument("--smoke", action="store_true", help="unet_tiny teacher of 4 steps, 2-step distillations, n=16, "
                                                        "NFE 1 and 2; writes <out>/distillation.md, not the record")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.smoke:
        args.n, args.nfe, args.minutes = 16, [1, 2], 0.0
    torch.set_num_threads(args.threads)
    out = args.out.resolve() / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    started, loads = time.perf_counter(), [load_average()]
    minutes = 1.5 if args.smoke else 2 * args.minutes + 25 + (0 if args.teacher else 10)
    print(f"distilling with {', '.join(METHODS)} for {args.minutes:g} min each, then {args.n} samples at NFE "
          f"{args.nfe} per row ({len(rows_to_score(args))} rows): about {minutes:g} minutes of 2 CPU cores; "
          f"machine: {cpu_model()}, load {loads[0]}", flush=True)
    teacher = args.teacher.resolve() if args.teacher else None
    if teacher is None:
        teacher = out / "teacher"
        train(["model=unet_tiny", "trainer=smoke"] if args.smoke else [], teacher, args.threads)
    costs = [distill(method, teacher, out, args) for method in METHODS]
    loads.append(load_average())
    results = score_all({"teacher": teacher, **{c["method"]: c["run"] for c in costs}}, args, out)
    loads.append(load_average())
    record = out / "distillation.md" if args.smoke else RECORD
    grids = record.with_suffix("")
    grids.mkdir(exist_ok=True)
    for r in results:
        r["grid"] = Path(shutil.copyfile(r["grid"], grids / r["grid"].name))
    text = section(results, costs, args, teacher, loads, time.perf_counter() - started, grids)
    write_record(record, text)
    print(text + f"\nwrote {record}", flush=True)
    return {"results": results, "costs": costs, "record": record}


if __name__ == "__main__":
    main()
