r"""The training loop: the configured optimizer and learning-rate schedule (default AdamW with linear warm-up,
``training/optim.py``), gradient clipping, EMA, mixed precision, gradient accumulation, data parallelism,
checkpoints that resume bit for bit, a time budget, and a clean stop on SIGTERM/Ctrl-C.

One optimizer step (Ho et al. 2020, Algorithm 1, averaged over a batch):

    for each of grad_accum micro-batches x_0 (this rank's share of trainer.batch_size):
        loss = mean_i L(x_0^i, t_i, eps_i)           t, eps drawn from the run's torch.Generator
        backward(loss / grad_accum)                  (DDP averages the gradients across ranks)
    clip ||grad|| to grad_clip;  lr_k = lr_schedule(k) (default lr min(1, (k + 1) / warmup_steps));
    optimizer step (default AdamW);  EMA update

After each step: stop on a request or when the time budget is used up (``StopReason``), log the window's
means every ``log_every`` steps, then the ``Periodic`` actions: checkpoint, sample grid and bits/dim, each
every ``*_every`` steps and at the last step.

Randomness: the noise and times of the loss, and class-label dropout, draw from a ``torch.Generator``
seeded per rank; dropout layers draw from torch's global RNG, seeded per rank too; random flips from
the loader's generator. All three states go into every checkpoint, with the data position (derived
from the step), so that a stopped and resumed run continues exactly as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm

from diffusion.device import pick_device
from diffusion.training import distributed as D
from diffusion.training.build import build_eps_model, build_from_config, build_loss
from diffusion.training.checkpoint import checkpoint_path, list_checkpoints, prune_checkpoints, save_checkpoint
from diffusion.training.data import make_train_loader
from diffusion.training.ema import EMA, ema_decay_at
from diffusion.training.fid_log import log_fid
from diffusion.training.errors import TrainingError
from diffusion.training.logging import RunLogger
from diffusion.training.optim import warmup_lr
from diffusion.utils import derive_seed

log = logging.getLogger(__name__)

#: the budget fit (trainer.fit_budget) times FIT_OVER optimizer steps after the first FIT_FROM of a session
FIT_FROM, FIT_OVER = 5, 20

__all__ = ["Trainer", "StopReason", "Periodic", "resolve_precision", "derive_seed", "warmup_lr", "AMP_DTYPES"]

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


class StopReason(str, Enum):
    """Why ``Trainer.fit`` returned (a ``str`` too: ``StopReason.time == "time"``)."""

    max_steps = "max_steps"  # trainer.max_steps reached (or already reached when fit began)
    time = "time"            # trainer.max_minutes used up: ends the run as max_steps would
    signal = "signal"        # SIGTERM / SIGINT or request_stop(): saved, then stopped


@dataclass
class Periodic:
    """An action run every ``every`` optimizer steps (0: never) and, if ``at_end``, at the run's last step.
    ``seconds``: how long it last took (an estimate until it has run), reserved by the time budget."""

    name: str
    every: int
    action: Callable[[], object]
    at_end: bool = True
    seconds: float = 0.0

    def due(self, step: int, final: bool) -> bool:
        return (self.every > 0 and step % self.every == 0) or (final and self.at_end)

    def run(self) -> None:
        start = time.perf_counter()
        self.action()
        self.seconds = time.perf_counter() - start


class _Window:
    """The logging window: loss and grad-norm sums since the last log line, kept on the device (no host sync
    per step), the optimizer steps they cover and the seconds spent training in them (periodic actions
    excluded), plus the first step whose loss was not finite since ``fit`` began."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.grad_norm = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.all_excluded_seconds = 0.0  # since fit began (not reset with the window)
        self.reset()

    def add(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        self.loss += loss
        self.grad_norm += grad_norm.float()
        self.steps += 1

    def reset(self) -> None:
        self.loss.zero_(), self.grad_norm.zero_()
        self.steps, self.start, self.excluded_seconds = 0, time.perf_counter(), 0.0

    def training_seconds(self) -> float:
        return max(time.perf_counter() - self.start - self.excluded_seconds, 1e-9)

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.excluded_seconds += elapsed
            self.all_excluded_seconds += elapsed


class Trainer:
    """Trains ``cfg``'s model on ``dataset`` and writes the run folder ``run_dir`` (rank 0).

    ``resume``: a checkpoint dict (from ``load_checkpoint``) to continue from. ``holdout``: 8-bit images
    (uint8, N x C x H x W) for the periodic bits/dim. ``cfg.trainer.precision`` is set to the precision used.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, dataset: Any, resume: dict | None = None,
                 holdout: Tensor | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.tcfg = tc = cfg.trainer
        self.dist = D.current()
        self.device = pick_device(str(tc.device), self.dist.local_rank, setting="trainer.device")
        self.dataset, self.holdout = dataset, holdout
        self.accum, self.micro_batch = self._split_batch()
        self._build_model()
        self._set_precision()
        self.ema = EMA(self.net, tc.ema_decay, tc.ema_warmup)
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # listed once: walking modules costs
        self.optimizer, self.lr_at = self._build_optimizer()
        self.generator = torch.Generator(self.device)      # the loss's times and noise, class-label dropout
        self.data_generator = torch.Generator()            # the loader's random flips
        self._seed_streams()
        self._build_loader()
        self.ddp, self.train_model = self._wrap_for_training()
        self.ema_model = build_eps_model(self.ema.net, self.process, cfg)
        self.step = 0
        if resume is not None:
            self._load_state(resume)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        self._stop_signal: int | None = None
        self._last_saved: int | None = None
        self.periodic = self._periodic_actions()
        self._checkpoints, self._grids, self._bits_per_dim, _ = self.periodic

    # ---- set-up -----------------------------------------------------------------------------------------
    def _split_batch(self) -> tuple[int, int]:
        """(grad_accum, micro-batch): trainer.batch_size split over the processes and accumulation steps."""
        tc, world = self.tcfg, self.dist.world_size
        accum = int(tc.grad_accum)
        if accum < 1 or tc.batch_size < 1 or tc.batch_size % (world * accum):
            raise TrainingError(f"trainer.batch_size={tc.batch_size} must be a positive multiple of processes x grad_accum "
                                f"= {world} x {accum}: change trainer.batch_size or trainer.grad_accum")
        if tc.max_steps < 0:
            raise TrainingError(f"trainer.max_steps={tc.max_steps} must be >= 0")
        return accum, tc.batch_size // (world * accum)

    def _build_model(self) -> None:
        """The process, the network on the device (identical initial weights on every rank: DDP would broadcast
        rank 0's anyway), its eps model (unwrapped: for probing and sampling set-up) and the loss."""
        torch.manual_seed(int(self.tcfg.seed))
        model, self.process = build_from_config(self.cfg)  # resolves loss=auto, prediction=auto into self.cfg
        if self.cfg.get("sampler") is not None:  # the grids' sampler, grid and weights fail now, not at the first grid
            from diffusion.samplers import sampler_from_config

            sampler_from_config(self.cfg.sampler).check(self.process, allow_fitted=False)
        self.net = model.net.to(self.device)
        self.model = build_eps_model(self.net, self.process, self.cfg)
        self.loss_fn = build_loss(self.cfg, self.process)
        self.num_classes = getattr(self.net, "num_classes", None)
        if self.num_classes is not None and not getattr(self.dataset, "num_classes", None):
            raise TrainingError(f"model.num_classes={self.num_classes} but the data set has no labels: set model.num_classes=null")

    def _set_precision(self) -> None:
        """trainer.precision resolved (``auto``: timed on rank 0, shared), written back into the config."""
        tc = self.tcfg
        precision = tc.precision.value if hasattr(tc.precision, "value") else str(tc.precision)
        speedup = (lambda: D.broadcast_object(self._bf16_speedup() if self.dist.is_main else None))
        self.precision = resolve_precision(precision, self.device, speedup)
        OmegaConf.update(self.cfg, "trainer.precision", self.precision)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
        """trainer.optimizer and trainer.lr_schedule (diffusion/training/optim.py) with the trainer's values."""
        tc = self.tcfg
        optimizer = instantiate(tc.optimizer, _partial_=True)(
            self.params, lr=float(tc.lr), betas=tuple(tc.adam_betas), eps=float(tc.adam_eps),
            weight_decay=float(tc.weight_decay))
        return optimizer, self._lr_schedule()

    def _lr_schedule(self) -> Callable[[int], float]:
        tc = self.tcfg
        lr_at = partial(instantiate(tc.lr_schedule, _partial_=True), lr=float(tc.lr),
                        warmup_steps=int(tc.warmup_steps), max_steps=int(tc.max_steps))
        lr_at(0)  # a bad schedule option fails here, before training
        return lr_at

    def _seed_streams(self, *resumed_at: int) -> None:
        """Seed this rank's random streams from trainer.seed (``resumed_at``: the step, for fresh streams in a
        run resumed by another number of processes)."""
        seed, rank = int(self.tcfg.seed), self.dist.rank
        self.generator.manual_seed(derive_seed(seed, "noise", rank, *resumed_at))
        self.data_generator.manual_seed(derive_seed(seed, "data", rank, *resumed_at))
        torch.manual_seed(derive_seed(seed, "global", rank, *resumed_at))  # dropout layers
        if self.device.type == "cuda":
            torch.cuda.manual_seed(derive_seed(seed, "cuda", rank, *resumed_at))

    def _build_loader(self) -> None:
        self.loader, self.sampler = make_train_loader(
            self.dataset, self.micro_batch, seed=int(self.tcfg.seed), rank=self.dist.rank,
            world_size=self.dist.world_size, num_workers=int(self.tcfg.num_workers),
            pin_memory=self.device.type == "cuda", generator=self.data_generator)
        self.batches_per_epoch = self.sampler.num_samples // self.micro_batch
        if self.batches_per_epoch < 1:
            raise TrainingError(f"the data set's {len(self.dataset)} images make no batch of {self.micro_batch} per process: "
                                "lower trainer.batch_size")

    def _wrap_for_training(self) -> tuple[Any, Callable[..., Tensor]]:
        """(the DDP module or None, the eps model training calls): the network wrapped for data parallelism
        and ``torch.compile`` as configured; checkpoints always hold the bare network."""
        train_net: torch.nn.Module = self.net
        ddp = None
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_net = ddp = DistributedDataParallel(self.net, device_ids=ids)
        if self.tcfg.compile:
            train_net = torch.compile(train_net)
        return ddp, build_eps_model(train_net, self.process, self.cfg)

    def _periodic_actions(self) -> list[Periodic]:
        """Checkpoint, sample grid, bits/dim: every ``*_every`` steps and at the last step (a checkpoint always,
        the others when switched on). Their ``seconds`` are what the time budget reserves for the last step."""
        tc = self.tcfg
        return [Periodic("checkpoint", int(tc.ckpt_every), self.save, at_end=True),
                Periodic("sample grid", int(tc.sample_every), self.sample_grid, at_end=tc.sample_every > 0),
                Periodic("bits/dim", int(tc.bpd_every), self.log_bits_per_dim, at_end=tc.bpd_every > 0),
                Periodic("FID", int(tc.fid_every), lambda: log_fid(self, self.step, final=True), at_end=tc.fid_every > 0)]

    # ---- one optimizer step ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Micro-batches forever, starting where step ``self.step`` left off."""
        done = self.step * self.accum
        while True:
            epoch, k = divmod(done, self.batches_per_epoch)
            self.sampler.set_position(epoch, k * self.micro_batch)
            for images, labels in self.loader:
                yield images, labels
                done += 1

    def _labels(self, labels: Tensor) -> Tensor | None:
        if self.num_classes is None:
            return None
        labels = labels.to(self.device, non_blocking=True).long()
        p = float(self.tcfg.class_dropout)
        if p > 0:
            # classifier-free guidance (Ho & Salimans 2022): train the unconditional model on the null class
            drop = torch.rand(labels.shape, generator=self.generator, device=self.device) < p
            labels = torch.where(drop, torch.full_like(labels, self.net.null_class), labels)
        return labels

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batches) -> tuple[Tensor, Tensor, float]:
        """One optimizer step; returns (mean loss, grad norm before clipping, lr) as device tensors/float."""
        lr = float(self.lr_at(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            images, labels = next(batches)
            x0 = images.to(self.device, non_blocking=True)
            class_labels = self._labels(labels)
            last = i == self.accum - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(self.train_model, x0, class_labels=class_labels, generator=self.generator).float().mean()
                self.scaler.scale(loss / self.accum).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        clip = float(self.tcfg.grad_clip)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else math.inf, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.net)
        self.step += 1
        return total / self.accum, grad_norm, lr

    # ---- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``trainer.max_steps``, until ``trainer.max_minutes`` is used up or until SIGTERM/SIGINT;
        returns a summary dict (``stopped_by``: a ``StopReason``; ``signal``: the signal's name or None)."""
        tc = self.tcfg
        restore = self._install_signal_handlers()
        batches, start_step, window = self._batches(), self.step, _Window(self.device)
        deadline = time.perf_counter() + 60 * float(tc.max_minutes) if tc.max_minutes > 0 else math.inf
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.dist.is_main and tc.progress), mininterval=1.0)
        reason = StopReason.max_steps
        fitting = tc.max_minutes > 0 and tc.fit_budget and self.step + FIT_FROM + FIT_OVER < tc.max_steps
        try:
            while self.step < tc.max_steps:
                if fitting and self.step == start_step + FIT_FROM:
                    _synchronize(self.device)
                    fit_start, periodic_before = time.perf_counter(), window.all_excluded_seconds
                loss, grad_norm, lr = self.train_step(batches)
                if self.step == start_step + 1 and tc.max_minutes > 0:
                    self._estimate_final_cost()
                if fitting and self.step == start_step + FIT_FROM + FIT_OVER:
                    _synchronize(self.device)
                    seconds = time.perf_counter() - fit_start - (window.all_excluded_seconds - periodic_before)
                    self._fit_steps_to_budget(seconds / FIT_OVER, deadline, bar)
                window.add(self.step, loss, grad_norm)
                bar.update(1)
                stop = self._stop_reason(window, deadline)
                if _every(self.step, tc.log_every):
                    self._log_window(window, lr, bar)
                if stop is StopReason.signal:
                    self.save()
                    reason = stop
                    break
                final = stop is StopReason.time or self.step == tc.max_steps
                with window.excluded():
                    for action in self.periodic:
                        if action.due(self.step, final):
                            action.run()
                if stop is StopReason.time:
                    reason = stop
                    break
            if self._last_saved != self.step and self.step > start_step:
                self.save()
            in_sync = self._check_replicas()
        finally:
            bar.close()
            restore()
            self.logger.close()
        return {"step": self.step, "stopped_by": reason, "signal": self._signal_name(reason),
                "checkpoint": self.latest_checkpoint(), "precision": self.precision, "replicas_in_sync": in_sync,
                "world_size": self.dist.world_size}

    def _fit_steps_to_budget(self, step_seconds: float, deadline: float, bar) -> None:
        """Lower ``trainer.max_steps`` when, at ``step_seconds`` per optimizer step (the slowest rank's), it would
        not fit the time budget: the lr schedule and the EMA then finish within ``trainer.max_minutes`` instead of
        being cut off mid-schedule. Periodic actions count at their estimated or last durations; 3% is kept
        spare. The new value goes into the run's config, and so into its checkpoints: a resumed run keeps it."""
        tc = self.tcfg
        step_seconds = self._slowest(step_seconds)
        periodic = [a for a in self.periodic if a.every > 0]
        per_step = step_seconds + sum(a.seconds / a.every for a in periodic)
        at_end = sum(a.seconds for a in self.periodic if a.at_end)
        fits = max(int((0.97 * (deadline - time.perf_counter()) - at_end) / per_step), 1)
        if self.step + fits >= tc.max_steps:
            return
        log.info(f"at {1 / step_seconds:.2f} steps/s, trainer.max_steps={tc.max_steps} would not fit "
                 f"trainer.max_minutes={tc.max_minutes}: training {self.step + fits} steps, so that the lr schedule "
                 "finishes in time (trainer.fit_budget=false keeps max_steps and stops where the time runs out)")
        tc.max_steps = self.step + fits
        self.lr_at = self._lr_schedule()
        bar.total = tc.max_steps
        bar.refresh()

    def _slowest(self, seconds: float) -> float:
        if not self.dist.distributed:
            return seconds
        value = torch.tensor([seconds], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return float(value.item())

    def _stop_reason(self, window: _Window, deadline: float) -> StopReason | None:
        """Whether to stop after this step, agreed on by all ranks so that all take the same branch; a loss that
        turned NaN/inf raises ``TrainingError``. Out of time means that the final sample grid and bits/dim (their
        last durations) no longer fit before the deadline; it ends the run as max_steps would."""
        step, tc = self.step, self.tcfg
        stop_requested = self._stop_signal is not None
        out_of_time = time.perf_counter() + self._grids.seconds + self._bits_per_dim.seconds > deadline
        # reading the NaN flag syncs with the device: on a GPU only where something is logged or saved
        check_nan = (self.device.type == "cpu" or stop_requested or out_of_time or _every(step, tc.log_every)
                     or self._checkpoints.due(step, step == tc.max_steps))
        bad, stop_requested, out_of_time = self._agree(check_nan and int(window.first_bad) >= 0, stop_requested, out_of_time)
        if bad:
            self._diverged(int(window.first_bad) if int(window.first_bad) >= 0 else step)
        if stop_requested:
            return StopReason.signal
        if out_of_time and step < tc.max_steps:
            log.info(f"trainer.max_minutes={tc.max_minutes} reached at step {step} of {tc.max_steps}")
            return StopReason.time
        return None

    def _log_window(self, window: _Window, lr: float, bar) -> None:
        """Mean loss and grad norm over the window, lr, EMA decay and training throughput to TensorBoard."""
        step = self.step
        scalars = {"train/loss": (window.loss / window.steps).item(),
                   "train/grad_norm": (window.grad_norm / window.steps).item(), "train/lr": lr,
                   "train/ema_decay": ema_decay_at(step - 1, self.ema.decay, self.ema.warmup),
                   "perf/images_per_sec": window.steps * self.tcfg.batch_size / window.training_seconds()}
        self.logger.scalars(step, scalars)
        bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{lr:.1e}", refresh=False)
        window.reset()

    def _signal_name(self, reason: StopReason) -> str | None:
        if reason is not StopReason.signal:
            return None
        # a stop agreed on because another rank got the signal: that was SIGTERM as far as this rank knows
        return signal.Signals(self._stop_signal if self._stop_signal is not None else signal.SIGTERM).name

    @torch.no_grad()
    def _estimate_final_cost(self) -> None:
        """Set the sample grid's and bits/dim's ``seconds`` (until they run and are timed) to their numbers of
        network evaluations times one timed forward pass at their batch sizes: the sampler's steps for the grid,
        ``likelihood.bound_cost`` for the bound."""
        from diffusion.likelihood import bound_cost

        tc = self.tcfg

        def forward_seconds(n: int, autocast: bool) -> float:
            x = torch.zeros(self._sample_shape(n), device=self.device)
            t = torch.full((n,), float(self.process.t_max), device=self.device)
            labels = None if self.num_classes is None else torch.zeros(n, dtype=torch.long, device=self.device)
            ctx = self._autocast() if autocast else contextlib.nullcontext()
            seconds = []
            # the first call at a new shape pays one-time set-up (kernel choice, allocations), on a small network
            # many times a forward pass: timed alone and multiplied by ~1,000 bound terms, it once reserved more
            # than the whole budget and ended a run at step 1. So: the fastest of the calls after a warm-up
            for _ in range(3):
                _synchronize(self.device)
                start = time.perf_counter()
                with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), ctx:
                    self.ema_model(x, t, class_labels=labels)
                _synchronize(self.device)
                seconds.append(time.perf_counter() - start)
            return min(seconds[1:])

        if self._grids.every > 0 and tc.sample_count > 0 and self.dist.is_main:
            self._grids.seconds = int(self.cfg.sampler.get("steps", 50)) * forward_seconds(int(tc.sample_count), autocast=True)
        if self._bits_per_dim.every > 0 and self.holdout is not None and self.dist.is_main:
            self._bits_per_dim.seconds = bound_cost(self.process, tc.bpd_t_samples) * forward_seconds(len(self.holdout), autocast=False)

    def _agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true if it is true on any rank, so that all ranks take the same branch."""
        if not self.dist.distributed:
            return flags
        values = torch.tensor([float(f) for f in flags], device=self.device)
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
        return tuple(bool(v > 0) for v in values.tolist())

    def _diverged(self, step: int) -> None:
        latest = self.latest_checkpoint()
        where = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
        raise TrainingError(f"the loss became NaN/inf at step {step}: training stopped without saving ({where}); "
                            "lower trainer.lr, keep trainer.grad_clip > 0, or use trainer.precision=fp32")

    def _check_replicas(self) -> bool | None:
        if not self.dist.distributed:
            return None
        ok = D.replicas_in_sync(self.net)
        if self.dist.is_main:
            if ok:
                log.info(f"DDP: weights identical on all {self.dist.world_size} ranks after step {self.step}")
            else:
                log.error(f"DDP: weights differ between the {self.dist.world_size} ranks after step {self.step}")
        return ok

    # ---- signals ----------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM / SIGINT (Ctrl-C) ask the loop to save and stop after the current step; a second
        Ctrl-C stops at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def request_stop(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.dist.is_main:
                log.warning(f"{signal.Signals(signum).name} received: saving a checkpoint after this step, then stopping")

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to save and stop after the current step (as SIGTERM does)."""
        self._stop_signal = signum

    # ---- checkpoints ------------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Tensor]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
        return {"torch": torch.get_rng_state(), "cuda": cuda, "generator": self.generator.get_state(),
                "data": self.data_generator.get_state()}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (all ranks must call it: it gathers every rank's RNG state)."""
        return {"step": self.step, "model": self.net.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": D.gather_objects(self._rng_state()), "config": OmegaConf.to_yaml(self.cfg, resolve=True)}

    def save(self) -> Path | None:
        """Write ``checkpoints/ckpt_<step>.pt`` (rank 0) and keep the last ``trainer.keep_last``."""
        state = self.state_dict()
        path = None
        if self.dist.is_main:
            path = save_checkpoint(checkpoint_path(self.run_dir, self.step), state)
            prune_checkpoints(self.run_dir, int(self.tcfg.keep_last))
            log.info(f"saved {path}")
        self._last_saved = self.step
        return path

    def latest_checkpoint(self) -> Path | None:
        found = list_checkpoints(self.run_dir)
        return found[-1][1] if found else None

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.step = int(state["step"])
        self.ema.load_state_dict(state["ema"], num_updates=self.step)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng") or []
        if len(rng) == self.dist.world_size:
            mine = rng[self.dist.rank]
            torch.set_rng_state(mine["torch"])
            if self.device.type == "cuda" and mine["cuda"].numel():
                torch.cuda.set_rng_state(mine["cuda"], self.device)
            self.generator.set_state(mine["generator"].to(self.generator.get_state().device))
            self.data_generator.set_state(mine["data"])
        else:
            # another number of processes: fresh streams (the run goes on, but not as it would have)
            self._seed_streams(self.step)
            if self.dist.is_main:
                log.warning(f"resuming with {self.dist.world_size} processes, the checkpoint had {len(rng)}: "
                            "random streams restart, so the run will not match an uninterrupted one")

    # ---- periodic evaluation ------------------------------------------------------------------------------
    def _sample_shape(self, n: int) -> tuple[int, ...]:
        return (n, int(self.dataset.channels), int(self.dataset.image_size), int(self.dataset.image_size))

    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        """A grid of ``trainer.sample_count`` samples from the EMA weights with ``cfg.sampler`` (rank 0);
        the same noise every time, so the grids show the training progress."""
        if not self.dist.is_main or self.tcfg.sample_count < 1:
            return None
        from diffusion.samplers import sampler_from_config

        spec = sampler_from_config(self.cfg.sampler).check(self.process, allow_fitted=False)
        n = int(self.tcfg.sample_count)
        labels = None
        if self.num_classes is not None:
            labels = torch.arange(n, device=self.device) % self.num_classes
        generator = torch.Generator(self.device).manual_seed(derive_seed(self.tcfg.seed, "samples"))
        # the network in the training precision (bf16 autocast leaves the sampler's own arithmetic in fp32)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self._autocast():
            x = spec(self.process, self.ema_model, self._sample_shape(n), generator=generator, class_labels=labels,
                     device=self.device, clip_denoised=self.tcfg.sample_clip)
        return self.logger.grid(self.step, x)

    @torch.no_grad()
    def log_bits_per_dim(self) -> float | None:
        """Bits/dim of the held-out 8-bit images under the EMA model: the variational bound (all N terms
        for DDPM unless ``trainer.bpd_t_samples``) on uniformly dequantized pixels (fixed draws; rank 0)."""
        if not self.dist.is_main or self.holdout is None:
            return None
        from diffusion import likelihood

        generator = torch.Generator(self.device).manual_seed(derive_seed(self.tcfg.seed, "bpd"))
        x = likelihood.dequantize(self.holdout.to(self.device), generator=generator)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            nats = likelihood.variational_bound(self.process, self.ema_model, x, generator=generator,
                                                t_samples=self.tcfg.bpd_t_samples)
        bpd = float(likelihood.bits_per_dim(nats, x[0].numel()).mean())
        self.logger.scalars(self.step, {"eval/bits_per_dim": bpd})
        log.info(f"step {self.step}: {bpd:.3f} bits/dim (variational bound, {len(x)} held-out images)")
        return bpd

    # ---- precision probe ----------------------------------------------------------------------------------
    def _bf16_speedup(self) -> float:
        """fp32 time / bf16-autocast time of one forward+backward of the real loss on a real-sized batch
        (interleaved, best of 3 after a warm-up each: the minimum shrugs off other processes' load; one round
        when bf16 is more than 2x slower).
        Leaves weights, gradients and RNG states as found."""
        shape = self._sample_shape(self.micro_batch)
        g = torch.Generator(self.device).manual_seed(0)
        x0 = torch.randn(shape, generator=g, device=self.device).clamp(-1, 1)
        labels = None if self.num_classes is None else torch.zeros(shape[0], dtype=torch.long, device=self.device)

        def run(dtype) -> float:
            ctx = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            start = time.perf_counter()
            with ctx:
                loss = self.loss_fn(self.model, x0, class_labels=labels, generator=g).float().mean()
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
        self.net.zero_grad(set_to_none=True)
        speedup = min(times[None]) / min(times[torch.bfloat16])
        log.info(f"precision=auto: bf16 autocast is {speedup:.2f}x the speed of fp32 on this CPU")
        return speedup


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0
