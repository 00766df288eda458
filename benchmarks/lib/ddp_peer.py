"""lucidrains' denoising-diffusion-pytorch as a training peer: its README's ``Unet`` + ``GaussianDiffusion`` recipe
with the settings of its ``Trainer`` example, trained for a wall-time budget on a uint8 image array and sampled by
its DDIM, in a subprocess that imports the peer from ``peer_path`` (install it there with
``pip install --no-deps --target <path> denoising-diffusion-pytorch ema-pytorch accelerate``).

The settings are the ``Trainer`` example's: Adam 8e-5, betas (0.9, 0.99), batch 32 x 2 accumulation steps, grad-norm
clip 1, EMA 0.995 updated every 10 steps, random horizontal flips (``flip=False`` for digits, which our MNIST runs
do not flip either); ``GaussianDiffusion``'s defaults otherwise (1,000 steps, v-prediction, sigmoid schedule).
``Unet(dim, dim_mults)`` takes the ``dim`` whose parameter count is nearest ours (``nearest_dim``).

    python benchmarks/lib/ddp_peer.py --data <npz> --minutes M --out <dir> --dim D ...   # the worker (PYTHONPATH)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DIMS = (8, 12, 16, 20, 24, 32, 48, 64)


def install_hint(peer_path: str) -> str:
    return f"pip install --no-deps --target {peer_path} denoising-diffusion-pytorch ema-pytorch accelerate"


def thread_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", **(extra or {}))
    return env


def read_images(path: Path) -> torch.Tensor:
    """The uint8 NHWC ``images`` array of an npz file as (N, C, H, W)."""
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f["images"]).permute(0, 3, 1, 2).contiguous()


def nearest_dim(target: int, peer_path: str, dim_mults: tuple[int, ...], channels: int) -> int:
    """The ``Unet`` ``dim`` whose parameter count is nearest ``target`` (ours)."""
    code = ("import json; from denoising_diffusion_pytorch import Unet; print(json.dumps({d: sum(p.numel() for p in "
            f"Unet(dim=d, dim_mults={tuple(dim_mults)}, channels={channels}).parameters()) for d in {DIMS}}}))")
    proc = subprocess.run([sys.executable, "-c", code], env=thread_env(1, {"PYTHONPATH": peer_path}),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cannot import denoising_diffusion_pytorch from {peer_path} ({install_hint(peer_path)}): "
                 f"{proc.stderr.strip()[-300:]}")
    counts = {int(d): n for d, n in json.loads(proc.stdout).items()}
    return min(counts, key=lambda d: abs(counts[d] - target))


def run(data: Path, minutes: float, out: Path, *, dim: int, dim_mults: tuple[int, ...], steps: int, samples: int,
        flip: bool, peer_path: str, threads: int) -> dict:
    """Train the peer on ``data`` for ``minutes`` of wall time and sample it (a subprocess); its result dict:
    steps, wall_s (the training loop), params, sample_s, images (uint8 N, C, H, W), grid (a PNG)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--minutes", str(minutes),
               "--out", str(out), "--dim", str(dim), "--dim-mults", *map(str, dim_mults), "--steps", str(steps),
               "--samples", str(samples), *(["--flip"] if flip else [])]
    proc = subprocess.run(command, cwd=ROOT, env=thread_env(threads, {"PYTHONPATH": f"{peer_path}:{ROOT}"}),
                          capture_output=True, text=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "output.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"the peer run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        result["images"] = torch.from_numpy(f["arr_0"]).permute(0, 3, 1, 2).contiguous()
    result["grid"] = out / "grid.png"
    return result


def _worker(args: argparse.Namespace) -> None:
    """Under PYTHONPATH=<peer path>: train for args.minutes of wall time, sample, write samples.npz and result.json."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    from diffusion.runs.store import save_uint8_grid

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = read_images(Path(args.data)).float() / 255  # the peer maps [0, 1] to [-1, 1] itself (auto_normalize)
    channels, size = data.shape[1], data.shape[-1]
    model = Unet(dim=args.dim, dim_mults=tuple(args.dim_mults), channels=channels, flash_attn=False)
    diffusion = GaussianDiffusion(model, image_size=size, timesteps=1000, sampling_timesteps=args.steps)
    ema = EMA(diffusion, beta=0.995, update_every=10)
    opt = torch.optim.Adam(diffusion.parameters(), lr=8e-5, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(0)
    batch, accumulate = 32, 2
    steps, start = 0, time.perf_counter()
    deadline = start + 60 * args.minutes
    while time.perf_counter() < deadline:
        for _ in range(accumulate):
            x = data[torch.randint(len(data), (batch,), generator=generator)]
            if args.flip:
                flip = torch.rand(batch, generator=generator) < 0.5
                x[flip] = x[flip].flip(-1)
            (diffusion(x) / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        steps += 1
    wall = time.perf_counter() - start
    begin = time.perf_counter()
    ema.ema_model.eval()
    chunks = []
    with torch.inference_mode():
        for lo in range(0, args.samples, 250):
            chunks.append(ema.ema_model.sample(batch_size=min(250, args.samples - lo)))
    uint8 = (torch.cat(chunks).clamp(0, 1) * 255).round().to(torch.uint8)
    np.savez(out / "samples.npz", arr_0=uint8.permute(0, 2, 3, 1).numpy())
    save_uint8_grid(uint8[:64], out / "grid.png")
    params = sum(p.numel() for p in model.parameters())
    (out / "result.json").write_text(json.dumps({"steps": steps, "wall_s": wall, "params": params,
                                                 "sample_s": time.perf_counter() - begin}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--flip", action="store_true")
    _worker(p.parse_args())
