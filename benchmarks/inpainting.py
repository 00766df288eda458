r"""Inpainting against the exact conditional: replacement and RePaint with every sampler, by NFE.

    python benchmarks/inpainting.py              # ~15 minutes on 2 shared CPU cores
    python benchmarks/inpainting.py --quick      # smoke run

**Target** (``tests/conditioning/helpers.py``): a 4-D Gaussian mixture, three components that overlap in the two
known coordinates and lie far apart in the two missing ones (random rotations couple them). Two observations x_o
in the overlap, "obs 0" and "obs 2", whose exact conditionals p(x_m | x_o) (``GaussianMixture.conditional``) have
weights (0.566, 0.314, 0.120) and (0.059, 0.370, 0.571), far from the prior's 1/3 each. The model is the exact eps
of the mixture, so every error is the conditioning method's (and the sampler's), none is a network's.

**Scores**, for n completions of one observation: FD / floor, the Frechet distance of the missing coordinates to
the exact conditional's moments divided by the mean FD of n exact conditional draws; and the weight error, the
total variation between the exact conditional weights and the samples' mean responsibilities (its floor, exact
draws, is printed too). NFE is counted by ``CountingModel`` (pc: 2 per step with one corrector).

Writes ``benchmarks/inpainting.md``. No timings: the numbers are deterministic (fixed seeds).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.device import describe_machine  # noqa: E402
from diffusion import inpaint, processes, sample  # noqa: E402
from diffusion.samplers import CountingModel  # noqa: E402

_spec = importlib.util.spec_from_file_location("inpainting_helpers", ROOT / "tests" / "conditioning" / "helpers.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

SAMPLERS = [("vpsde", "ddim", {}), ("vpsde", "ddim", {"eta": 1.0}), ("vpsde", "euler_maruyama", {}),
            ("vpsde", "pc", {}), ("vpsde", "dpmpp_2m", {}), ("ddpm", "ddpm", {})]
#: (method label, method, RePaint options, step counts)
METHODS = [("replacement", "replacement", {}, [10, 50, 200, 1000]),
           ("repaint j5 r5", "repaint", {"jump_length": 5, "resamples": 5}, [10, 50, 200]),
           ("repaint j10 r10 (paper)", "repaint", {"jump_length": 10, "resamples": 10}, [20, 100])]


def cpu_model() -> str:
    return describe_machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "inpainting.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = [(label, m, o, s[:2]) for label, m, o, s in METHODS] if args.quick else METHODS
    samplers = SAMPLERS[:2] if args.quick else SAMPLERS
    gm = helpers.target()
    procs = {"vpsde": processes.VPSDE(), "ddpm": processes.DDPM("linear", 1000)}
    lines = []
    for towards in (0, 2):
        x = helpers.observation(gm, towards)
        cond = gm.conditional(x, helpers.KNOWN)
        fd_floor, w_floor = helpers.floor(cond, args.n)
        vp = procs["vpsde"]
        u = sample(vp, gm.eps_model(vp), (args.n, 4), "ddim", 100, torch.Generator().manual_seed(0))
        fd_u, w_u = helpers.scores(u[:, ~helpers.KNOWN], cond)
        head = (f"\n### obs {towards}: exact weights {', '.join(f'{w:.3f}' for w in cond.weights)}; floor FD "
                f"{fd_floor:.4f}, weight error {w_floor:.3f}; ignoring x_o (unconditional ddim 100): "
                f"FD / floor {fd_u / fd_floor:.1f}, weight error {w_u:.3f}\n")
        print(head, flush=True)
        lines += [head, "| sampler | method | steps | NFE | FD / floor | weight error |", "|---|---|--:|--:|--:|--:|"]
        for proc_name, sampler, options in samplers:
            process = procs[proc_name]
            name = sampler + "".join(f" {k}={v}" for k, v in options.items()) + ("" if proc_name == "vpsde" else " (DDPM)")
            for label, method, extra, steps_list in methods:
                for steps in steps_list:
                    model = CountingModel(gm.eps_model(process))
                    out = inpaint(process, model, x.float().repeat(args.n, 1), helpers.KNOWN, sampler=sampler,
                                  steps=steps, method=method, generator=torch.Generator().manual_seed(0),
                                  **extra, **options)
                    fd, w = helpers.scores(out[:, ~helpers.KNOWN], cond)
                    row = f"| {name} | {label} | {steps} | {model.nfe} | {fd / fd_floor:.2f} | {w:.3f} |"
                    print(row, flush=True)
                    lines.append(row)
    if args.quick:
        return
    text = Path(args.out).read_text() if Path(args.out).exists() else ""
    marker = "<!-- table -->"
    prefix = text.split(marker)[0] if marker in text else "# Inpainting against the exact conditional\n\n"
    stamp = (f"\n{marker}\nRun {datetime.date.today()} on {cpu_model()}, torch {torch.__version__}, n = {args.n} "
             f"completions per row (`python benchmarks/inpainting.py`).\n")
    Path(args.out).write_text(prefix + stamp + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
