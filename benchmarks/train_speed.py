"""Images/s of the training loop's full step against the bare forward+backward of the same network.

    python benchmarks/train_speed.py                                  # unet_mnist, batch 64, fp32, CPU
    python benchmarks/train_speed.py model=unet_cifar10 batch=128 precision=bf16   # on a GPU

full: ``Trainer.train_step``: next batch from the loader, label handling, time/noise draws, the loss through
      EpsModel, backward, unscale + grad-norm clipping, AdamW, EMA update.
bare: ``net(x, t)`` on a fixed batch, MSE against a fixed target, backward, zero_grad: no data, no
      optimizer, no EMA.

Rounds alternate (full, bare, full, bare, ...) so that both see the same machine state; the table reports
the median round. Overhead = 1 - full/bare; the target is < 10%. Arguments are key=value pairs:
model (a configs/model name), process, batch, precision (fp32|bf16|fp16), device (auto|cpu|cuda), steps
(per round), rounds, threads (CPU threads, default all).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from diffusion.device import describe_machine  # noqa: E402
from diffusion import config as schema  # noqa: E402
from diffusion.data import InMemoryImages  # noqa: E402
from diffusion.training.loop import Trainer  # noqa: E402

DEFAULTS = {"model": "unet_mnist", "process": "ddpm", "batch": "64", "precision": "fp32", "device": "auto",
            "steps": "5", "rounds": "5", "threads": "0"}


def parse(argv: list[str]) -> dict[str, str]:
    args = dict(DEFAULTS)
    for item in argv:
        key, _, value = item.partition("=")
        if key not in args or not value:
            raise SystemExit(f"train_speed.py: unknown argument {item!r}; use key=value with key in {', '.join(args)}")
        args[key] = value
    return args


def synthetic_images(channels: int, size: int, n: int) -> InMemoryImages:
    """Random uint8 images: the loop's cost does not depend on their content, and nothing is downloaded."""
    g = torch.Generator().manual_seed(0)
    return InMemoryImages(torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8),
                          torch.zeros(n, dtype=torch.long), num_classes=None)


def machine(device: torch.device) -> str:
    return f"{describe_machine(device)}, {torch.get_num_threads()} threads"


def main() -> None:
    args = parse(sys.argv[1:])
    if int(args["threads"]) > 0:
        torch.set_num_threads(int(args["threads"]))
    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"model={args['model']}", f"process={args['process']}", f"trainer.batch_size={args['batch']}",
            f"trainer.precision={args['precision']}", f"trainer.device={args['device']}", "trainer.progress=false",
            "trainer.ckpt_every=0", "trainer.sample_every=0", "trainer.log_every=0", "trainer.bpd_every=0"])
    batch, steps, rounds = int(args["batch"]), int(args["steps"]), int(args["rounds"])
    data = synthetic_images(int(cfg.model.in_channels), int(cfg.model.image_size), n=batch * (steps + 1) * 4)
    import tempfile

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, data)
        device, net = trainer.device, trainer.net
        batches = trainer._batches()

        x = torch.randn(batch, data.channels, data.image_size, data.image_size, device=device)
        t = torch.randint(0, 1000, (batch,), device=device).float()
        target = torch.randn_like(x)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def full() -> None:
            trainer.train_step(batches)

        def bare() -> None:
            with trainer._autocast():
                loss = (net(x, t).float() - target).square().mean()
            loss.backward()
            net.zero_grad(set_to_none=True)

        def timed(fn) -> float:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            return steps * batch / (time.perf_counter() - start)

        full(), bare(), full(), bare()  # warm-up (allocator, kernels, first-touch)
        results: dict[str, list[float]] = {"full": [], "bare": []}
        for _ in range(rounds):
            results["full"].append(timed(full))
            results["bare"].append(timed(bare))

    full_ips, bare_ips = statistics.median(results["full"]), statistics.median(results["bare"])
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"model={args['model']} ({params:.1f}M params) process={args['process']} batch={batch} "
          f"precision={trainer.precision} device={device} [{machine(device)}]; {rounds} rounds x {steps} steps, interleaved")
    print(f"{'':<42}{'images/s':>10}{'s/step':>9}")
    print(f"{'bare forward+backward':<42}{bare_ips:>10.1f}{batch / bare_ips:>9.3f}")
    print(f"{'full training step (data, loss, opt, EMA)':<42}{full_ips:>10.1f}{batch / full_ips:>9.3f}")
    print(f"{'loop overhead (1 - full/bare)':<42}{100 * (1 - full_ips / bare_ips):>9.1f}%   (target < 10%)")


if __name__ == "__main__":
    main()
