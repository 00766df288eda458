"""The training precision: ``trainer.precision`` (fp32 | bf16 | fp16 | auto) made concrete, and its autocast.

``auto`` is bf16 on CUDA where the GPU supports it (fp16 with a GradScaler otherwise) and, on a CPU, bf16 only
when a timing of the real training step finds bf16 autocast faster by more than 1.2x (most CPUs without AMX
run bf16 at a tenth of fp32's speed: bf16 is never forced on a CPU).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn

from diffusion.training.errors import TrainingError

log = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device: torch.device, bf16_speedup: Callable[[], float] | None = None) -> str:
    """fp32 | bf16 | fp16 from the requested one; ``auto`` is bf16 on CUDA where supported (fp16
    otherwise) and, on CPU, bf16 only if ``bf16_speedup()`` (fp32 time / bf16 time) exceeds 1.2."""
    if requested != "auto":
        if requested == "fp16" and device.type != "cuda":
            raise TrainingError("trainer.precision=fp16 needs CUDA (GradScaler); on CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if bf16_speedup is not None and bf16_speedup() > 1.2:
        return "bf16"
    return "fp32"


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """The network's forward passes in ``dtype`` (None: fp32, no autocast)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def bf16_speedup(loss_fn: Callable[..., Tensor], model: Any, net: nn.Module, shape: tuple[int, ...],
                 device: torch.device, num_classes: int | None = None) -> float:
    """fp32 time / bf16-autocast time of one forward+backward of ``loss_fn(model, x0)`` on a batch of ``shape``
    (interleaved, best of 3 after a warm-up each: the minimum shrugs off other processes' load; one round when
    bf16 is more than 2x slower). Leaves ``net``'s weights, its gradients (None) and the RNG states as found."""
    g = torch.Generator(device).manual_seed(0)
    x0 = torch.randn(shape, generator=g, device=device).clamp(-1, 1)
    labels = None if num_classes is None else torch.zeros(shape[0], dtype=torch.long, device=device)

    def run(dtype) -> float:
        start = time.perf_counter()
        with autocast(device, dtype):
            loss = loss_fn(model, x0, class_labels=labels, generator=g).float().mean()
        loss.backward()
        return time.perf_counter() - start

    times: dict[Any, list[float]] = {None: [], torch.bfloat16: []}
    with torch.random.fork_rng(devices=[]):
        for rep in range(4):
            for dtype in times:
                t = run(dtype)
                if rep:
                    times[dtype].append(t)
            # bf16 without hardware support (most CPUs without AMX) runs at ~1/10 of fp32: one timed
            # round shows it, and further rounds would cost the run several seconds each
            if rep == 1 and times[torch.bfloat16][0] > 2 * times[None][0]:
                break
    net.zero_grad(set_to_none=True)
    speedup = min(times[None]) / min(times[torch.bfloat16])
    log.info(f"precision=auto: bf16 autocast is {speedup:.2f}x the speed of fp32 on this CPU")
    return speedup


__all__ = ["AMP_DTYPES", "resolve_precision", "autocast", "bf16_speedup"]
