"""Training-step speed and peak memory of our UNet against diffusers' UNet2DModel in the same configuration.

    python benchmarks/unet_speed.py --configs mnist cifar10 --batch 64 --reps 10

For each model config (configs/model/unet_<name>.yaml) it builds our ``diffusion.nn.UNet`` and a
``UNet2DModel`` with the same channels, blocks, attention placement and time conditioning (both parameter
counts are printed), then times, alternating ours / theirs every repetition so that load from other
processes hits both equally:

* a training step: DDPM-noised input, forward, eps-MSE, backward, AdamW step (median seconds, images/s);
* a forward pass in inference mode (images/s);
* peak memory of two training steps (model, gradients, AdamW state, activations), each model in its own
  subprocess (CPU, Linux: peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS before the model
  is built; GPU: torch.cuda.max_memory_allocated).

Modes: fp32 and bf16 autocast everywhere; on a GPU also channels_last and torch.compile (``--modes``); on any
device ``+compile`` (the whole network) and ``+blocks`` (each residual block compiled on its own, the rest eager).
The ratio column is ours / theirs: below 1 means our step is faster (or our memory smaller).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.device import ISA_ENV, describe_machine  # noqa: E402
from diffusion.processes import DDPM  # noqa: E402

#: the training step's target against diffusers, per mode (ours / theirs at the same configuration, both kinds of
#: CPU: with AMX and without; issue #10)
TARGETS = {"fp32": 0.9}

# wall time by default; --clock cpu (with --threads 1) counts only this process' CPU time, which a busy
# shared machine barely disturbs
CLOCK = time.perf_counter


def load_config(name: str):
    return OmegaConf.load(ROOT / "configs" / "model" / f"unet_{name}.yaml")


def build_ours(cfg) -> torch.nn.Module:
    from hydra.utils import instantiate

    return instantiate(cfg)


def build_theirs(cfg) -> torch.nn.Module:
    """diffusers' UNet2DModel with our config's architecture."""
    from diffusers import UNet2DModel

    mults, size = list(cfg.channel_mults), cfg.image_size
    widths = [cfg.base_channels * m for m in mults]
    attn = [size // 2**i in set(cfg.attention_resolutions) for i in range(len(mults))]
    heads = cfg.get("num_heads", 1)
    return UNet2DModel(
        sample_size=size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=tuple(widths), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=None if heads == 1 else widths[attn.index(True) if any(attn) else -1] // heads,
        norm_eps=1e-6, norm_num_groups=cfg.get("norm_groups", 32), dropout=cfg.get("dropout", 0.0),
        resnet_time_scale_shift="scale_shift" if cfg.get("scale_shift", False) else "default",
        downsample_type="resnet" if cfg.get("resblock_updown", False) else "conv",
        upsample_type="resnet" if cfg.get("resblock_updown", False) else "conv",
        num_class_embeds=None if cfg.get("num_classes") is None else cfg.num_classes + 1,
        flip_sin_to_cos=False, freq_shift=1,
    )


def _compile_blocks(net: torch.nn.Module, which: str) -> None:
    """``torch.compile`` every residual block of ``net`` in place (GroupNorm, SiLU, the embedding's scale-shift and
    the convolutions between them as one graph per block shape), leaving the rest eager."""
    if which == "ours":
        from diffusion.nn.unet import ResBlock as block
    else:
        from diffusers.models.resnet import ResnetBlock2D as block
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)  # a graph per shape
    for module in net.modules():
        if isinstance(module, block):
            module.compile(dynamic=False)


class Bench:
    """One model with its optimizer, ready to time a training step or a forward pass."""

    def __init__(self, which: str, cfg, batch: int, device: str, mode: str, seed: int = 0):
        torch.manual_seed(seed)
        self.net = (build_ours if which == "ours" else build_theirs)(cfg).to(device)
        self.theirs = which == "theirs"
        self.bf16 = "bf16" in mode
        self.device = device
        fmt = torch.channels_last if "cl" in mode else torch.contiguous_format
        self.net = self.net.to(memory_format=fmt)
        self.call = torch.compile(self.net) if "compile" in mode else self.net
        if "blocks" in mode:  # regional compilation: each residual block on its own, the rest eager
            _compile_blocks(self.net, which)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.proc = DDPM()
        g = torch.Generator().manual_seed(seed)
        shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        x0 = torch.randn(shape, generator=g)
        self.eps = torch.randn(shape, generator=g)
        self.t = torch.randint(0, 1000, (batch,), generator=g).double()
        alpha = self.proc.alpha(self.t).float().view(-1, 1, 1, 1)
        sigma = self.proc.sigma(self.t).float().view(-1, 1, 1, 1)
        self.x = (alpha * x0 + sigma * self.eps).to(device).contiguous(memory_format=fmt)
        self.eps, self.t = self.eps.to(device), self.t.float().to(device)

    def _forward(self) -> torch.Tensor:
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.call(self.x, self.t)
            return out.sample if self.theirs else out

    def train_step(self) -> float:
        self.net.train()
        self._sync()
        start = CLOCK()
        loss = F.mse_loss(self._forward().float(), self.eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._sync()
        self.last_loss = float(loss.detach())
        return CLOCK() - start

    @torch.inference_mode()
    def forward_step(self) -> float:
        self.net.eval()
        self._sync()
        start = CLOCK()
        self._forward()
        self._sync()
        return CLOCK() - start

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def peak_memory(which: str, name: str, batch: int, device: str, mode: str) -> float:
    """MiB of peak memory of two training steps, measured in a fresh subprocess."""
    out = subprocess.run([sys.executable, __file__, "--_memory", which, name, str(batch), device, mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def _status_kib(field: str) -> int:
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1])


def _memory_child(which: str, name: str, batch: int, device: str, mode: str) -> None:
    cfg = load_config(name)
    import diffusers  # noqa: F401  -- imported before the baseline so that neither model is charged for it
    import hydra.utils  # noqa: F401

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
        base = _status_kib("VmRSS")
    bench = Bench(which, cfg, batch, device, mode)
    for _ in range(2):
        bench.train_step()
    if device == "cuda":
        mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        mib = (_status_kib("VmHWM") - base) / 1024
    print(json.dumps({"mib": mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="one batch, or one per config")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=None,
                        help="fp32 bf16 (CPU default); on a GPU also bf16+cl bf16+cl+compile. Tokens joined by '+': "
                             "cl (channels_last), compile (the whole net), blocks (each residual block compiled)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time, meaningful with --threads 1 on a machine shared with others")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                        help="limit PyTorch's CPU kernels to this instruction set (reruns the script with "
                             "ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA set): a stand-in for CPUs without AVX-512/AMX")
    parser.add_argument("--_memory", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isa and any(os.environ.get(k) != v for k, v in ISA_ENV[args.isa].items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ISA_ENV[args.isa]})
    if args._memory:
        which, name, batch, device, mode = args._memory
        return _memory_child(which, name, int(batch), device, mode)

    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK = time.process_time
    device = "cuda" if torch.cuda.is_available() else "cpu"
    modes = args.modes or (["fp32", "bf16", "bf16+cl", "bf16+cl+compile"] if device == "cuda" else ["fp32", "bf16"])
    batches = args.batch or [64 if device == "cpu" else 128]
    batches = batches * len(args.configs) if len(batches) == 1 else batches
    cpu = describe_machine()
    print(f"# torch {torch.__version__}, {device}: "
          f"{torch.cuda.get_device_name() if device == 'cuda' else cpu}, {torch.get_num_threads()} threads, {args.clock} clock")
    header = ("| config | mode | batch | params ours / theirs | train s/step ours | theirs | ratio | train img/s ours "
              "| fwd img/s ours | theirs | fwd ratio | peak MiB ours | theirs | ratio |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    verdicts = []
    for name, batch in zip(args.configs, batches):
        cfg = load_config(name)
        for mode in modes:
            ours, theirs = Bench("ours", cfg, batch, device, mode), Bench("theirs", cfg, batch, device, mode)
            n_ours = sum(p.numel() for p in ours.net.parameters())
            n_theirs = sum(p.numel() for p in theirs.net.parameters())
            first = {"ours": ours.train_step(), "theirs": theirs.train_step()}  # with compilation, if any
            if "compile" in mode or "blocks" in mode:
                print(f"# {name} {mode}: first training step (compiles) ours {first['ours']:.1f} s, "
                      f"theirs {first['theirs']:.1f} s", flush=True)
            for _ in range(args.warmup):
                ours.train_step(), theirs.train_step(), ours.forward_step(), theirs.forward_step()
            train, fwd = {"ours": [], "theirs": []}, {"ours": [], "theirs": []}
            for _ in range(args.reps):  # interleaved: ours, theirs, ours, theirs, ...
                for key, bench in (("ours", ours), ("theirs", theirs)):
                    train[key].append(bench.train_step())
                for key, bench in (("ours", ours), ("theirs", theirs)):
                    fwd[key].append(bench.forward_step())
            del ours, theirs
            t_o, t_t = statistics.median(train["ours"]), statistics.median(train["theirs"])
            f_o, f_t = statistics.median(fwd["ours"]), statistics.median(fwd["theirs"])
            if args.no_memory:
                mem = "- | - | -"
            else:
                m_o, m_t = (peak_memory(w, name, batch, device, mode) for w in ("ours", "theirs"))
                mem = f"{m_o:.0f} | {m_t:.0f} | {m_o / m_t:.2f}"
            print(f"| {name} | {mode} | {batch} | {n_ours / 1e6:.3f}M / {n_theirs / 1e6:.3f}M | {t_o:.3f} | {t_t:.3f} "
                  f"| {t_o / t_t:.2f} | {batch / t_o:.0f} | {batch / f_o:.0f} | {batch / f_t:.0f} | {f_o / f_t:.2f} "
                  f"| {mem} |", flush=True)
            if mode in TARGETS:
                verdicts.append(f"{name} {mode}: training step ours/theirs {t_o / t_t:.2f}, target <= {TARGETS[mode]:.2f}: "
                                f"{'met' if t_o / t_t <= TARGETS[mode] else 'NOT met'}")
    print("\n" + "\n".join(f"- {v}" for v in verdicts))


if __name__ == "__main__":
    main()
