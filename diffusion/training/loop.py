r"""The training loop: optimizer and lr schedule (``optim.py``), gradient clipping, EMA, mixed precision
(``precision.py``), gradient accumulation, data parallelism, checkpoints that resume bit for bit (``rng.py``),
a time budget (``budget.py``) and a clean stop on SIGTERM/Ctrl-C (``signals.py``). One optimizer step (Ho et al.
2020, Algorithm 1, averaged over a batch):

    for each of grad_accum micro-batches x_0 (this rank's share of trainer.batch_size):
        loss = mean_i L(x_0^i, t_i, eps_i)           t, eps drawn from the run's torch.Generator
        backward(loss / grad_accum)                  (DDP averages the gradients across ranks)
    clip ||grad|| to grad_clip;  lr_k = lr_schedule(k) (default lr min(1, (k + 1) / warmup_steps));
    optimizer step (default AdamW);  EMA update

After each step: stop on a request or when the time is up (``StopReason``), log every ``log_every`` steps, then
the ``Periodic`` actions: the checkpoint and the evaluations handed over (train.py: ``diffusion.evaluation.periodic``).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm

from diffusion.device import pick_device
from diffusion.training import distributed as D
from diffusion.training.actions import Periodic, TrainingView
from diffusion.training.budget import TimeBudget
from diffusion.training.build import build_eps_model, build_from_config, build_loss
from diffusion.training.checkpoint import checkpoint_path, list_checkpoints, prune_checkpoints, save_checkpoint
from diffusion.training.data import TrainBatches, split_batch
from diffusion.training.ema import EMA, ema_decay_at
from diffusion.training.errors import TrainingError
from diffusion.training.logging import RunLogger
from diffusion.training.optim import build_lr_schedule, build_optimizer, warmup_lr
from diffusion.training.precision import AMP_DTYPES, autocast, bf16_speedup, resolve_precision
from diffusion.training.rng import RandomStreams
from diffusion.training.signals import StopRequest
from diffusion.training.window import Window
from diffusion.utils import derive_seed

log = logging.getLogger(__name__)

__all__ = ["Trainer", "StopReason", "Periodic", "TrainingView", "resolve_precision", "derive_seed", "warmup_lr",
           "AMP_DTYPES"]


class StopReason(str, Enum):
    """Why ``Trainer.fit`` returned (a ``str`` too: ``StopReason.time == "time"``)."""

    max_steps = "max_steps"  # max_steps reached (or already reached when fit began)
    time = "time"            # trainer.max_minutes used up: ends the run as max_steps would
    signal = "signal"        # SIGTERM / SIGINT or request_stop(): saved, then stopped


class Trainer:
    """Trains ``cfg``'s model on ``dataset`` and writes the run folder ``run_dir`` (rank 0).

    ``resume``: a checkpoint dict (from ``load_checkpoint``) to continue from. ``evaluations``: ``Periodic``
    actions run beside the checkpoint (each receives a ``TrainingView``). The caller's ``cfg`` is left as given;
    ``self.cfg`` is the resolved copy (loss, prediction and precision made concrete) that checkpoints save.
    ``self.max_steps`` is where training ends: ``trainer.max_steps``, or fewer where the time budget fitted it.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, dataset: Any, resume: dict | None = None,
                 evaluations: Sequence[Periodic] = (), loss: Callable[..., Tensor] | None = None,
                 init_state: dict[str, Tensor] | None = None):
        self.cfg, self.run_dir = copy.deepcopy(cfg), Path(run_dir)
        self.tcfg = tc = self.cfg.trainer
        self.dist = D.current()
        self.device = pick_device(str(tc.device), self.dist.local_rank, setting="trainer.device")
        self.dataset, self.max_steps = dataset, int(tc.max_steps)
        self.image_shape = (int(dataset.channels), int(dataset.image_size), int(dataset.image_size))
        self.accum, self.micro_batch = split_batch(int(tc.batch_size), int(tc.grad_accum), self.dist.world_size)
        if self.max_steps < 0:
            raise TrainingError(f"trainer.max_steps={tc.max_steps} must be >= 0")
        self._build_model()
        if loss is not None:  # a loss that the config cannot build (distillation: it holds the teacher)
            self.loss_fn = loss
        if init_state is not None and resume is None:  # a student starts from its teacher's weights
            self.net.load_state_dict(init_state)
        self._set_precision()
        self.ema = EMA(self.net, tc.ema_decay, tc.ema_warmup)
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # listed once: walking modules costs
        self.optimizer, self.lr_at = build_optimizer(self.params, tc), build_lr_schedule(tc, self.max_steps)
        self.rng = RandomStreams(self.device)
        self.generator = self.rng.noise  # the loss's times and noise, class-label dropout
        self.rng.seed(int(tc.seed), self.dist.rank)
        self.batches = TrainBatches(dataset, self.micro_batch, int(tc.seed), self.dist.rank, self.dist.world_size,
                                    int(tc.num_workers), self.device.type == "cuda", generator=self.rng.data)
        self.ddp, train_net = D.wrap_for_training(self.net, self.device, compile=bool(tc.compile))
        self.train_model = build_eps_model(train_net, self.process, self.cfg)
        self.ema_model = build_eps_model(self.ema.net, self.process, self.cfg)
        self.step = 0
        if resume is not None:
            self._load_state(resume)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        self.stop = StopRequest(announce=self.dist.is_main)
        self._last_saved: int | None = None
        self._checkpoints = Periodic("checkpoint", int(tc.ckpt_every), lambda view: self.save(), at_end=True)
        self.periodic = [self._checkpoints, *evaluations]

    # ---- set-up -----------------------------------------------------------------------------------------
    def _build_model(self) -> None:
        """The process, the network on the device (identical initial weights on every rank: DDP would broadcast
        rank 0's anyway), its eps model (unwrapped: for probing and sampling set-up) and the loss."""
        torch.manual_seed(int(self.tcfg.seed))
        model, self.process = build_from_config(self.cfg)  # resolves loss=auto, prediction=auto into self.cfg
        self.net = model.net.to(self.device)
        self.model = build_eps_model(self.net, self.process, self.cfg)
        self.loss_fn = build_loss(self.cfg, self.process)
        self.num_classes = getattr(self.net, "num_classes", None)
        if self.num_classes is not None and not getattr(self.dataset, "num_classes", None):
            raise TrainingError(f"model.num_classes={self.num_classes} but the data set has no labels: set model.num_classes=null")

    def _set_precision(self) -> None:
        """trainer.precision resolved (``auto`` on a CPU: timed on rank 0, shared) into ``self.cfg``."""
        requested = getattr(self.tcfg.precision, "value", str(self.tcfg.precision))
        shape = (self.micro_batch, *self.image_shape)
        probe = partial(bf16_speedup, self.loss_fn, self.model, self.net, shape, self.device, self.num_classes)
        self.precision = resolve_precision(requested, self.device,
                                           lambda: D.broadcast_object(probe() if self.dist.is_main else None))
        OmegaConf.update(self.cfg, "trainer.precision", self.precision)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def view(self) -> TrainingView:
        """The run as the periodic evaluations see it now."""
        return TrainingView(self.ema_model, self.process, self.step, self.logger, self.device, self.image_shape,
                            self.num_classes, self.dist.is_main, self._autocast)

    # ---- one optimizer step ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Micro-batches forever, starting where step ``self.step`` left off."""
        return self.batches.after(self.step * self.accum)

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

    def train_step(self, batches) -> tuple[Tensor, Tensor, float]:
        """One optimizer step; returns (mean loss, grad norm before clipping, lr) as device tensors/float."""
        lr = float(self.lr_at(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            images, labels, *paired = next(batches)  # paired: the x_T of each x0 (reflow's couplings)
            x0 = images.to(self.device, non_blocking=True)
            noise = {"noise": paired[0].to(self.device, non_blocking=True)} if paired else {}
            class_labels = self._labels(labels)
            last = i == self.accum - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with self._autocast():
                    loss = self.loss_fn(self.train_model, x0, class_labels=class_labels, generator=self.generator,
                                        **noise).float().mean()
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
        """Train to ``self.max_steps``, until ``trainer.max_minutes`` is used up or until SIGTERM/SIGINT; returns a
        summary dict (``stopped_by``: a ``StopReason``; ``signal``: the signal's name or None; ``max_steps``)."""
        tc = self.tcfg
        batches, start_step, window = self._batches(), self.step, Window(self.device)
        budget = TimeBudget(tc.max_minutes, tc.fit_budget, self.step, self.max_steps, self.device)
        bar = tqdm(total=self.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.dist.is_main and tc.progress), mininterval=1.0)
        stop = None
        try:
            with self.stop.handlers():
                while self.step < self.max_steps and stop is None:
                    loss, grad_norm, lr = self.train_step(batches)
                    fitted = budget.after_step(self.step, self.max_steps, self.periodic, window.all_excluded_seconds, self.view)
                    if fitted is not None:
                        self.set_max_steps(fitted, bar)
                    window.add(self.step, loss, grad_norm)
                    bar.update(1)
                    stop = self._stop_reason(window, budget)
                    if _every(self.step, tc.log_every):
                        self._log_window(window, lr, bar)
                    if stop is StopReason.signal:
                        self.save()
                        continue
                    final = stop is StopReason.time or self.step == self.max_steps
                    with window.excluded():
                        for action in (a for a in self.periodic if a.due(self.step, final)):
                            action.run(self.view())
            reason = stop or StopReason.max_steps
            if self._last_saved != self.step and self.step > start_step:
                self.save()
            in_sync = D.check_replicas(self.net, self.step)
        finally:
            bar.close()
            self.logger.close()
        return {"step": self.step, "stopped_by": reason, "max_steps": self.max_steps, "checkpoint": self.latest_checkpoint(),
                "signal": self.stop.name() if reason is StopReason.signal else None, "precision": self.precision,
                "replicas_in_sync": in_sync, "world_size": self.dist.world_size}

    def set_max_steps(self, max_steps: int, bar=None) -> None:
        """Train to ``max_steps`` (the budget fit's choice): the lr schedule is rebuilt to end there."""
        self.max_steps = max_steps
        self.lr_at = build_lr_schedule(self.tcfg, max_steps)
        if bar is not None:
            bar.total = max_steps
            bar.refresh()

    def _stop_reason(self, window: Window, budget: TimeBudget) -> StopReason | None:
        """Whether to stop after this step, agreed on by all ranks so that all take the same branch; a loss that
        turned NaN/inf raises ``TrainingError``."""
        step, stop_requested, out_of_time = self.step, self.stop.requested, budget.out_of_time(self.periodic)
        # reading the NaN flag syncs with the device: on a GPU only where something is logged or saved
        check_nan = (self.device.type == "cpu" or stop_requested or out_of_time or _every(step, self.tcfg.log_every)
                     or self._checkpoints.due(step, step == self.max_steps))
        bad, stop_requested, out_of_time = (v > 0 for v in D.max_over_ranks(
            [check_nan and int(window.first_bad) >= 0, stop_requested, out_of_time], self.device))
        if bad:
            latest = self.latest_checkpoint()
            where = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
            first_bad = int(window.first_bad)
            raise TrainingError(f"the loss became NaN/inf at step {first_bad if first_bad >= 0 else step}: training "
                                f"stopped without saving ({where}); lower trainer.lr, keep trainer.grad_clip > 0, "
                                "or use trainer.precision=fp32")
        if stop_requested:
            return StopReason.signal
        if out_of_time and step < self.max_steps:
            log.info(f"trainer.max_minutes={self.tcfg.max_minutes} reached at step {step} of {self.max_steps}")
            return StopReason.time
        return None

    def _log_window(self, window: Window, lr: float, bar) -> None:
        """Mean loss and grad norm over the window, lr, EMA decay and training throughput to TensorBoard."""
        loss, grad_norm = window.means()
        self.logger.scalars(self.step, {
            "train/loss": loss, "train/grad_norm": grad_norm, "train/lr": lr,
            "train/ema_decay": ema_decay_at(self.step - 1, self.ema.decay, self.ema.warmup),
            "perf/images_per_sec": window.steps * self.tcfg.batch_size / window.training_seconds()})
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}", refresh=False)
        window.reset()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to save and stop after the current step (as SIGTERM does)."""
        self.stop.request(signum)

    # ---- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (all ranks must call it: it gathers every rank's RNG state);
        ``budget_fit``: trainer.max_steps and where this run trains to (fewer where the budget fit lowered it)."""
        return {"step": self.step, "model": self.net.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": D.gather_objects(self.rng.state()), "config": OmegaConf.to_yaml(self.cfg, resolve=True),
                "budget_fit": {"configured": int(self.tcfg.max_steps), "max_steps": self.max_steps},
                "loss": self.loss_fn.state_dict() if hasattr(self.loss_fn, "state_dict") else {}}

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
        if state.get("loss"):  # a loss with state of its own (consistency distillation's EMA target)
            self.loss_fn.load_state_dict(state["loss"])
        fit = state.get("budget_fit") if isinstance(state.get("budget_fit"), dict) else {}
        if fit.get("configured") == self.tcfg.max_steps and isinstance(fit.get("max_steps"), int):
            self.set_max_steps(fit["max_steps"])  # the budget fit's choice holds unless trainer.max_steps changed
        rng = state.get("rng") or []
        if len(rng) == self.dist.world_size:
            self.rng.load(rng[self.dist.rank])
        else:
            # another number of processes: fresh streams (the run goes on, but not as it would have)
            self.rng.seed(int(self.tcfg.seed), self.dist.rank, self.step)
            if self.dist.is_main:
                log.warning(f"resuming with {self.dist.world_size} processes, the checkpoint had {len(rng)}: "
                            "random streams restart, so the run will not match an uninterrupted one")


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0
