"""Which formulation learns MNIST best on a small budget: DDPM/eps, VP/DSM, EDM and rectified flow (plus DDPM/eps
with Min-SNR-gamma, the one loss here it applies to), everything else fixed.

    python benchmarks/formulations.py                      # the measurement: 10 min of training each (~1 h on 2 CPUs)
    python benchmarks/formulations.py --smoke              # seconds of training: proves the script runs, measures nothing

Fixed: model unet_mnist, data MNIST5k, the trainer's defaults except the time budget (``--minutes`` of the training
loop per formulation, ``trainer.max_minutes``), the seed. Each formulation trains with ``train.py`` in a subprocess
(its own run folder under ``--out``), then from its EMA weights:

- digit-feature Frechet distance (``evaluation.digit_features``) of ``--samples`` samples at each NFE of ``--nfe``,
  with each sampler of ``--samplers`` (heun gets (NFE + 1) // 2 steps, 2 steps - 1 NFE); the table keeps the best
  sampler per NFE and names it; beside it the real-vs-real floor: the FD of as many real training digits;
- bits/dim of ``--bpd-images`` held-out digits by the ODE (Hutchinson, 1 Rademacher probe, dopri5 at rtol = atol =
  ``--ode-tol``, 1e-4) and by the variational bound (64 time samples; DDPM's 1,000 terms for the discrete process).

Prints a markdown table; ``--record`` appends it, with the machine, to benchmarks/formulations.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.data.mnist5k import MNIST5k  # noqa: E402
from diffusion.device import describe_machine  # noqa: E402
from diffusion.evaluation.digit_features import load_digit_features  # noqa: E402
from diffusion.evaluation.digit_metric import DigitMetric  # noqa: E402
from diffusion.runs import generate  # noqa: E402
from diffusion.evaluation.likelihood_table import likelihood_table  # noqa: E402
from diffusion.processes import MARKOV_CHAIN  # noqa: E402
from diffusion.runs import load_model  # noqa: E402

#: name -> train.py overrides (the formulation: process, loss, prediction, and what EDM's label needs)
FORMULATIONS = {
    "ddpm_eps": ["process=ddpm", "loss=eps_mse", "prediction=eps"],
    "ddpm_eps_minsnr5": ["process=ddpm", "loss=eps_mse", "loss.min_snr_gamma=5", "prediction=eps"],
    "vp_dsm": ["process=vpsde", "loss=dsm", "prediction=eps"],
    # c_noise = ln(sigma)/4 spans ~[-1.5, 1.1]: random Fourier features resolve it, the step-index sinusoid does not
    "edm": ["process=edm", "loss=edm", "prediction=edm", "model.embedding=fourier"],
    "rectified_flow": ["process=rectified_flow", "loss=flow_matching", "prediction=velocity"],
}


def train(name: str, overrides: list[str], out: Path, minutes: float, smoke: bool, steps: int = 0,
          extra: tuple[str, ...] = ()) -> Path:
    run = out / name
    if (run / "checkpoints").exists() and any((run / "checkpoints").glob("*.pt")):
        print(f"[{name}] reusing {run}", flush=True)
        return run
    budget = ["trainer.max_steps=3", "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.ckpt_every=3",
              "trainer.precision=fp32", "trainer.sample_count=4"] if smoke \
        else [f"trainer.max_steps={steps}", "trainer.max_minutes=0"] if steps \
        else [f"trainer.max_minutes={minutes}", "trainer.max_steps=1000000", "trainer.fit_budget=false"]
    cmd = [sys.executable, str(ROOT / "train.py"), "model=unet_mnist", "data=mnist5k", *overrides, *budget, *extra,
           "trainer.sample_every=0", "trainer.bpd_every=0", "trainer.progress=false", f"hydra.run.dir={run}"]
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"[{name}] trained in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def sampler_steps(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def evaluate(name: str, run: Path, args, digits, test_images: torch.Tensor) -> dict:
    model, process, cfg = load_model(run)
    row: dict = {"formulation": name, "process": repr(process), "prediction": str(cfg.prediction),
                 "loss": str(cfg.loss._target_).rsplit(".", 1)[-1]}
    for nfe in args.nfe:
        best = None
        for sampler in args.samplers:
            steps = sampler_steps(sampler, nfe)
            images, _, stats = generate(process, model, args.samples, (1, 28, 28), sampler=sampler, steps=steps,
                                        seed=args.seed, batch_size=args.batch)
            fd = digits.frechet_distance(images)
            print(f"[{name}] {sampler} steps={steps} (NFE {stats.nfe:g}): digit FD {fd:.3f}", flush=True)
            if best is None or fd < best[0]:
                best = (fd, sampler, stats.nfe)
        row[f"fd@{nfe}"] = best
    t_samples = args.bound_t_samples or (None if MARKOV_CHAIN in process.offers else 64)  # None: all N DDPM terms
    table = likelihood_table(process, model, test_images[:args.bpd_images], divergence="hutchinson", probes=1,
                             rtol=args.ode_tol, atol=args.ode_tol, t_samples=t_samples,
                             batch_size=args.batch, seed=args.seed, variances=("beta_tilde",), sde_bound=False)
    # DDPM's own bound is its 1000-step chain's (posterior variance beta_tilde); the SDEs' is the continuous one
    bound = next((e.name for e in table.estimates if e.name.startswith("DDPM bound")), "variational bound")
    row["bpd_ode"], row["bpd_bound"] = table["ODE NLL"].mean, table[bound].mean
    row["bpd_ode_se"], row["bpd_bound_se"] = table["ODE NLL"].stderr, table[bound].stderr  # over images
    return row


def markdown(rows: list[dict], floor: float, args) -> str:
    head = ["formulation", "process / loss / prediction"] + [f"digit FD @ {n} NFE (sampler)" for n in args.nfe] + \
        ["bits/dim ODE", "bits/dim bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["formulation"], f"{r['process']} / {r['loss']} / {r['prediction']}"]
        cells += [f"{r[f'fd@{n}'][0]:.3f} ({r[f'fd@{n}'][1]}, {r[f'fd@{n}'][2]:g})" for n in args.nfe]
        cells += [f"{r['bpd_ode']:.3f} +- {r['bpd_ode_se']:.3f}", f"{r['bpd_bound']:.3f} +- {r['bpd_bound_se']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| real-vs-real floor | {args.samples} real training digits | " + " | ".join(f"{floor:.3f}" for _ in args.nfe) + " | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training-loop minutes per formulation")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per formulation instead of --minutes "
                   "(the same work on any machine)")
    p.add_argument("--set", nargs="*", default=[], help="more train.py overrides for every formulation, "
                   "e.g. --set trainer.precision=fp32")
    p.add_argument("--formulations", nargs="+", default=list(FORMULATIONS), choices=list(FORMULATIONS))
    p.add_argument("--samplers", nargs="+", default=["dpmpp_2m", "ddim", "heun"])
    p.add_argument("--nfe", nargs="+", type=int, default=[10, 20, 50])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--bpd-images", type=int, default=64)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ode-tol", type=float, default=1e-4, help="dopri5 rtol = atol of the bits/dim ODE")
    p.add_argument("--bound-t-samples", type=int, default=0, help="time samples of the bound (0: 64, all N for DDPM)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "formulations")
    p.add_argument("--smoke", action="store_true", help="3 training steps, few samples: checks the script only")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/formulations.md")
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.bpd_images, args.batch, args.nfe = min(args.samples, 16), min(args.bpd_images, 2), 16, [2, 4]
        args.ode_tol, args.bound_t_samples = 1e-2, 4
        args.out = args.out.with_name(args.out.name + "_smoke")
    torch.manual_seed(args.seed)
    digits = load_digit_features(log=print)
    test_images = MNIST5k("test", as_uint8=True).images
    # as many real digits as samples (same-n bias): training digits against the test split the samples are scored on
    floor = DigitMetric(digits).floor(args.samples)["digit_fd_floor"]
    rows = []
    for name in args.formulations:
        run = train(name, FORMULATIONS[name], args.out, args.minutes, args.smoke, args.steps, tuple(args.set))
        rows.append(evaluate(name, run, args, digits, test_images))
    table = markdown(rows, floor, args)
    machine = f"{describe_machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    text = (f"\n## {'SMOKE RUN (3 training steps: numbers mean nothing)' if args.smoke else f'{budget} per formulation'}"
            f", {time.strftime('%Y-%m-%d')}\n\n`python benchmarks/formulations.py {' '.join(sys.argv[1:])}`\n\nMachine: {machine}. Samples: {args.samples} per cell; bits/dim on "
            f"{args.bpd_images} held-out digits.\n\n{table}\n")
    print(text)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    if args.record:
        with open(ROOT / "benchmarks" / "formulations.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
