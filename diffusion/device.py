"""The one place that turns a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:<i>``) into a ``torch.device``,
for training (``trainer.device``) and for sampling and evaluation (``device``)."""
from __future__ import annotations

import torch

from diffusion.errors import ConfigError


def pick_device(name: str, local_rank: int = 0, setting: str = "device") -> torch.device:
    """``auto``: CUDA when available, else the CPU. A bare ``cuda`` (or ``auto`` on a GPU machine) is GPU
    ``local_rank`` modulo the GPUs present, so that each data-parallel process gets its own.

    ``setting`` names the config key in the one-line ``ConfigError`` raised for a name that is not a device, or
    a CUDA device on a machine without CUDA (or without that GPU).
    """
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{setting}={name!r} is not a device: use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{setting}={name} but CUDA is not available here: set {setting}=auto or {setting}=cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", local_rank % count)
        elif device.index >= count:
            raise ConfigError(f"{setting}={name} but this machine has {count} GPU(s): use cuda:0..cuda:{count - 1} or auto")
    return device


__all__ = ["pick_device"]


#: environment that limits PyTorch's CPU kernels (ATen's vectorized ones and oneDNN's) to AVX2: how the benchmarks'
#: ``--isa avx2`` stand in for CPUs without AVX-512 and AMX (AMD desktops and laptops, older servers). Read at
#: import, so it is set for a child process.
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def describe_machine(device: torch.device | str = "cpu") -> str:
    """The machine a measurement ran on, for benchmark records and run logs: the GPU's name, or the CPU's model,
    its cores and whether it has AMX (where bf16 autocast is fast on a CPU; elsewhere it is ~10x slower than fp32),
    e.g. ``Intel(R) Xeon(R) Processor, 2 cores, AMX-bf16``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # the first core's entries
    except OSError:  # not Linux
        pass
    model, flags = info.get("model name") or platform.processor() or platform.machine(), info.get("flags", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    amx = "AMX-bf16" if "amx_bf16" in flags.split() else "no AMX"
    # kernels limited to an older instruction set (benchmarks' --isa: a stand-in for CPUs without AVX-512/AMX)
    limits = [f"{k}={os.environ[k]}" for k in ISA_ENV["avx2"] if os.environ.get(k)]
    return f"{model}, {cores} cores, {amx}" + (f" (kernels limited by {' '.join(limits)})" if limits else "")
