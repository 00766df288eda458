"""Data-parallel training with torchrun: two CPU processes on gloo, the tiny U-Net, four steps."""
from __future__ import annotations

import sys

import torch

from diffusion.training.checkpoint import list_checkpoints, load_checkpoint

from .helpers import TINY, run_train


def test_torchrun_two_processes_on_gloo(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # PYTHONFAULTHANDLER: a rank killed by a signal prints every thread's Python stack (rank 1 died by SIGABRT,
    # "terminate called without an active exception", in 2 of ~50 runs, with nothing else to say where)
    proc = run_train(*TINY, "model.dropout=0.1", "trainer.sample_every=0", cwd=tmp_path, launcher=launcher, timeout=180,
                     env={"PYTHONFAULTHANDLER": "1"})
    # the ranks' own output comes first in stderr, torchrun's summary of a failure last: show both
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[:3000]}\n...\n{proc.stderr[-1500:]}"
    out = proc.stdout + proc.stderr
    # the fingerprints of both ranks' weights were gathered and compared: both ran, and the all-reduced
    # gradients left identical replicas (their batches and noise differ, so unsynchronised ones would not)
    assert "DDP: 2 processes finished at step 4; weights identical on all ranks" in out
    assert "2 processes per step" in out and "4 images x 1 accumulation" in out   # batch 8 split in two
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1                                                       # one folder for both ranks
    assert [s for s, _ in list_checkpoints(runs[0])] == [2, 4]
    assert out.count("saved ") == 2                                             # each checkpoint written once
    state = load_checkpoint(runs[0])
    assert len(state["rng"]) == 2                                               # both ranks' RNG states
    assert not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])
    assert state["model"].keys() == state["ema"].keys()
    assert not any(k.startswith("module.") for k in state["model"])             # the bare network, not DDP's wrapper


def test_cleanup_frees_a_ddp_wrapper_held_in_a_cycle_before_leaving_the_group(tmp_path):
    """A finished Trainer holds its DDP wrapper in reference cycles; ``cleanup`` must free it (and the gloo group its
    reducer keeps) before destroying the group, not leave it to the interpreter's teardown."""
    import gc
    import weakref

    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from diffusion.training.distributed import cleanup

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    gc.disable()  # only cleanup may collect the cycle
    try:
        holder = type("Holder", (), {})()
        holder.ddp, holder.me = DistributedDataParallel(nn.Linear(2, 2)), holder
        wrapper = weakref.ref(holder.ddp)
        del holder
        assert wrapper() is not None
        cleanup()
        assert wrapper() is None and not dist.is_initialized()
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()
