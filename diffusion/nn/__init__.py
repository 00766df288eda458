"""Networks: the U-Net backbone and its building blocks."""
from __future__ import annotations

from diffusion.nn.attention import AttentionBlock
from diffusion.nn.embeddings import FourierEmbedding, SinusoidalEmbedding
from diffusion.nn.unet import ResBlock, UNet

__all__ = ["UNet", "ResBlock", "AttentionBlock", "SinusoidalEmbedding", "FourierEmbedding"]
