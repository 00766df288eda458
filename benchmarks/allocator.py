"""What ``diffusion.allocator.keep_freed_memory`` (glibc malloc reusing freed CPU tensors) does to the commands users run.

    python benchmarks/allocator.py --ckpt runs/<a run of python train.py>      # ~15 min on 2 CPU cores
    python benchmarks/allocator.py --ckpt runs/<run> --repeats 1 --record     # appends the table to allocator.md

Each command runs in its own process, with the setting (the entry points' default) and without it
(``DIFFUSION_MALLOC=default``), alternating, ``--repeats`` times each; the table gives the medians of wall time,
user and system CPU time, minor page faults and peak resident memory, and the ratio of the wall times. The
commands:

- ``sample.py``: 512 samples, ``dpmpp_2m`` 20 steps, batch 256;
- ``evaluate.py task=schedule sampler=fewstep steps=5``: the time-grid fit that ``sampler=fewstep`` runs on first use
  (into a temporary folder);
- ``train.py``: 150 steps of the default run (no grids, checkpoints at the end only), in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.allocator import SWITCH  # noqa: E402
from diffusion.device import describe_machine  # noqa: E402


def commands(ckpt: str, tmp: Path) -> dict[str, tuple[str, list[str]]]:
    """name (for --only) -> (the table's label, the command line)."""
    py = sys.executable
    return {
        "sample": ("sample.py, 512 samples, dpmpp_2m 20 steps, batch 256",
            [py, "sample.py", f"ckpt={ckpt}", "sampler=dpmpp_2m", "sampler.steps=20", "n=512", "batch_size=256",
             f"out={tmp / 'samples'}", "progress=false"]),
        "fit": ("evaluate.py task=schedule sampler=fewstep steps=5 (the fewstep fit)",
            [py, "evaluate.py", f"ckpt={ckpt}", "task=schedule", "sampler=fewstep", "steps=5", f"out={tmp / 'eval'}",
             "progress=false"]),
        "train": ("train.py, 150 steps of the default run",
            [py, "train.py", "trainer.max_steps=150", "trainer.sample_every=0", "trainer.bpd_every=0",
             "trainer.ckpt_every=1000", "trainer.progress=false", f"hydra.run.dir={tmp / 'run'}"]),
    }


def timed(cmd: list[str], allocator: bool) -> dict[str, float]:
    """Run ``cmd`` in the repository; its wall time and its own rusage (``os.wait4``)."""
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    if not allocator:
        env[SWITCH] = "default"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "faults": usage.ru_minflt,
            "rss": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="a run folder or checkpoint of `python train.py`")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=("sample", "fit", "train"), help="the commands to run (default: all)")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/allocator.md")
    args = p.parse_args()
    lines = [f"Machine: {describe_machine()}; {time.strftime('%Y-%m-%d %H:%M')}; load average at the start "
             f"{os.getloadavg()[0]:.1f}; medians of {args.repeats} run(s) each, alternating.", "",
             "| command | malloc | wall s | user s | sys s | minor faults | peak RSS MiB | wall, kept / default |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (label, cmd) in commands(args.ckpt, Path(tmp)).items():
            if args.only and name not in args.only:
                continue
            runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(args.repeats):
                for allocator in (True, False):
                    runs[allocator].append(timed(cmd, allocator))
                    for sub in ("samples", "eval", "run"):  # each run starts from nothing (no resume, no reuse)
                        shutil.rmtree(Path(tmp) / sub, ignore_errors=True)
            med = {a: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for a, rs in runs.items()}
            for allocator in (True, False):
                m = med[allocator]
                ratio = f"{med[True]['wall'] / med[False]['wall']:.2f}" if allocator else ""
                lines.append(f"| {label} | {'kept (default)' if allocator else 'glibc default'} | {m['wall']:.1f} | "
                             f"{m['user']:.1f} | {m['sys']:.1f} | {m['faults']:,.0f} | {m['rss']:,.0f} | {ratio} |")
            print(lines[-2] + "\n" + lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.record:
        out = ROOT / "benchmarks" / "allocator.md"
        head = "" if out.is_file() else ("# glibc malloc keeping freed CPU tensors (`diffusion/allocator.py`)\n\n"
                                         "Written by `benchmarks/allocator.py`; newest last.\n")
        with out.open("a") as f:
            f.write(f"{head}\n## `python benchmarks/allocator.py {' '.join(sys.argv[1:])}`\n\n{table}\n")


if __name__ == "__main__":
    main()
