"""CIFAR-10 on a CPU: sample quality against wall time, ours (``experiment=cifar10_cpu``) beside lucidrains'
denoising-diffusion-pytorch, trained on the same real images for the same minutes and scored by the same code.

    python benchmarks/cifar10_cpu.py --record                          # 5, 10, 20 and 30 minutes, both (~2.5 h)
    python benchmarks/cifar10_cpu.py --minutes 10 30 --only ours --record
    python benchmarks/cifar10_cpu.py --minutes 1 --samples 200         # end-to-end check (minutes)

For every budget M: ``train.py experiment=cifar10_cpu data=npz`` on the 10,000 shared training images with
``trainer.max_minutes=M`` (the budget fit shortens the schedule to M), then ``sample.py`` draws ``--samples``
images from its EMA weights. The peer: its README's ``Unet`` + ``GaussianDiffusion`` recipe with the settings of its
``Trainer`` example (Adam 8e-5, betas (0.9, 0.99), batch 32 x 2 accumulation steps, grad-norm clip 1, EMA 0.995
every 10 steps, random flips), ``Unet(dim, dim_mults=(1, 2, 4, 8))`` with ``dim`` chosen for the parameter count
nearest ours, trained for M minutes of wall time in a subprocess (``PYTHONPATH=--peer-path``; install it there
with ``pip install --no-deps --target <path> denoising-diffusion-pytorch ema-pytorch accelerate``), sampled by
its DDIM with ``--peer-steps`` steps. Both run with ``--threads`` threads.

Scores (``diffusion.evaluation.fid.FID``, torch-fidelity's Inception): KID (unbiased; leads) and FID of the
samples against the 1,000 shared test images, beside the floor: the first 1,000 real training images against the
same test images. The test images' Inception statistics are cached (``$DIFFUSION_CACHE``). ``--record`` appends
the table, machine (lscpu model name), load averages and commands to ``benchmarks/cifar10_cpu.md`` and copies the
sample grids to ``benchmarks/cifar10_cpu/``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
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
from benchmarks.lib.ddp_peer import thread_env  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "cifar10"
RECORD = ROOT / "benchmarks" / "cifar10_cpu.md"
GRIDS = ROOT / "benchmarks" / "cifar10_cpu"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def read_split(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f["images"]).permute(0, 3, 1, 2).contiguous(), f["labels"]


# ---- ours ---------------------------------------------------------------------------------------------------------

def run_ours(minutes: float, out: Path, args, params: int) -> dict:
    from omegaconf import OmegaConf

    from diffusion.runs.store import read_manifest
    from diffusion.training.checkpoint import load_checkpoint

    run = out / f"ours_{minutes:g}min"
    shutil.rmtree(run, ignore_errors=True)
    train = [sys.executable, "train.py", "experiment=cifar10_cpu", "data=npz", f"data.path={args.train}",
             f"data.test_path={args.test}", f"trainer.max_minutes={minutes}", "trainer.progress=false",
             *args.set, f"hydra.run.dir={run}"]
    print(f"[ours {minutes:g} min] {' '.join(train[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(train, cwd=ROOT, env=thread_env(args.threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"ours_{minutes:g}min_train.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    state = load_checkpoint(run)
    cfg = OmegaConf.create(state["config"])
    sample = [sys.executable, "sample.py", f"ckpt={run}", f"n={args.samples}", "batch_size=250",
              f"sampler={args.sampler}", f"sampler.steps={args.steps}", "progress=false",
              f"out={run / 'bench_samples'}"]
    begin = time.perf_counter()
    proc = subprocess.run(sample, cwd=ROOT, env=thread_env(args.threads), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sample.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with np.load(run / "bench_samples" / "samples.npz", allow_pickle=False) as f:
        images = torch.from_numpy(f["arr_0"]).permute(0, 3, 1, 2).contiguous()
    sample_s = time.perf_counter() - begin
    drawn = read_manifest(run / "bench_samples")  # what sample.py drew with, not what the run's config names
    return {"who": "ours", "minutes": minutes, "wall_s": wall, "steps": int(state["step"]),
            "batch": int(cfg.trainer.batch_size), "precision": str(cfg.trainer.precision), "params": params,
            "sampler": f"{drawn['sampler']} {drawn['steps']} steps", "sample_s": sample_s,
            "images": images, "what": f"{cfg.process._target_.rsplit('.', 1)[1]}, {_unet(cfg.model)}"}


def _unet(model) -> str:
    return (f"U-Net {model.base_channels}x{list(model.channel_mults)}, {model.num_res_blocks} res block(s), "
            f"attention at {list(model.attention_resolutions)}")


def our_parameter_count(overrides: list[str]) -> int:
    """Parameters of experiment=cifar10_cpu's network (with the given overrides), built from the composed config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from diffusion.config import register

    register()
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("train", ["experiment=cifar10_cpu", *[o for o in overrides if o.startswith("model.")]])
    return sum(p.numel() for p in instantiate(cfg.model, in_channels=3, image_size=32).parameters())


# ---- the peer -----------------------------------------------------------------------------------------------------

def run_peer(minutes: float, out: Path, args, dim: int) -> dict:
    folder = out / f"peer_{minutes:g}min"
    shutil.rmtree(folder, ignore_errors=True)
    print(f"[peer {minutes:g} min] denoising-diffusion-pytorch Unet(dim={dim}, dim_mults=(1, 2, 4, 8))", flush=True)
    start = time.perf_counter()
    result = ddp_peer.run(Path(args.train), minutes, folder, dim=dim, dim_mults=(1, 2, 4, 8), steps=args.peer_steps,
                          samples=args.samples, flip=True, peer_path=args.peer_path, threads=args.threads)
    return {"who": "peer", "minutes": minutes, "wall_s": time.perf_counter() - start - result["sample_s"],
            "steps": result["steps"], "batch": 64, "precision": "fp32", "params": result["params"],
            "sampler": f"DDIM {args.peer_steps} steps", "sample_s": result["sample_s"], "images": result["images"],
            "what": f"denoising-diffusion-pytorch GaussianDiffusion (pred_v, sigmoid schedule), Unet(dim={dim}, "
                    "dim_mults=(1, 2, 4, 8))", "grid": result["grid"]}


# ---- scoring and the record ---------------------------------------------------------------------------------------

def build_scorer(args):
    from diffusion.evaluation.digit_features import cache_dir
    from diffusion.evaluation.fid import FID, load_inception

    test, _ = read_split(Path(args.test))
    train, _ = read_split(Path(args.train))
    net = load_inception(cache=cache_dir())
    # the floor: the first n real training images (n = the samples per run) against the same test images
    return FID(net, test, cache=cache_dir(), heldout=train[:args.samples], batch_size=50)


def table(rows: list[dict], floor: dict) -> str:
    lines = ["| run | minutes | train wall s | steps | batch | params | precision | sampler | KID x1e3 | FID |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['who']} | {r['minutes']:g} | {r['wall_s']:.0f} | {r['steps']:,} | {r['batch']} | "
                     f"{r['params'] / 1e6:.2f}M | {r['precision']} | {r['sampler']} | "
                     f"{1e3 * r['kid']:.1f} ± {1e3 * r['kid_std']:.1f} | {r['fid']:.1f} |")
    lines.append(f"| floor: {floor['fid_floor_n']:,} real training images | | | | | | | | "
                 f"{1e3 * floor['kid_floor']:.1f} ± {1e3 * floor['kid_floor_std']:.1f} | {floor['fid_floor']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--only", choices=("ours", "peer", "both"), default="both")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sampler", default="ddim", help="our sampler (configs/sampler/): ddim (eta 0, Euler on the "
                        "flow's ODE) scored best at 20 steps on the 10-minute recipe (cifar10_cpu.md)")
    parser.add_argument("--steps", type=int, default=20, help="our sampler's steps")
    parser.add_argument("--peer-steps", type=int, default=50, help="the peer's DDIM steps")
    parser.add_argument("--peer-path", default=str(ROOT.parent / "peers" / "ddp"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", default=str(SHARED / "train10k.npz"))
    parser.add_argument("--test", default=str(SHARED / "test1k.npz"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "cifar10_cpu_benchmark")
    parser.add_argument("--set", nargs="*", default=[], help="train.py overrides for our runs")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    for path in (args.train, args.test):
        if not Path(path).is_file():
            sys.exit(f"{path} not found: the shared CIFAR-10 arrays (../shared/data/cifar10) or --train/--test")
    torch.set_num_threads(args.threads)
    out = args.out / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True)
    started, loads = time.perf_counter(), [load_average()]
    print(f"scoring against {args.test}; machine: {cpu_model()}, load average {loads[0]}", flush=True)
    scorer = build_scorer(args)
    floor = scorer.floor(args.samples)  # real images at the same n as the samples (FID is biased at small n)
    params = our_parameter_count(args.set)
    dim = (ddp_peer.nearest_dim(params, args.peer_path, (1, 2, 4, 8), 3) if args.only in ("peer", "both")
           else None)
    rows = []
    for minutes in args.minutes:
        for who in (("ours", "peer") if args.only == "both" else (args.only,)):
            row = run_ours(minutes, out, args, params) if who == "ours" else run_peer(minutes, out, args, dim)
            row.update(scorer.scores(row.pop("images")))
            loads.append(load_average())
            rows.append(row)
            print(f"[{who} {minutes:g} min] {row['steps']} steps, KID x1e3 {1e3 * row['kid']:.1f}, "
                  f"FID {row['fid']:.1f}; load average {loads[-1]}", flush=True)
    text = table(rows, floor)
    print(text)
    (out / "table.md").write_text(text)
    (out / "rows.json").write_text(json.dumps({"rows": [{k: v for k, v in r.items() if k != "grid"} for r in rows],
                                               "floor": floor}, indent=1, default=str))
    if args.record:
        GRIDS.mkdir(exist_ok=True)
        stamp = datetime.date.today().isoformat()
        grids = []
        for r in rows:
            source = r.get("grid") or out / f"ours_{r['minutes']:g}min" / "bench_samples" / "grid.png"
            # the run folder's time in the name: several records a day must not share (overwrite) one file
            target = GRIDS / f"{out.name}_{r['who']}_{r['minutes']:g}min.png"
            shutil.copyfile(source, target)
            grids.append(f"![{r['who']} {r['minutes']:g} min]({GRIDS.name}/{target.name})")
        whats = sorted({f"- {r['who']}: {r['what']}" for r in rows})
        with open(RECORD, "a") as f:
            f.write(f"\n## {stamp}: {', '.join(f'{m:g}' for m in args.minutes)} minutes ({args.only})\n\n"
                    f"`python benchmarks/cifar10_cpu.py {' '.join(sys.argv[1:])}`\n\n"
                    f"Machine: {cpu_model()}, {args.threads} threads; load averages (1/5/15 min) at the start and "
                    f"after each run: {'; '.join(loads)}; {time.perf_counter() - started:.0f} s in all. "
                    f"{args.samples:,} samples per run vs the 1,000 shared test images.\n\n"
                    + "\n".join(whats) + "\n\n" + text + "\n" + " ".join(grids) + "\n")
        print(f"recorded in {RECORD}")


if __name__ == "__main__":
    main()
