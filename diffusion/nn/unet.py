r"""The U-Net of DDPM (Ho et al. 2020, appendix B) with the options of Improved DDPM / ADM
(Nichol & Dhariwal 2021; Dhariwal & Nichol 2021).

    x --conv--> [ResBlock x num_res_blocks (+ attention) , Downsample] per level --> middle
      (ResBlock, attention, ResBlock) --> [ResBlock x (num_res_blocks + 1) on concat(h, skip)
      (+ attention), Upsample] per level --> GroupNorm, SiLU, conv --> output

Every residual block is conditioned on emb = MLP(embed(noise_label)) [+ class embedding]:

    additive (DDPM):      h = conv2(drop(SiLU(GN(conv1(SiLU(GN(x))) + W emb))))
    scale-shift (FiLM):   h = conv2(drop(SiLU(GN(conv1(SiLU(GN(x)))) (1 + s) + b))),  (s, b) = W emb
    out = skip(x) + h

Options: channel multipliers per level, residual blocks per level, multi-head attention at chosen
resolutions, dropout, scale-shift conditioning, BigGAN-style residual up/down-sampling blocks, class
conditioning with a null class K for classifier-free guidance, activation checkpointing.

As in DDPM, the last layer of every residual branch (conv2, the attention projection) and the output
convolution start at zero, so the untrained network is a stack of identities that outputs 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from diffusion.buildable import buildable
from diffusion.nn.attention import AttentionBlock
from diffusion.nn.embeddings import noise_embedding

GN_EPS = 1e-6  # DDPM's TensorFlow group_norm epsilon


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _resample(x: Tensor, direction: str | None) -> Tensor:
    if direction == "down":
        return F.avg_pool2d(x, 2)
    if direction == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (the residual blocks' channel-changing skip) computed as one batched matrix product per
    image, W (out, in) @ x (in, H W) + b: the parameters of ``nn.Conv2d(in_ch, out_ch, 1)``, as checkpoints hold
    them. oneDNN's 1x1 convolutions run these shapes slowly; on CPU in fp32 the product takes the forward and
    backward of ``unet_mnist``'s skips 1.3-3x faster. Inputs not contiguous in NCHW (channels_last) keep the
    convolution."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_contiguous():
            return super().forward(x)
        n, c, h, w = x.shape
        weight = self.weight.view(self.out_channels, c).expand(n, -1, -1)
        out = torch.baddbmm(self.bias.view(1, -1, 1), weight, x.view(n, c, h * w))
        return out.view(n, self.out_channels, h, w)  # named: an empty batch leaves -1 undetermined


class ResBlock(nn.Module):
    """Residual block conditioned on the (already SiLU-activated) embedding; optionally resamples (BigGAN)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float = 0.0, scale_shift: bool = False,
                 resample: str | None = None, norm_groups: int = 32, norm_eps: float = GN_EPS):
        super().__init__()
        self.scale_shift, self.resample = scale_shift, resample
        self.norm1 = nn.GroupNorm(norm_groups, in_ch, eps=norm_eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(norm_groups, out_ch, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = PointwiseConv(in_ch, out_ch) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.norm1(x))
        # BigGAN up/down: resample after the first activation, the skip path alongside
        h, x = _resample(h, self.resample), _resample(x, self.resample)
        h = self.conv1(h)
        film = rearrange(self.emb_proj(emb), "b c -> b c 1 1")
        if self.scale_shift:
            scale, shift = film.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # GN(h)(1 + s) + b in one pass over h
        else:
            h = self.norm2(h + film)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


DOWNSAMPLE_PADDINGS = ("symmetric", "bottom_right")


class Downsample(nn.Module):
    """Strided 3x3 convolution (DDPM's resamp_with_conv). ``padding``: one zero row/column on every side
    (``symmetric``), or only after the last row and column (``bottom_right``: TensorFlow's "SAME" for even sides,
    as in DDPM's own code and its diffusers port, ``downsample_padding=0``)."""

    def __init__(self, channels: int, padding: str = "symmetric"):
        super().__init__()
        if padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"downsample padding {padding!r}: choose one of {', '.join(DOWNSAMPLE_PADDINGS)}")
        self.bottom_right = padding == "bottom_right"
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if self.bottom_right else 1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.bottom_right else x)


class Upsample(nn.Module):
    r"""Nearest-neighbour x2 followed by a 3x3 convolution (DDPM's upsample with conv), computed as one stride-2
    transposed convolution of x: the same function of the same parameters, without the 4x-size upsampled copy.

    Output pixel 2i + a of conv3x3(up2(x)) (per axis, padding 1) sees x[i-1], x[i], x[i] for a = 0 and x[i], x[i],
    x[i+1] for a = 1, i.e. the two taps (w0, w1 + w2) and (w0 + w1, w2) of the kernel row (w0, w1, w2). A transposed
    convolution of stride 2, padding 1 with the 4-tap kernel (w2, w1 + w2, w0 + w1, w0) applies exactly these: 16
    instead of 36 multiply-adds per output pixel and channel pair. (The sub-pixel identity: Shi et al. 2016, "Is the
    deconvolution layer the same as a convolutional layer?".) On CPU in fp32 it runs the two upsampling convolutions
    of ``unet_mnist`` 33-40% faster, forward and backward; ``self.conv`` keeps the 3x3 weights, as checkpoints hold
    them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        # rows: the 4 transposed-convolution taps; columns: the 3x3 kernel's w0, w1, w2 (per axis)
        self.register_buffer("taps", torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
                             persistent=False)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        w = self.conv.weight
        taps = self.taps.to(w.dtype)
        kernel = torch.einsum("pa,oiab,qb->iopq", taps, w, taps)  # (in, out, 4, 4): conv_transpose2d's layout
        return F.conv_transpose2d(x, kernel, self.conv.bias, stride=2, padding=1)


class Stage(nn.Module):
    """One U-Net step: a residual block, then self-attention if this resolution has it.

    ``takes_skip`` marks decoder steps that first concatenate the matching encoder activation.
    """

    def __init__(self, res: nn.Module, attn: nn.Module | None = None, takes_skip: bool = False):
        super().__init__()
        self.res, self.attn, self.takes_skip = res, attn, takes_skip

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


@buildable
class UNet(nn.Module):
    """``net(x, t, class_labels=None) -> output`` with the shape of x (eps, x0, v or score).

    Args:
        in_channels: image channels (3 for CIFAR-10, 1 for MNIST); ``out_channels`` defaults to it.
        image_size: the side the network is built for; ``attention_resolutions`` refer to it. Any input
            whose sides divide by 2^(levels-1) runs.
        base_channels: channels of the first level; level i has base_channels * channel_mults[i].
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_resolutions: feature-map sides (e.g. 16) where attention follows each residual block.
        num_heads: attention heads (DDPM: 1).
        embedding: "sinusoidal" for step indices / 999 t, "fourier" for log sigma (VE).
        num_classes: K for class conditioning; labels in [0, K], K being the null (unconditional) class.
        resblock_updown: BigGAN-style residual blocks for up/down-sampling instead of (strided) convs.
        scale_shift: FiLM conditioning GN(h)(1 + s) + b instead of DDPM's additive bias.
        checkpointing: recompute activations in backward (less memory, ~30% more time).
        norm_groups, norm_eps: GroupNorm's groups and epsilon (DDPM: 32, 1e-6).
        head_channels: channels per attention head at every attention (ADM's num_head_channels, diffusers'
            attention_head_dim); overrides ``num_heads``.
        embedding_cos_first, embedding_freq_shift: the sinusoid's layout (``SinusoidalEmbedding``): DDPM's own
            network has [sin, cos] and frequency shift 1, ADM's [cos, sin] and 0 (the default).
        downsample_padding: ``symmetric`` or ``bottom_right`` (DDPM's TensorFlow padding) for the strided convs.

    The last five options' defaults build the network of every earlier release (checkpoints load unchanged); their
    other values exist so that published DDPM-family networks (diffusers' UNet2DModel, ``diffusion.pretrained``)
    load exactly.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, base_channels: int = 128,
                 channel_mults: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), num_heads: int = 1, dropout: float = 0.0,
                 embedding: str = "sinusoidal", num_classes: int | None = None, resblock_updown: bool = False,
                 scale_shift: bool = False, checkpointing: bool = False, out_channels: int | None = None,
                 norm_groups: int = 32, norm_eps: float = GN_EPS, head_channels: int | None = None,
                 embedding_cos_first: bool = True, embedding_freq_shift: float = 0.0,
                 downsample_padding: str = "symmetric"):
        super().__init__()
        levels = len(channel_mults)
        self.in_channels, self.image_size, self.levels = in_channels, image_size, levels
        self.num_classes = num_classes
        self.checkpointing = checkpointing
        widths = [base_channels * m for m in channel_mults]
        resolutions = [image_size // 2**i for i in range(levels)]
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {image_size} must divide by 2^(levels-1) = {2 ** (levels - 1)} "
                             f"for {levels} levels; use fewer channel_mults or another size")
        if any(w % norm_groups for w in widths):
            raise ValueError(f"every level width {widths} must divide by norm_groups={norm_groups}")
        if unknown := sorted(set(attention_resolutions) - set(resolutions)):
            raise ValueError(f"attention_resolutions {unknown} match no level; the levels of a {image_size}px "
                             f"input have sides {resolutions}")

        if embedding != "sinusoidal" and (not embedding_cos_first or embedding_freq_shift):
            raise ValueError("embedding_cos_first/embedding_freq_shift shape the sinusoidal embedding only; "
                             f"leave them at their defaults with embedding={embedding!r}")

        emb_ch = 4 * base_channels
        self.noise_embed = noise_embedding(embedding, base_channels, embedding_cos_first, embedding_freq_shift)
        self.emb_mlp = nn.Sequential(nn.Linear(base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.class_embed = nn.Embedding(num_classes + 1, emb_ch) if num_classes is not None else None

        def res(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(cin, cout, emb_ch, dropout, scale_shift, resample, norm_groups, norm_eps)

        def attention(ch: int) -> AttentionBlock:
            if head_channels is not None and (head_channels < 1 or ch % head_channels):
                raise ValueError(f"head_channels={head_channels} must divide the attention width {ch}")
            heads = ch // head_channels if head_channels is not None else num_heads
            return AttentionBlock(ch, heads, norm_groups, norm_eps)

        def attn(ch: int, resolution: int) -> AttentionBlock | None:
            return attention(ch) if resolution in attention_resolutions else None

        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        encoder: list[nn.Module] = []
        skip_widths, ch = [widths[0]], widths[0]
        for level, (width, resolution) in enumerate(zip(widths, resolutions)):
            for _ in range(num_res_blocks):
                encoder.append(Stage(res(ch, width), attn(width, resolution)))
                ch = width
                skip_widths.append(ch)
            if level < levels - 1:
                encoder.append(res(ch, ch, "down") if resblock_updown else Downsample(ch, downsample_padding))
                skip_widths.append(ch)
        self.encoder = nn.ModuleList(encoder)

        self.middle = nn.ModuleList([Stage(res(ch, ch), attention(ch)), res(ch, ch)])

        decoder: list[nn.Module] = []
        for level in reversed(range(levels)):
            width, resolution = widths[level], resolutions[level]
            for _ in range(num_res_blocks + 1):
                decoder.append(Stage(res(ch + skip_widths.pop(), width), attn(width, resolution), takes_skip=True))
                ch = width
            if level > 0:
                decoder.append(res(ch, ch, "up") if resblock_updown else Upsample(ch))
        self.decoder = nn.ModuleList(decoder)

        self.norm_out = nn.GroupNorm(norm_groups, ch, eps=norm_eps)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))

    @property
    def null_class(self) -> int | None:
        """The label meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        self._check_input(x)
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.emb_mlp(self.noise_embed(t))
        if self.class_embed is not None:
            emb = emb + self.class_embed(self._labels(class_labels, x))
        elif class_labels is not None:
            raise ValueError("class_labels given to an unconditional UNet; build it with num_classes=K")
        # every block starts its conditioning with SiLU(emb): do it once here
        emb = F.silu(emb)

        h = self.conv_in(x)
        skips = [h]
        for block in self.encoder:
            h = self._run(block, h, emb)
            skips.append(h)
        for block in self.middle:
            h = self._run(block, h, emb)
        for block in self.decoder:
            if getattr(block, "takes_skip", False):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _run(self, block: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (self.levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must divide by 2^(levels-1) = {factor} "
                             f"for this {self.levels}-level UNet; pad/resize the images or use fewer levels")

    def _labels(self, class_labels: Tensor | None, x: Tensor) -> Tensor:
        if class_labels is None:  # unconditional: every sample gets the null class
            return torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        class_labels = class_labels.reshape(-1).expand(x.shape[0]).long()
        # range check needs the values: skip it while compiling and on accelerators (it would sync)
        if class_labels.device.type == "cpu" and not torch.compiler.is_compiling():
            if bool(((class_labels < 0) | (class_labels > self.num_classes)).any()):
                raise ValueError(f"class labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return class_labels
