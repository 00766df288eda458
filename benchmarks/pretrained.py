r"""Likelihoods and FID against NFE of the official DDPM CIFAR-10 model (Ho et al. 2020, ``google/ddpm-cifar10-32``),
through the same commands a user types (``evaluate.py ckpt=hf:...``); the numbers for benchmarks/pretrained.md.

    python benchmarks/pretrained.py --device cuda                        # needs internet once (model and CIFAR-10)
    python benchmarks/pretrained.py --ckpt /path/to/ddpm-cifar10-32 --data-root data/cifar10 --n-likelihood 1000

Runs, in order, and prints each command before it starts:

1. ``evaluate.py task=likelihood``: the probability-flow ODE NLL, the SDE bound and the DDPM chain's bounds
   (beta_tilde, analytic variances; full chain and K=10) in bits/dim on the first ``--n-likelihood`` CIFAR-10 test
   images (the paper's figures are on all 10,000);
2. ``evaluate.py task=sweep``: FID (torch-fidelity's Inception, 50k-sample FID when ``--n-fid 50000``) of each
   sampler in ``--samplers`` at each NFE in ``--steps``.

The tables land in ``<out>/likelihood.md`` and ``<out>/sweep/sweep.md`` and are printed with the machine. Cost: the
ODE NLL takes a few hundred 35.7M-parameter network calls per image (with a vector-Jacobian product each); 50k
samples per sweep row take minutes per row on one modern GPU at 10-20 NFE, hours on a CPU.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.device import describe_machine, pick_device  # noqa: E402


def commands(args: argparse.Namespace) -> list[list[str]]:
    common = [f"ckpt={args.ckpt}", f"data={args.data}", f"device={args.device}", f"batch_size={args.batch_size}",
              *([f"data.root={args.data_root}"] if args.data_root else []),
              *(["data.download=true"] if args.download else [])]
    likelihood = [sys.executable, str(ROOT / "evaluate.py"), *common, "task=likelihood", f"n={args.n_likelihood}",
                  f"out={args.out}"]
    sweep = [sys.executable, str(ROOT / "evaluate.py"), *common, "task=sweep", f"n={args.n_fid}",
             f"sweep.samplers=[{','.join(args.samplers)}]", f"sweep.steps=[{','.join(map(str, args.steps))}]",
             f"out={args.out}"]
    return [c for c, on in ((likelihood, not args.skip_likelihood), (sweep, not args.skip_fid)) if on]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="hf:google/ddpm-cifar10-32", help="hub id (hf:...) or a diffusers folder")
    parser.add_argument("--data", default="cifar10", help="configs/data option the model was trained on")
    parser.add_argument("--data-root", default=None, help="CIFAR-10's torchvision folder (default data/cifar10)")
    parser.add_argument("--download", action="store_true", help="let torchvision fetch CIFAR-10 if it is missing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-likelihood", type=int, default=10000, help="CIFAR-10 test images")
    parser.add_argument("--n-fid", type=int, default=50000, help="samples per sweep row")
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp_2m", "unipc", "ipndm"])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--out", default="eval/ddpm_cifar10_32")
    parser.add_argument("--skip-likelihood", action="store_true")
    parser.add_argument("--skip-fid", action="store_true")
    args = parser.parse_args()
    machine = describe_machine(pick_device(args.device))
    print(f"machine: {machine}\nmodel: {args.ckpt}; results in {args.out}/")
    for cmd in commands(args):
        print("$ " + " ".join(cmd[1:]), flush=True)
        done = subprocess.run(cmd, cwd=ROOT)
        if done.returncode:
            return done.returncode
    out = Path(args.out)
    for table in (out / "likelihood.md", out / "sweep" / "sweep.md"):
        if table.is_file():
            print(f"\n## {table} ({machine})\n\n{table.read_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
