"""The default run, measured: ``python train.py`` as a new user types it, then its digits scored.

    python benchmarks/default_run.py                               # the default command, precision=auto
    python benchmarks/default_run.py trainer.precision=fp32        # on an AMX machine: the stand-in for CPUs without it
    python benchmarks/default_run.py --isa avx2 trainer.precision=fp32   # kernels limited to AVX2, as on an AMD CPU
    python benchmarks/default_run.py --record [overrides ...]      # append the result to benchmarks/default_run.md

It runs ``train.py`` with the given overrides (none: the default run) in a fresh run folder under ``--out`` and
times the whole command (start-up, training, final grid and bits/dim). Then, from the run's EMA weights:
``--samples`` digits with dpmpp_2m at 10 NFE (``evaluate.py task=sweep``), scored by the project's digit metric
(Frechet distance in the shipped digit classifier's features, to the MNIST5k test split) beside the real-vs-real
floor at the same n. The table names the machine (CPU model, cores, AMX or not; the GPU), the precision
``precision=auto`` chose, the steps done and why the loop stopped, wall time, bits/dim and the final grid, which
``--record`` copies to ``benchmarks/default_run/``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.device import ISA_ENV, describe_machine  # noqa: E402
from diffusion.training.checkpoint import load_checkpoint  # noqa: E402


def bits_per_dim(run: Path) -> float | None:
    """The last ``eval/bits_per_dim`` the run logged to TensorBoard (its end-of-run estimate)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    if "eval/bits_per_dim" not in events.Tags()["scalars"]:
        return None
    return events.Scalars("eval/bits_per_dim")[-1].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="train.py overrides (none: the default run)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "default_run_benchmark")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/default_run.md")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                        help="limit PyTorch's CPU kernels to this instruction set (a stand-in for CPUs without AVX-512 "
                             "and AMX; precision=auto then measures bf16 without AMX too)")
    args = parser.parse_args()
    os.environ.update(ISA_ENV.get(args.isa, {}))  # for train.py and evaluate.py; describe_machine names the limit

    run = args.out / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    command = ["train.py", *args.overrides]
    start = time.perf_counter()
    log = subprocess.run([sys.executable, *command, f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if log.returncode != 0:
        sys.exit(f"train.py failed ({log.returncode}):\n{log.stderr[-3000:]}")
    output = log.stdout + log.stderr
    (run / "train_output.txt").write_text(output)

    state = load_checkpoint(run)
    step, trainer = state["step"], OmegaConf.create(state["config"]).trainer
    precision, max_steps = trainer.precision, trainer.max_steps
    stopped = "time budget" if "used up at step" in output else f"max_steps={max_steps}"
    grids = sorted((run / "samples").glob("step_*.png"), key=lambda p: int(p.stem.split("_")[1]))

    subprocess.run([sys.executable, "evaluate.py", f"ckpt={run}", "task=sweep", "sweep.samplers=[dpmpp_2m]",
                    "sweep.steps=[10]", f"n={args.samples}", "fid.inception=false", "progress=false"],
                   cwd=ROOT, check=True, capture_output=True)
    row = json.loads((run / "eval" / "sweep" / "sweep.json").read_text())["rows"][0]

    machine = describe_machine("cuda" if torch.cuda.is_available() else "cpu")
    picture = grids[-1] if grids else None
    if args.record and picture is not None:
        keep = ROOT / "benchmarks" / "default_run" / f"{run.name}.png"
        keep.parent.mkdir(exist_ok=True)
        shutil.copy(picture, keep)
        picture = keep.relative_to(ROOT / "benchmarks")
    bpd = bits_per_dim(run)
    table = "\n".join([
        f"### `python {' '.join(command)}` on {machine}, {datetime.date.today()}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| what | value |",
        "|---|---|",
        f"| precision (chosen by `precision=auto` unless set) | {precision} |",
        f"| steps done | {step} (stopped by {stopped}) |",
        f"| wall time, whole command | {wall / 60:.1f} min ({wall:.0f} s) |",
        f"| bits/dim (end of run, held-out digits) | {'n/a' if bpd is None else f'{bpd:.3f}'} |",
        f"| digit FD, dpmpp_2m 10 NFE, {row['digit_n']} samples | {row['digit_fd']:.2f} "
        f"(real-vs-real floor at the same n: {row['digit_fd_floor']:.2f}) |",
        f"| final grid | {'none' if picture is None else f'![final grid]({picture})'} |",
    ])
    print(table)
    if args.record:
        with open(ROOT / "benchmarks" / "default_run.md", "a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
