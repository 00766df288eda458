"""Data-parallel training across processes (``torchrun``), and the single-process case as world size 1.

    torchrun --nproc_per_node=N train.py ...                      # one machine
    torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d \
             --rdzv_endpoint=HOST:PORT train.py ...               # several machines

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address; ``init_distributed`` reads them.
One process group serves CPU tensors through gloo and CUDA tensors through NCCL. Rank 0 alone writes
the run folder (checkpoints, logs, sample grids); every rank trains.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (idempotent); world size 1 without torchrun."""
    if not launched_by_torchrun():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size())


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=dist.get_world_size())
    return DistInfo()


def launch(hydra_main: Callable[[], None]) -> None:
    """Join the process group torchrun describes, then run ``hydra_main`` (a ``@hydra.main`` function) on every
    rank: one run folder for all ranks, named with rank 0's time stamp, and Hydra's own files from rank 0 alone."""
    from diffusion import config as schema

    info = init_distributed()
    if info.distributed:
        schema.set_run_stamp(broadcast_object(schema.run_stamp()))
        if not info.is_main:
            sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    hydra_main()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (a no-op without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over the ranks (the values themselves without a process group), so that every rank
    takes the same branch (flags as 0/1) or waits for the slowest (durations)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor([float(v) for v in values], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def parameter_fingerprint(module: nn.Module) -> list[float]:
    """Three float64 sums of all parameters (plain, absolute and position-weighted): equal on every rank
    exactly when data-parallel replicas hold the same weights (up to a vanishing chance of collision)."""
    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in module.parameters()])
    position = torch.arange(1, flat.numel() + 1, dtype=torch.float64).remainder_(1009.0)
    return [flat.sum().item(), flat.abs().sum().item(), (flat * position).sum().item()]


def replicas_in_sync(module: nn.Module) -> bool:
    """Whether every rank's ``module`` has bit-identical weights (all ranks must call this)."""
    prints = gather_objects(parameter_fingerprint(module))
    return all(p == prints[0] for p in prints)


def check_replicas(module: nn.Module, step: int) -> bool | None:
    """``replicas_in_sync``, logged by rank 0 (all ranks must call this); None without data parallelism."""
    if not current().distributed:
        return None
    ok = replicas_in_sync(module)
    if current().is_main:
        world = current().world_size
        if ok:
            log.info(f"DDP: weights identical on all {world} ranks after step {step}")
        else:
            log.error(f"DDP: weights differ between the {world} ranks after step {step}")
    return ok


def wrap_for_training(net: nn.Module, device: torch.device, compile: bool = False) -> tuple[Any, nn.Module]:
    """(the DDP module or None, the module training calls): ``net`` wrapped for data parallelism when there is a
    process group, and in ``torch.compile`` if asked; checkpoints always hold the bare network."""
    train_net, ddp = net, None
    if current().distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        train_net = ddp = DistributedDataParallel(net, device_ids=ids)
    if compile:
        train_net = torch.compile(train_net)
    return ddp, train_net


def cleanup() -> None:
    """Leave the process group, after freeing what still holds it. A finished Trainer sits in reference cycles
    with its DDP wrapper, whose reducer keeps the gloo group alive past ``destroy_process_group``; left to the
    interpreter's teardown, the group's threads are destroyed with the modules around them, the likely cause of a
    rank's SIGABRT after a finished run ("terminate called without an active exception", 2 of ~60 runs; the same
    teardown abort as pytorch/pytorch#65231). Collected here, they go while everything is intact."""
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()
