"""The MNIST default run beside lucidrains' denoising-diffusion-pytorch: the same 4,500 training digits, the same
minutes, the same scores.

    python benchmarks/mnist_peer.py --record                         # trains `python train.py` first (minutes)
    python benchmarks/mnist_peer.py --run runs/<run> --seconds S     # or an existing default run that took S s

Ours: ``python train.py`` (no arguments: the default run), timed as a whole command (start-up, training, final
grid and bits/dim), then ``--samples`` digits from its EMA weights with the run's own sampler (``cfg.sampler``, drawn
in-process: ``sample.py ckpt=<run>`` would draw with sample.yaml's default, DDIM, unless given ``sampler=``). The peer (``benchmarks/lib/ddp_peer.py``): its README's ``Unet`` +
``GaussianDiffusion`` with the ``Trainer`` example's settings, ``Unet(dim, dim_mults=(1, 2, 4), channels=1)`` (28
pixels take two halvings) with ``dim`` nearest our parameter count, no flips (the default run has none), trained on
the MNIST5k train split for as many seconds as our whole command took (its start-up not counted: the peer is given
the larger share), sampled by its DDIM with ``--peer-steps`` steps. Both are scored by the digit metric
(``diffusion.evaluation.quality``: Frechet distance and KID in the shipped digit classifier's features against the
MNIST5k test split, beside real training digits at the same n). ``--record`` appends the table and the machine to
``benchmarks/mnist_peer.md`` and the grids to ``benchmarks/mnist_peer/``.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.lib import ddp_peer  # noqa: E402
from benchmarks.lib.report import load_average  # noqa: E402
from diffusion.device import describe_machine  # noqa: E402

RECORD = ROOT / "benchmarks" / "mnist_peer.md"
GRIDS = ROOT / "benchmarks" / "mnist_peer"


def train_default(out: Path, threads: int) -> tuple[Path, float]:
    run = out / "ours"
    print("[ours] python train.py", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer.progress=false", f"hydra.run.dir={run}"],
                          cwd=out, env=ddp_peer.thread_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / "ours_train.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"train.py failed ({proc.returncode}), see {out / 'ours_train.txt'}:\n{proc.stderr[-2000:]}")
    return run, wall


def sample_ours(run_dir: Path, n: int) -> tuple[torch.Tensor, dict]:
    from diffusion.fitting import resolve_sampler
    from diffusion.runs import generate, load_run
    from diffusion.samplers import sampler_from_config
    from diffusion.training.checkpoint import load_checkpoint

    run = load_run(run_dir)
    shape, _ = run.shape()
    spec = resolve_sampler(sampler_from_config(run.cfg.sampler), run.process, run.model, shape,
                           schedules_dir=run.run_dir / "eval" / "schedules", meta=run.provenance)
    images, _, stats = generate(run.process, run.model, n, shape, sampler=spec, seed=0, batch_size=250,
                                progress=False)
    params = sum(p.numel() for p in run.model.parameters())
    what = f"{run.cfg.process._target_.rsplit('.', 1)[1]}, {run.cfg.model._target_.rsplit('.', 1)[1]}"
    return images, {"steps": int(load_checkpoint(run_dir)["step"]), "params": params, "what": what,
                    "sampler": f"{spec.name} {int(stats.nfe)} NFE", "sample_s": stats.seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="an existing default run (with --seconds: its train.py wall time)")
    p.add_argument("--seconds", type=float, help="the wall time of --run's train.py command")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--peer-steps", type=int, default=50, help="the peer's DDIM steps")
    p.add_argument("--peer-path", default=str(ROOT.parent / "peers" / "ddp"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "mnist_peer_benchmark")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    if (args.run is None) != (args.seconds is None):
        sys.exit("--run and --seconds go together: an existing run and how long its train.py took")
    torch.set_num_threads(args.threads)
    from diffusion.data import MNIST5k
    from diffusion.evaluation.quality import data_quality, dataset_images, digit_reference
    from diffusion.runs import save_uint8_grid

    out = args.out.resolve() / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    started, loads = time.perf_counter(), [load_average()]
    print(f"the default run and the peer for the same minutes, {args.samples} samples each; machine: "
          f"{describe_machine()}, load {loads[0]}", flush=True)
    run, wall = (args.run.resolve(), args.seconds) if args.run else train_default(out, args.threads)
    ours_images, ours = sample_ours(run, args.samples)
    loads.append(load_average())
    digits = dataset_images(MNIST5k(split="train", as_uint8=True))  # (N, 1, 28, 28) uint8
    data = out / "mnist5k_train.npz"
    np.savez(data, images=digits.permute(0, 2, 3, 1).numpy())
    dim = ddp_peer.nearest_dim(ours["params"], args.peer_path, (1, 2, 4), 1)
    print(f"[peer] Unet(dim={dim}, dim_mults=(1, 2, 4), channels=1) for {wall:.0f} s", flush=True)
    peer = ddp_peer.run(data, wall / 60, out / "peer", dim=dim, dim_mults=(1, 2, 4), steps=args.peer_steps,
                        samples=args.samples, flip=False, peer_path=args.peer_path, threads=args.threads)
    loads.append(load_average())
    quality = data_quality((1, 28, 28), digit_reference(), fid=False, digit_fd=True, log=lambda s: None)
    rows = [dict(who="ours", wall_s=wall, images=ours_images, grid=out / "ours_grid.png", **ours),
            dict(who="peer", wall_s=peer["wall_s"], steps=peer["steps"], params=peer["params"],
                 sampler=f"DDIM {args.peer_steps} steps", sample_s=peer["sample_s"], images=peer["images"],
                 grid=peer["grid"], what=f"GaussianDiffusion (pred_v, sigmoid schedule), Unet(dim={dim}, "
                                         "dim_mults=(1, 2, 4))")]
    save_uint8_grid(ours_images[:64], rows[0]["grid"])
    lines = ["| run | train wall s | steps | batch | params | sampler | sampling s | digit FD | digit KID |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        s = quality(r.pop("images"))
        r.update(fd=s["digit_fd"], kid=s["digit_kid"], floor=s["digit_fd_floor"])
        lines.append(f"| {r['who']} ({r['what']}) | {r['wall_s']:.0f} | {r['steps']:,} | 64 | "
                     f"{r['params'] / 1e6:.2f}M | {r['sampler']} | {r['sample_s']:.0f} | {r['fd']:.2f} | "
                     f"{s['digit_kid']:.3f} ± {s['digit_kid_std']:.3f} |")
    lines.append(f"| real training digits against the test split (floor, n = {args.samples:,}) | | | | | | | {rows[0]['floor']:.2f} | |")
    table = "\n".join(lines) + "\n"
    print(table, flush=True)
    (out / "table.md").write_text(table)
    if args.record:
        GRIDS.mkdir(exist_ok=True)
        stamp = datetime.date.today().isoformat()
        grids = []
        for r in rows:
            target = GRIDS / f"{stamp}_{r['who']}.png"
            shutil.copyfile(r["grid"], target)
            grids.append(f"![{r['who']}]({GRIDS.name}/{target.name})")
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        with open(RECORD, "a") as f:
            f.write(f"\n## {stamp}\n\n`python benchmarks/mnist_peer.py {argv_text}`\n\n"
                    f"Machine: {describe_machine()}, {args.threads} threads; load averages (1/5/15 min) at the "
                    f"start, after ours and after the peer: {'; '.join(loads)}; "
                    f"{time.perf_counter() - started:.0f} s in all. {args.samples:,} samples each (seed 0) against "
                    f"the MNIST5k test split.\n\n{table}\n{' '.join(grids)}\n")
        print(f"recorded in {RECORD}")


if __name__ == "__main__":
    main()
