"""The shared helpers: one seed derivation, one atomic write (tests/training/test_checkpoint.py covers its crash
safety and permissions), one device choice."""
from __future__ import annotations

import pytest
import torch

from diffusion.device import pick_device
from diffusion.runs.generate import batch_generator
from diffusion.training import distributed
from diffusion.training.errors import ConfigError
from diffusion.utils import derive_seed


def test_derive_seed_is_stable_and_separates_streams():
    assert derive_seed(0, "noise", 0) == derive_seed(0, "noise", 0)
    seeds = {derive_seed(s, name, rank) for s in (0, 1) for name in ("noise", "data") for rank in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(7) != derive_seed(8)
    # pinned: changing the scheme would change every training run's random streams
    assert derive_seed(0, "noise", 0) == 4890800862297954450


def test_generation_batches_derive_their_seeds():
    a = torch.randn(4, generator=batch_generator(3, 2))
    assert torch.equal(a, torch.randn(4, generator=torch.Generator().manual_seed(derive_seed(3, "batch", 2))))


def test_one_pick_device():
    assert not hasattr(distributed, "pick_device")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"trainer.device='gpu' is not a device: use auto, cpu"):
        pick_device("gpu", setting="trainer.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_config_error():
    for setting in ("device", "trainer.device"):
        with pytest.raises(ConfigError) as e:
            pick_device("cuda", setting=setting)
        assert str(e.value) == f"{setting}=cuda but CUDA is not available here: set {setting}=auto or {setting}=cpu"


def test_describe_machine_names_the_cpu_its_cores_and_amx(monkeypatch, tmp_path):
    """Benchmark records and the run log name the CPU model, the cores this process may use and AMX (where bf16
    is fast): read from /proc/cpuinfo's first core."""
    import builtins
    import os

    from diffusion.device import describe_machine

    cpuinfo = tmp_path / "cpuinfo"
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\n\n"
                       "processor\t: 1\nmodel name\t: other\nflags\t\t: amx_bf16\n")
    assert describe_machine() == "AMD EPYC 9B14, 2 cores, no AMX"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx512f amx_bf16 amx_tile\n")
    assert describe_machine("cpu") == "Intel(R) Xeon(R) Processor, 2 cores, AMX-bf16"
    # a benchmark's --isa avx2 (PyTorch's kernels limited to AVX2, standing in for a CPU without AVX-512/AMX) says so
    from diffusion.device import ISA_ENV

    for key, value in ISA_ENV["avx2"].items():
        monkeypatch.setenv(key, value)
    assert describe_machine() == ("Intel(R) Xeon(R) Processor, 2 cores, AMX-bf16 (kernels limited by "
                                  "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)")
