r"""The training loop: AdamW with linear warm-up, gradient clipping, EMA, mixed precision, gradient
accumulation, data parallelism, checkpoints that resume bit for bit, and a clean stop on SIGTERM/Ctrl-C.

One optimizer step (Ho et al. 2020, Algorithm 1, averaged over a batch):

    for each of grad_accum micro-batches x_0 (this rank's share of trainer.batch_size):
        loss = mean_i L(x_0^i, t_i, eps_i)           t, eps drawn from the run's torch.Generator
        backward(loss / grad_accum)                  (DDP averages the gradients across ranks)
    clip ||grad|| to grad_clip;  lr_k = lr min(1, (k + 1) / warmup_steps);  AdamW step;  EMA update

Randomness: the noise and times of the loss, and class-label dropout, draw from a ``torch.Generator``
seeded per rank; dropout layers draw from torch's global RNG, seeded per rank too; random flips from
the loader's generator. All three states go into every checkpoint, with the data position (derived
from the step), so that a stopped and resumed run continues exactly as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm

from diffusion.training import distributed as D
from diffusion.training.build import build_eps_model, build_from_config, build_loss
from diffusion.training.checkpoint import checkpoint_path, list_checkpoints, prune_checkpoints, save_checkpoint
from diffusion.training.data import make_train_loader
from diffusion.training.ema import EMA, ema_decay_at
from diffusion.training.fid_log import log_fid
from diffusion.training.errors import TrainingError
from diffusion.training.logging import RunLogger

log = logging.getLogger(__name__)


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): lr * min(1, (step + 1) / warmup_steps)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one random stream, from the run seed and a name (so streams never collide)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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
        self.device = D.pick_device(str(tc.device), self.dist)
        self.dataset, self.holdout = dataset, holdout

        world, accum = self.dist.world_size, int(tc.grad_accum)
        if accum < 1 or tc.batch_size < 1 or tc.batch_size % (world * accum):
            raise TrainingError(f"trainer.batch_size={tc.batch_size} must be a positive multiple of processes x grad_accum "
                                f"= {world} x {accum}: change trainer.batch_size or trainer.grad_accum")
        self.accum, self.micro_batch = accum, tc.batch_size // (world * accum)
        if tc.max_steps < 0:
            raise TrainingError(f"trainer.max_steps={tc.max_steps} must be >= 0")

        # identical initial weights on every rank (DDP would broadcast rank 0's anyway)
        torch.manual_seed(int(tc.seed))
        model, self.process = build_from_config(cfg)
        self.net = model.net.to(self.device)
        self.model = build_eps_model(self.net, self.process, cfg)  # unwrapped: for probing and sampling set-up
        self.loss_fn = build_loss(cfg, self.process)
        self.num_classes = getattr(self.net, "num_classes", None)
        if self.num_classes is not None and not getattr(dataset, "num_classes", None):
            raise TrainingError(f"model.num_classes={self.num_classes} but the data set has no labels: set model.num_classes=null")

        precision = tc.precision.value if hasattr(tc.precision, "value") else str(tc.precision)
        speedup = (lambda: D.broadcast_object(self._bf16_speedup() if self.dist.is_main else None))
        self.precision = resolve_precision(precision, self.device, speedup)
        OmegaConf.update(cfg, "trainer.precision", self.precision)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        self.ema = EMA(self.net, tc.ema_decay, tc.ema_warmup)
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # listed once: walking modules costs
        # fused AdamW: one kernel over all tensors (CPU and CUDA), the cheapest of torch's implementations
        self.optimizer = torch.optim.AdamW(self.params, lr=tc.lr, betas=tuple(tc.adam_betas), eps=tc.adam_eps,
                                           weight_decay=tc.weight_decay, fused=True)

        # random streams, per rank
        rank = self.dist.rank
        self.generator = torch.Generator(self.device).manual_seed(derive_seed(tc.seed, "noise", rank))
        self.data_generator = torch.Generator().manual_seed(derive_seed(tc.seed, "data", rank))
        torch.manual_seed(derive_seed(tc.seed, "global", rank))
        if self.device.type == "cuda":
            torch.cuda.manual_seed(derive_seed(tc.seed, "cuda", rank))

        self.loader, self.sampler = make_train_loader(
            dataset, self.micro_batch, seed=int(tc.seed), rank=rank, world_size=world, num_workers=int(tc.num_workers),
            pin_memory=self.device.type == "cuda", generator=self.data_generator)
        self.batches_per_epoch = self.sampler.num_samples // self.micro_batch
        if self.batches_per_epoch < 1:
            raise TrainingError(f"the data set's {len(dataset)} images make no batch of {self.micro_batch} per process: "
                                "lower trainer.batch_size")

        train_net: torch.nn.Module = self.net
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_net = DistributedDataParallel(self.net, device_ids=ids)
        self.ddp = train_net if self.dist.distributed else None
        if tc.compile:
            train_net = torch.compile(train_net)
        self.train_model = build_eps_model(train_net, self.process, cfg)
        self.ema_model = build_eps_model(self.ema.net, self.process, cfg)

        self.step = 0
        if resume is not None:
            self._load_state(resume)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        self._stop_signal: int | None = None
        self._last_saved: int | None = None
        self._grid_cost = self._bpd_cost = 0.0  # seconds a sample grid / bits/dim take (for max_minutes)

    # ---- one optimizer step ---------------------------------------------------------------------------
    def _batches(self):
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
        lr = warmup_lr(self.step, self.tcfg.lr, self.tcfg.warmup_steps)
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
        """Train to ``trainer.max_steps`` (or until SIGTERM/SIGINT); returns a summary dict."""
        tc, main = self.tcfg, self.dist.is_main
        restore = self._install_signal_handlers()
        batches = self._batches()
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (main and tc.progress), mininterval=1.0)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        norm_sum = torch.zeros((), device=self.device)
        window, window_start, busy = 0, time.perf_counter(), 0.0
        stopped_by = None
        start_step = self.step
        deadline = time.perf_counter() + 60 * float(tc.max_minutes) if tc.max_minutes > 0 else math.inf
        try:
            while self.step < tc.max_steps:
                loss, grad_norm, lr = self.train_step(batches)
                if self.step == start_step + 1 and tc.max_minutes > 0:
                    self._grid_cost, self._bpd_cost = self._estimate_final_cost()
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), self.step, first_bad)
                loss_sum += loss
                norm_sum += grad_norm.float()
                window += 1
                bar.update(1)
                step = self.step
                save_now = _every(step, tc.ckpt_every) or step == tc.max_steps
                log_now = _every(step, tc.log_every)
                # stop requests and NaN losses are agreed on by all ranks, so that all take the same branch
                check_nan = self.device.type == "cpu" or log_now or save_now
                # stop early enough for the final sample grid and bits/dim (timed when they last ran)
                bad, stop, out_of_time = self._agree(check_nan and int(first_bad) >= 0, self._stop_signal is not None,
                                                     time.perf_counter() + self._grid_cost + self._bpd_cost > deadline)
                if bad:
                    self._diverged(int(first_bad) if int(first_bad) >= 0 else step)
                if out_of_time and not stop and step < tc.max_steps:
                    # the time budget ends the run as max_steps would: checkpoint, last grid and bits/dim
                    log.info(f"trainer.max_minutes={tc.max_minutes} reached at step {step} of {tc.max_steps}")
                    stopped_by, save_now, final = "time", True, True
                else:
                    final = step == tc.max_steps
                if log_now:
                    elapsed = max(time.perf_counter() - window_start - busy, 1e-9)
                    scalars = {"train/loss": (loss_sum / window).item(), "train/grad_norm": (norm_sum / window).item(),
                               "train/lr": lr, "train/ema_decay": ema_decay_at(step - 1, self.ema.decay, self.ema.warmup),
                               "perf/images_per_sec": window * tc.batch_size / elapsed}
                    self.logger.scalars(step, scalars)
                    bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", lr=f"{lr:.1e}", refresh=False)
                    loss_sum.zero_(), norm_sum.zero_()
                    window, window_start, busy = 0, time.perf_counter(), 0.0
                t0 = time.perf_counter()
                if stop:
                    stopped_by = self._stop_signal if self._stop_signal is not None else signal.SIGTERM
                    self.save()
                    break
                if save_now:
                    self.save()
                if _every(step, tc.sample_every) or (final and tc.sample_every > 0):
                    t1 = time.perf_counter()
                    self.sample_grid()
                    self._grid_cost = time.perf_counter() - t1
                if _every(step, tc.bpd_every) or (final and tc.bpd_every > 0):
                    t1 = time.perf_counter()
                    self.log_bits_per_dim()
                    self._bpd_cost = time.perf_counter() - t1
                log_fid(self, step, final)
                busy += time.perf_counter() - t0
                if stopped_by == "time":
                    break
            else:
                if self._last_saved != self.step and self.step > start_step:
                    self.save()
            in_sync = self._check_replicas()
        finally:
            bar.close()
            restore()
            self.logger.close()
        return {"step": self.step, "stopped_by": stopped_by, "checkpoint": self.latest_checkpoint(),
                "precision": self.precision, "replicas_in_sync": in_sync, "world_size": self.dist.world_size}

    @torch.no_grad()
    def _estimate_final_cost(self) -> tuple[float, float]:
        """Seconds the final sample grid and bits/dim will take: their numbers of network evaluations times
        one timed forward pass at their batch sizes (replaced by their measured times once they run)."""
        tc = self.tcfg

        def forward_seconds(n: int, autocast: bool) -> float:
            x = torch.zeros(self._sample_shape(n), device=self.device)
            t = torch.full((n,), float(self.process.t_max), device=self.device)
            labels = None if self.num_classes is None else torch.zeros(n, dtype=torch.long, device=self.device)
            ctx = self._autocast() if autocast else contextlib.nullcontext()
            _synchronize(self.device)
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), ctx:
                self.ema_model(x, t, class_labels=labels)
            _synchronize(self.device)
            return time.perf_counter() - start

        grid = bpd = 0.0
        if tc.sample_every > 0 and tc.sample_count > 0 and self.dist.is_main:
            grid = int(self.cfg.sampler.get("steps", 50)) * forward_seconds(int(tc.sample_count), autocast=True)
        if tc.bpd_every > 0 and self.holdout is not None and self.dist.is_main:
            evals = tc.bpd_t_samples or (256 if self.process.continuous else self.process.num_steps)
            bpd = evals * (4 if self.process.continuous else 1) * forward_seconds(len(self.holdout), autocast=False)
        return grid, bpd

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
            seed, rank = int(self.tcfg.seed), self.dist.rank
            self.generator.manual_seed(derive_seed(seed, "noise", rank, self.step))
            self.data_generator.manual_seed(derive_seed(seed, "data", rank, self.step))
            torch.manual_seed(derive_seed(seed, "global", rank, self.step))
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
        from diffusion.samplers import sample

        options = OmegaConf.to_container(self.cfg.sampler, resolve=True)
        name, steps = options.pop("name", "ddim"), int(options.pop("steps", 50))
        options.pop("_target_", None)
        n = int(self.tcfg.sample_count)
        labels = None
        if self.num_classes is not None:
            labels = torch.arange(n, device=self.device) % self.num_classes
        generator = torch.Generator(self.device).manual_seed(derive_seed(self.tcfg.seed, "samples"))
        # the network in the training precision (bf16 autocast leaves the sampler's own arithmetic in fp32)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self._autocast():
            x = sample(self.process, self.ema_model, self._sample_shape(n), sampler=name, steps=steps,
                       generator=generator, class_labels=labels, device=self.device,
                       clip_denoised=self.tcfg.sample_clip, **options)
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
        (interleaved, best of 3 after a warm-up each: the minimum shrugs off other processes' load).
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
        self.net.zero_grad(set_to_none=True)
        speedup = min(times[None]) / min(times[torch.bfloat16])
        log.info(f"precision=auto: bf16 autocast is {speedup:.2f}x the speed of fp32 on this CPU")
        return speedup


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0
