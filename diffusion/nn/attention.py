r"""Multi-head self-attention over the pixels of a feature map (Ho et al. 2020; Nichol & Dhariwal 2021).

    h   = GroupNorm(x),   q, k, v = W_qkv h   (per pixel, i.e. a 1x1 convolution)
    out = x + W_o  softmax(q k^T / sqrt(d)) v,   per head of width d = channels / heads.

The softmax product goes through ``scaled_dot_product_attention`` (flash / memory-efficient kernels on
GPU, flash on CPU in float32). One exception, measured (benchmarks/unet_speed.md): on CPU in bf16 the flash
kernel's backward is 3-8x slower than three plain ops for the short sequences and narrow heads of a
diffusion U-Net (49-256 tokens, 16-64 channels per head), so there the product is written out; the CPU
softmax kernel accumulates bf16 in float32. Pixels become tokens with a reshape that is a view for
channels_last inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dims."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        return weights.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class AttentionBlock(nn.Module):
    """Residual self-attention with ``num_heads`` heads; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} are not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(norm_groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        # zero init: the block starts as the identity (DDPM's init_scale=0 on proj_out)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        q, k, v = rearrange(self.qkv(tokens), "b n (three heads d) -> three b heads n d", three=3, heads=self.num_heads)
        attended = rearrange(attention(q, k, v), "b heads n d -> b n (heads d)")
        return x + rearrange(self.proj(attended), "b (h w) c -> b c h w", h=height, w=width)
