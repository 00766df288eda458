"""Everything one lent GPU should measure, in one call of about 8 minutes: the 35.7M CIFAR-10 U-Net's training step
against diffusers' UNet2DModel, sampling throughput, and two few-minute CIFAR-10 trainings on real images.

    python benchmarks/gpu.py --out $OUT                  # on the GPU machine (about 8 min on an H100)
    python benchmarks/gpu.py --score <that out folder>   # afterwards, here: KID/FID of the samples it brought back
    python benchmarks/gpu.py --smoke                     # on any CPU, in seconds: tiny sizes, a few steps, to the end

1. Training step of ``configs/model/unet_cifar10.yaml`` (ours) and of ``UNet2DModel`` built with the same
   architecture (``benchmarks/unet_speed.py``'s ``build_theirs``), batch 128, DDPM-noised inputs, eps-MSE, AdamW:
   fp32 (TF32 off), TF32 matmuls and convolutions, bf16 autocast; each eager and with ``torch.compile``, with the
   default and the channels_last memory format. Median of ``--reps`` timed steps after warm-up (the compile time is
   the first steps' time, reported apart), peak GPU memory (``torch.cuda.max_memory_allocated``). Rows whose turn
   comes after their share of the time budget are skipped and say so.
2. Sampling throughput: our network's forward pass at batch 500 in inference mode (network evaluations per second;
   a sampler of K steps makes images at that rate / K: on a GPU the solver's own arithmetic is negligible).
3. ``train.py experiment=ddpm_cifar10`` and ``experiment=rectified_flow_cifar10`` (``--second``) for ``--minutes``
   each on the shared real images (``data=npz``, 10,000 training images), with the few-minute changes listed in the
   record (lr warm-up 500 steps, EMA with warm-up: the papers' 5,000 warm-up steps and EMA 0.9999 from step 0 would
   leave nothing to see after a few minutes); 1,000 samples each, saved to ``--out`` as npz and grid.
4. KID (unbiased, first) and FID of those samples against the 1,000 shared test images, beside the floor (1,000 real
   training images): on the GPU machine if the Inception weights are there, else afterwards with ``--score``.

The record goes to ``<out>/gpu.md`` (and ``benchmarks/gpu.md`` with ``--record``; never in ``--smoke``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from diffusion.device import describe_machine  # noqa: E402

RECORD = ROOT / "benchmarks" / "gpu.md"
PRECISIONS = ("fp32", "tf32", "bf16")
#: the few-minute changes to the paper recipes (the record lists them)
SHORT_RUN = ["trainer.warmup_steps=500", "trainer.ema_warmup=true", "trainer.fit_budget=true",
             "trainer.log_every=100", "trainer.sample_every=0", "trainer.ckpt_every=100000", "trainer.bpd_every=0",
             "trainer.progress=false"]
SMOKE_RUN = ["model.base_channels=16", "model.channel_mults=[1,2]", "model.num_res_blocks=1",
             "model.attention_resolutions=[]", "model.norm_groups=8", "trainer.max_steps=3", "trainer.batch_size=4",
             "trainer.max_minutes=0", "trainer.warmup_steps=1", "trainer.sample_every=0", "trainer.ckpt_every=3",
             "trainer.bpd_every=0", "trainer.progress=false", "trainer.precision=fp32", "model.num_heads=1"]


def shared_data() -> Path | None:
    """The shared real CIFAR-10 arrays: ``shared/`` inside the checkout (as it travels to a lent GPU) or beside it."""
    for folder in (ROOT / "shared" / "data" / "cifar10", ROOT.parent / "shared" / "data" / "cifar10"):
        if (folder / "train10k.npz").is_file() and (folder / "test1k.npz").is_file():
            return folder
    return None


def synthetic_data(folder: Path, n: int = 64, size: int = 8) -> Path:
    """Smoke mode without the shared arrays (a user's clone, CI): small random uint8 NHWC arrays with labels."""
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for name, count in (("train10k.npz", n), ("test1k.npz", n // 2)):
        np.savez(folder / name, images=g.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
                 labels=g.integers(0, 10, count).astype(np.uint8))
    return folder


def read_images(path: Path, key: str = "images") -> torch.Tensor:
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f[key]).permute(0, 3, 1, 2).contiguous()


def set_precision(precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


# ---- 1. the training step ------------------------------------------------------------------------------------------

def model_config(smoke: bool):
    from omegaconf import OmegaConf

    if smoke:
        cfg = OmegaConf.load(ROOT / "configs" / "model" / "unet_tiny.yaml")
        cfg.in_channels, cfg.image_size = 3, 8
        return cfg
    return OmegaConf.load(ROOT / "configs" / "model" / "unet_cifar10.yaml")


def step_rows(args, device: str, deadline: float) -> list[dict]:
    import unet_speed

    cfg = model_config(args.smoke)
    # every eager row first, then the compiled ones (tens of seconds of compiling each), bf16 first: what the time
    # budget cuts off is the least used
    modes = [(p, False, cl) for p in PRECISIONS for cl in (False, True)]
    if not args.smoke:  # compiling takes tens of seconds even for a tiny net on a CPU
        modes += [(p, True, cl) for p in reversed(PRECISIONS) for cl in (True, False)]
    rows = []
    for precision, compiled, channels_last in modes:
        for which in ("ours", "theirs"):
            row = {"model": which, "precision": precision, "compile": compiled, "channels_last": channels_last}
            rows.append(row)
            if time.perf_counter() > deadline:
                row["note"] = "skipped: time budget"
                continue
            set_precision(precision)
            mode = "+".join(["bf16" if precision == "bf16" else "fp32", *(["compile"] if compiled else []),
                             *(["cl"] if channels_last else [])])
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            try:
                bench = unet_speed.Bench(which, cfg, args.batch, device, mode)
            except ImportError as e:  # diffusers missing on the machine
                row["note"] = f"n/a ({e.name} not installed)"
                continue
            row["params"] = sum(p.numel() for p in bench.net.parameters())
            began = time.perf_counter()
            for _ in range(args.warmup):
                bench.train_step()
            row["warmup_s"] = time.perf_counter() - began
            times = [bench.train_step() for _ in range(args.reps)]
            row["step_s"] = statistics.median(times)
            row["images_per_s"] = args.batch / row["step_s"]
            row["loss"] = bench.last_loss
            if device == "cuda":
                row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            del bench
            torch._dynamo.reset()
    set_precision("fp32")
    return rows


# ---- 2. sampling throughput -----------------------------------------------------------------------------------------

@torch.inference_mode()
def sampling_rows(args, device: str) -> list[dict]:
    from hydra.utils import instantiate

    cfg = model_config(args.smoke)
    net = instantiate(cfg).to(device).eval()
    rows = []
    for precision, channels_last in (("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True)):
        set_precision(precision)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        x = torch.randn(args.sample_batch, cfg.in_channels, cfg.image_size, cfg.image_size,
                        device=device).contiguous(memory_format=fmt)
        t = torch.full((args.sample_batch,), 500.0, device=device)
        times = []
        for i in range(args.warmup + args.reps):
            sync(device)
            began = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                net(x, t)
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - began)
        seconds = statistics.median(times)
        rows.append({"precision": precision, "channels_last": channels_last, "batch": args.sample_batch,
                     "forward_s": seconds, "evaluations_per_s": args.sample_batch / seconds})
    set_precision("fp32")
    return rows


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- 3. few-minute trainings on the real images ---------------------------------------------------------------------

def train_and_sample(args, experiment: str, data: Path, work: Path, out: Path, device: str) -> dict:
    run = work / experiment
    shutil.rmtree(run, ignore_errors=True)
    extra = SMOKE_RUN if args.smoke else [f"trainer.max_minutes={args.minutes}", *SHORT_RUN]
    command = [sys.executable, "train.py", f"experiment={experiment}", "data=npz", f"data.path={data / 'train10k.npz'}",
               f"data.test_path={data / 'test1k.npz'}", *extra, f"hydra.run.dir={run}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    print(f"[train] {' '.join(command[1:])}", flush=True)
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        return {"experiment": experiment, "note": f"train.py failed: {proc.stderr.strip().splitlines()[-1:]}"}
    from diffusion.runs.store import read_manifest
    from diffusion.training.checkpoint import load_checkpoint

    state = load_checkpoint(run)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(state["config"])
    sampler = ["sampler.steps=2"] if args.smoke else []
    if not args.smoke and cfg.sampler.name == "ddim":
        sampler = ["sampler.steps=100"]
    command = [sys.executable, "sample.py", f"ckpt={run}", f"n={args.samples}", f"batch_size={args.sample_batch}",
               "progress=false", f"out={run / 'bench'}", *sampler]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    sample_s = time.perf_counter() - began
    if done.returncode != 0:
        return {"experiment": experiment, "note": f"sample.py failed: {done.stderr.strip().splitlines()[-1:]}"}
    shutil.copyfile(run / "bench" / "samples.npz", out / f"{experiment}_samples.npz")
    shutil.copyfile(run / "bench" / "grid.png", out / f"{experiment}_grid.png")
    return {"experiment": experiment, "steps": int(state["step"]), "batch": int(cfg.trainer.batch_size),
            "precision": str(cfg.trainer.precision), "train_wall_s": wall, "sample_s": sample_s,
            "sampler": "{sampler} {steps}".format(**read_manifest(run / "bench")), "n": args.samples,
            "samples": f"{experiment}_samples.npz", "grid": f"{experiment}_grid.png", "device": device}


# ---- 4. scores ------------------------------------------------------------------------------------------------------

class _StandIn(torch.nn.Module):
    """Smoke mode's feature extractor (the FID code path without Inception's minutes): fixed random projections of
    per-channel means, standard deviations and mean absolute differences of neighbouring pixels (smooth photos
    against noise); torch-fidelity's call convention."""

    def forward(self, x):
        x = x.float() / 255  # features of order 1, like Inception's pool features
        dx, dy = (x[..., 1:] - x[..., :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()
        f = x.flatten(2)
        feats = torch.cat([f.mean(2), f.std(2), dx.flatten(2).mean(2), dy.flatten(2).mean(2)], 1)
        return (feats @ torch.randn(12, 16, generator=torch.Generator().manual_seed(0)),)


def score(out: Path, data: Path, smoke: bool, device: str = "cpu") -> dict:
    """KID and FID of every ``*_samples.npz`` in ``out`` against the test images, and the floor (n real training
    images against the same test images). Raises ``InceptionUnavailable`` where the weights cannot be had."""
    from diffusion.evaluation.digit_features import cache_dir
    from diffusion.evaluation.fid import FID, load_inception

    results = json.loads((out / "results.json").read_text())
    net = _StandIn() if smoke else load_inception(device=device, cache=cache_dir())
    test, train = read_images(data / "test1k.npz"), read_images(data / "train10k.npz")
    runs = [r for r in results["runs"] if "samples" in r]
    n = min((r["n"] for r in runs), default=1000)
    fid = FID(net, test, cache=None if smoke else cache_dir(), device=device, heldout=train[:n], kid_subsets=100,
              batch_size=50)
    for r in runs:
        r.update(fid.scores(read_images(out / r["samples"], "arr_0")))
    results["floor"] = fid.floor(n)
    results["features"] = "stand-in (smoke)" if smoke else "Inception-v3 (torch-fidelity)"
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


# ---- the record -----------------------------------------------------------------------------------------------------

def _f(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown(results: dict) -> str:
    lines = [f"## {results['date']}: {results['machine']}{' (SMOKE: tiny sizes, numbers mean nothing)' if results['smoke'] else ''}",
             "", f"`python benchmarks/gpu.py {results['argv']}`; torch {results['torch']}, {results['total_s']:.0f} s "
             "in all.", "", f"### Training step, batch {results['batch']} ({results['model']})", "",
             "| model | precision | compile | channels_last | params | s/step | images/s | warm-up s | peak MiB | note |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results["steps"]:
        lines.append(f"| {r['model']} | {r['precision']} | {'yes' if r['compile'] else 'no'} | "
                     f"{'yes' if r['channels_last'] else 'no'} | {_f(r.get('params'), ',')} | "
                     f"{_f(r.get('step_s'), '.4f')} | {_f(r.get('images_per_s'), '.0f')} | {_f(r.get('warmup_s'), '.1f')} | "
                     f"{_f(r.get('peak_mib'), '.0f')} | {r.get('note', '')} |")
    lines += ["", "### Sampling throughput (our network, inference mode)", "",
              "| precision | channels_last | batch | s/forward | network evaluations/s | images/s at 20 steps |",
              "|---|---|---:|---:|---:|---:|"]
    for r in results["sampling"]:
        lines.append(f"| {r['precision']} | {'yes' if r['channels_last'] else 'no'} | {r['batch']} | "
                     f"{r['forward_s']:.4f} | {r['evaluations_per_s']:.1f} | {r['evaluations_per_s'] / 20:.1f} |")
    lines += ["", f"### A few minutes of training on the real images (data=npz, 10,000 training images); changes to "
              f"the paper recipes: `{' '.join(SHORT_RUN)}`", "",
              "| experiment | steps | batch | precision | train wall s | sampler | samples | KID x1e3 | FID |",
              "|---|---:|---:|---|---:|---|---:|---:|---:|"]
    for r in results["runs"]:
        if "note" in r:
            lines.append(f"| {r['experiment']} | | | | | | | | {r['note']} |")
            continue
        kid = "not yet scored" if r.get("kid") is None else f"{1e3 * r['kid']:.1f} ± {1e3 * r['kid_std']:.1f}"
        lines.append(f"| {r['experiment']} | {r['steps']:,} | {r['batch']} | {r['precision']} | {r['train_wall_s']:.0f} | "
                     f"{r['sampler']} | {r['n']:,} | {kid} | {_f(r.get('fid'), '.1f')} |")
    floor = results.get("floor")
    if floor:
        lines.append(f"| floor: {floor['fid_floor_n']:,} real training images | | | | | | {floor['fid_floor_n']:,} | "
                     f"{1e3 * floor['kid_floor']:.1f} ± {1e3 * floor['kid_floor_std']:.1f} | {floor['fid_floor']:.1f} |")
        lines += ["", f"Scores against the 1,000 shared test images, features: {results.get('features')}."]
    else:
        lines += ["", "Scores: not yet computed (`python benchmarks/gpu.py --score <out folder>` where the Inception "
                  "weights are)."]
    grids = [f"![{r['experiment']}]({r['grid']})" for r in results["runs"] if "grid" in r]
    return "\n".join(lines + ([""] + grids if grids else [])) + "\n"


def write_record(out: Path, results: dict, record: bool) -> None:
    text = markdown(results)
    (out / "gpu.md").write_text(text)
    if record and not results["smoke"]:
        with open(RECORD, "a") as f:
            f.write("\n" + text)
    print(text)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_benchmark")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a few steps, on any device (seconds)")
    parser.add_argument("--score", type=Path, default=None, help="score the samples of an earlier run's out folder")
    parser.add_argument("--record", action="store_true", help="also append the record to benchmarks/gpu.md")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole script (GPU)")
    parser.add_argument("--minutes", type=float, default=1.5, help="training minutes of each experiment")
    parser.add_argument("--second", default="rectified_flow_cifar10", help="the experiment beside ddpm_cifar10")
    parser.add_argument("--no-train", action="store_true", help="skip the trainings (and their scores)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--sample-batch", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    args = parser.parse_args(argv)
    smoke = args.smoke
    for key, full, tiny in (("batch", 128, 4), ("sample_batch", 500, 8), ("samples", 1000, 16), ("reps", 10, 1),
                            ("warmup", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if smoke else full)
    data = shared_data()
    if data is None:
        if not smoke:
            sys.exit("the shared CIFAR-10 arrays (shared/data/cifar10 in or beside the checkout) are missing")
        data = synthetic_data(args.out / "synthetic")
    elif smoke:  # the real images, cut to 64 training and 32 test images of 8x8 pixels (a crop): seconds
        small = args.out / "real_small"
        small.mkdir(parents=True, exist_ok=True)
        for name, count in (("train10k.npz", 64), ("test1k.npz", 32)):
            with np.load(data / name, allow_pickle=False) as f:
                np.savez(small / name, images=f["images"][:count, 12:20, 12:20], labels=f["labels"][:count])
        data = small

    if args.score is not None:  # afterwards, here: the samples a GPU run brought back
        results = score(args.score, data, smoke)
        write_record(args.score, results, args.record)
        return results

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    budget = args.budget
    train_s = 0 if args.no_train else 2 * (60 * args.minutes + 45)  # each run: its minutes, start-up, sampling
    results = {"date": time.strftime("%Y-%m-%d"), "machine": describe_machine(device), "torch": torch.__version__,
               "argv": " ".join(argv if argv is not None else sys.argv[1:]), "smoke": smoke, "batch": args.batch,
               "model": "tiny U-Net (smoke)" if smoke else "configs/model/unet_cifar10.yaml, 35.7M"}
    if device == "cpu" and not smoke:
        results["note"] = "no GPU: not yet measured"
    # the step table gets what the trainings leave, less a minute for sampling throughput and the record
    deadline = float("inf") if smoke else started + max(60.0, budget - train_s - 60)
    results["steps"] = step_rows(args, device, deadline)
    results["sampling"] = sampling_rows(args, device)
    results["runs"] = []
    if not args.no_train:
        work = out / "runs" if smoke else Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_benchmark_runs"
        for experiment in ("ddpm_cifar10", args.second):
            results["runs"].append(train_and_sample(args, experiment, data, work, out, device))
    results["total_s"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if results["runs"]:
        try:
            results = score(out, data, smoke, device)
        except Exception as e:  # noqa: BLE001 - Inception weights not on this machine: score afterwards, here
            print(f"scores later (python benchmarks/gpu.py --score {out}): {str(e).splitlines()[0]}", flush=True)
    results["total_s"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_record(out, results, args.record)
    return results


if __name__ == "__main__":
    main()
