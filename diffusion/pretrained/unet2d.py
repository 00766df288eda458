r"""diffusers' ``UNet2DModel`` <-> ``diffusion.nn.UNet``: the config fields and the weight names.

Both are the DDPM U-Net (Ho et al. 2020, appendix B): per level ``layers_per_block`` residual blocks (each followed
by attention where the level has it) and a downsampler; a middle ResBlock-attention-ResBlock; per level
``layers_per_block + 1`` residual blocks on the concatenated skip and an upsampler. The same function of the same
parameters, so a ``UNet2DModel`` config maps onto UNet's options field by field:

    block_out_channels  = base_channels * channel_mults     layers_per_block   = num_res_blocks
    AttnDownBlock2D at level l  <=> sample_size / 2^l in attention_resolutions (and AttnUpBlock2D mirrored)
    attention_head_dim  = head_channels (None: one head)     norm_num_groups, norm_eps = norm_groups, norm_eps
    flip_sin_to_cos     = embedding_cos_first                 freq_shift          = embedding_freq_shift
    resnet_time_scale_shift "scale_shift" = scale_shift      downsample_padding 1 / 0 = symmetric / bottom_right
    Resnet(Down|Up)sampleBlock2D or (down|up)sample_type "resnet" = resblock_updown

Anything else (class embeddings, Fourier time embeddings, a mid-block scale factor, skip blocks...) has no
counterpart here and is refused in one line that names the field. The attention's separate q, k, v projections
are our fused ``qkv`` (rows q, then k, then v; heads within each, as diffusers splits them).
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusion.errors import CheckpointError
from diffusion.nn.unet import GN_EPS, UNet

#: UNet2DModel's defaults (diffusers 0.42), which a config.json that omits a field gets from diffusers itself
UNET2D_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")
#: what each field must be when UNet has no option for it
_FIXED = {"center_input_sample": False, "time_embedding_type": "positional", "time_embedding_dim": None,
          "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1, "act_fn": "silu", "add_attention": True,
          "class_embed_type": None, "num_class_embeds": None}


def _refuse(source: str, field: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{source}: {field}={value!r} is not supported ({why}); diffusion.nn.UNet cannot load this "
                           "network")


def unet_options(config: Mapping[str, Any], source: str = "unet/config.json") -> dict[str, Any]:
    """The ``diffusion.nn.UNet`` keyword arguments of a ``UNet2DModel`` config (a dict read from its JSON);
    ``CheckpointError`` naming the first field UNet cannot express."""
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise _refuse(source, "_class_name", config.get("_class_name"), "only UNet2DModel maps onto UNet")
    unknown = sorted(k for k in config if not k.startswith("_") and k not in UNET2D_DEFAULTS)
    if unknown:
        raise _refuse(source, unknown[0], config[unknown[0]], "a field this importer does not know")
    c = {**UNET2D_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for field, value in _FIXED.items():
        if c[field] != value and not (field == "mid_block_scale_factor" and float(c[field]) == 1.0):
            raise _refuse(source, field, c[field], f"UNet has only {field}={value!r}")
    widths, down, up = list(c["block_out_channels"]), list(c["down_block_types"]), list(c["up_block_types"])
    levels = len(widths)
    if not widths or len(down) != levels or len(up) != levels:
        raise _refuse(source, "down_block_types", down, "needs one down and one up block per block_out_channels entry")
    base = int(widths[0])
    if any(int(w) % base for w in widths):
        raise _refuse(source, "block_out_channels", widths, "every width must be a multiple of the first")
    for field, types, allowed in (("down_block_types", down, DOWN_BLOCKS), ("up_block_types", up, UP_BLOCKS)):
        bad = [t for t in types if t not in allowed]
        if bad:
            raise _refuse(source, field, bad[0], f"UNet's levels are {', '.join(allowed)}")
    down_attn = [t == "AttnDownBlock2D" for t in down]
    up_attn = [t == "AttnUpBlock2D" for t in reversed(up)]
    if down_attn != up_attn:
        raise _refuse(source, "up_block_types", up, "attention must sit at the same levels going down and up")
    # each level's resampler: conv, or a residual block (BigGAN); the last level of each path has none
    down_res = [t == "ResnetDownsampleBlock2D" or (t == "AttnDownBlock2D" and c["downsample_type"] == "resnet")
                for t in down[:-1]]
    up_res = [t == "ResnetUpsampleBlock2D" or (t == "AttnUpBlock2D" and c["upsample_type"] == "resnet")
              for t in up[:-1]]
    for field in ("downsample_type", "upsample_type"):
        if c[field] not in ("conv", "resnet"):
            raise _refuse(source, field, c[field], "UNet resamples with a convolution or a residual block")
    if levels > 1 and (len(set(down_res + up_res)) > 1):
        raise _refuse(source, "downsample_type", c["downsample_type"],
                      "UNet resamples with residual blocks at every level or at none, down and up alike")
    resblock_updown = bool(down_res and down_res[0])
    if c["downsample_padding"] not in (0, 1):
        raise _refuse(source, "downsample_padding", c["downsample_padding"], "UNet pads by 1 (1) or TensorFlow-style (0)")
    if c["resnet_time_scale_shift"] not in ("default", "scale_shift"):
        raise _refuse(source, "resnet_time_scale_shift", c["resnet_time_scale_shift"], "UNet has default or scale_shift")
    scale_shift = c["resnet_time_scale_shift"] == "scale_shift"
    attn_groups = c["attn_norm_num_groups"]
    if (attn_groups is None and scale_shift) or (attn_groups is not None and attn_groups != c["norm_num_groups"]):
        # diffusers' middle attention normalizes with attn_norm_num_groups, or with none at all under scale_shift
        raise _refuse(source, "attn_norm_num_groups", attn_groups,
                      f"UNet's middle attention has a GroupNorm of norm_num_groups={c['norm_num_groups']} groups")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise _refuse(source, "sample_size", size, "UNet is built for square images")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise _refuse(source, "sample_size", size, "the image side is needed to place attention and shape samples")
    if size % 2 ** (levels - 1):
        raise _refuse(source, "sample_size", size, f"{levels} levels need a side divisible by {2 ** (levels - 1)}")
    if any(int(w) % int(c["norm_num_groups"]) for w in widths):
        raise _refuse(source, "norm_num_groups", c["norm_num_groups"], f"it must divide every width {widths}")
    head_dim = c["attention_head_dim"]
    attention_widths = {int(w) for w, a in zip(widths, down_attn) if a} | {int(widths[-1])}  # the middle has one
    if head_dim is not None and (int(head_dim) < 1 or any(w % int(head_dim) for w in attention_widths)):
        raise _refuse(source, "attention_head_dim", head_dim, f"it must divide the attention widths {sorted(attention_widths)}")
    return {
        "in_channels": int(c["in_channels"]), "out_channels": int(c["out_channels"]), "image_size": size,
        "base_channels": base, "channel_mults": [int(w) // base for w in widths],
        "num_res_blocks": int(c["layers_per_block"]),
        "attention_resolutions": [size // 2**level for level in range(levels) if down_attn[level]],
        "num_heads": 1, "head_channels": None if head_dim is None else int(head_dim),
        "dropout": float(c["dropout"]), "embedding": "sinusoidal", "num_classes": None,
        "resblock_updown": resblock_updown, "scale_shift": scale_shift, "checkpointing": False,
        "norm_groups": int(c["norm_num_groups"]), "norm_eps": float(c["norm_eps"]),
        "embedding_cos_first": bool(c["flip_sin_to_cos"]), "embedding_freq_shift": float(c["freq_shift"]),
        "downsample_padding": "symmetric" if c["downsample_padding"] == 1 else "bottom_right",
    }


def unet_defaults() -> dict[str, Any]:
    """``diffusion.nn.UNet``'s constructor defaults."""
    return {name: p.default for name, p in inspect.signature(UNet.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def unet2d_config(options: Mapping[str, Any], sample_size: int | None = None) -> dict[str, Any]:
    """The ``UNet2DModel`` config of a ``diffusion.nn.UNet`` built with ``options`` (its config's keywords; the
    rest take UNet's defaults); ``CheckpointError`` naming the option diffusers cannot express. ``sample_size``:
    the side of the images it generates (default its ``image_size``; a UNet runs at any side its levels divide,
    and diffusers places attention by level, so the side only shapes the pipeline's samples)."""
    o = {**unet_defaults(), **options}
    source = "this network"
    if o["embedding"] != "sinusoidal":
        raise _refuse(source, "embedding", o["embedding"], "UNet2DModel's positional embedding is the sinusoid")
    if o["num_classes"] is not None:
        raise _refuse(source, "num_classes", o["num_classes"],
                      "diffusers' DDPM pipelines are unconditional and have no null class")
    levels, base, size = len(o["channel_mults"]), int(o["base_channels"]), int(o["image_size"])
    widths = [base * int(m) for m in o["channel_mults"]]
    attn = [size // 2**level in set(o["attention_resolutions"]) for level in range(levels)]
    # diffusers sets the head width once for every attention; UNet's num_heads sets the head count
    if o["head_channels"] is not None:
        head_dim = int(o["head_channels"])
    else:
        attn_widths = {w for w, a in zip(widths, attn) if a} | {widths[-1]}
        per_head = {w // int(o["num_heads"]) for w in attn_widths}
        if len(per_head) > 1:
            raise _refuse(source, "num_heads", o["num_heads"], f"its attention widths {sorted(attn_widths)} give "
                          "heads of different widths; UNet2DModel has one attention_head_dim")
        head_dim = None if int(o["num_heads"]) == 1 else per_head.pop()
    updown = bool(o["resblock_updown"])
    down = [("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" if updown else "DownBlock2D") for a in attn]
    up = [("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" if updown else "UpBlock2D") for a in reversed(attn)]
    return {
        "_class_name": "UNet2DModel", "sample_size": int(sample_size or size), "in_channels": int(o["in_channels"]),
        "out_channels": int(o["out_channels"] or o["in_channels"]), "center_input_sample": False,
        "time_embedding_type": "positional", "freq_shift": float(o["embedding_freq_shift"]),
        "flip_sin_to_cos": bool(o["embedding_cos_first"]), "down_block_types": down,
        "mid_block_type": "UNetMidBlock2D", "up_block_types": up, "block_out_channels": widths,
        "layers_per_block": int(o["num_res_blocks"]), "mid_block_scale_factor": 1,
        "downsample_padding": 1 if o["downsample_padding"] == "symmetric" else 0,
        "downsample_type": "resnet" if updown else "conv", "upsample_type": "resnet" if updown else "conv",
        "dropout": float(o["dropout"]), "act_fn": "silu", "attention_head_dim": head_dim,
        "norm_num_groups": int(o["norm_groups"]), "attn_norm_num_groups": int(o["norm_groups"]),
        "norm_eps": float(o.get("norm_eps", GN_EPS)),
        "resnet_time_scale_shift": "scale_shift" if o["scale_shift"] else "default", "add_attention": True,
        "class_embed_type": None, "num_class_embeds": None,
    }


# ---- weight names --------------------------------------------------------------------------------------------
_RES = (("norm1", "norm1"), ("conv1", "conv1"), ("emb_proj", "time_emb_proj"), ("norm2", "norm2"),
        ("conv2", "conv2"), ("skip", "conv_shortcut"))
_ATTN = (("norm", "group_norm"), ("proj", "to_out.0"))
_QKV = ("to_q", "to_k", "to_v")
#: the attention names of diffusers' checkpoints before 0.14 (the official DDPM weights), which it renames on load
_LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _pairs(net: UNet) -> Iterator[tuple[str, str, str]]:
    """(our module prefix, diffusers' module prefix, kind) for every module with weights, kind in res | attn |
    conv | linear | norm."""
    yield "conv_in", "conv_in", "conv"
    yield "emb_mlp.0", "time_embedding.linear_1", "linear"
    yield "emb_mlp.2", "time_embedding.linear_2", "linear"
    num_res_blocks = (len(net.encoder) + 1) // net.levels - 1
    yield from _path(net.encoder, "encoder", "down_blocks", "downsamplers", num_res_blocks, net.levels)
    yield "middle.0.res", "mid_block.resnets.0", "res"
    yield "middle.0.attn", "mid_block.attentions.0", "attn"
    yield "middle.1", "mid_block.resnets.1", "res"
    yield from _path(net.decoder, "decoder", "up_blocks", "upsamplers", num_res_blocks + 1, net.levels)
    yield "norm_out", "conv_norm_out", "norm"
    yield "conv_out", "conv_out", "conv"


def _path(blocks, ours: str, theirs: str, resamplers: str, per_level: int, levels: int
          ) -> Iterator[tuple[str, str, str]]:
    """The encoder (or decoder): per level ``per_level`` stages (residual block, attention) and a resampler
    (a convolution, or a residual block) below the last level; diffusers groups the same modules by level."""
    i = 0
    for level in range(levels):
        for j in range(per_level):
            yield f"{ours}.{i}.res", f"{theirs}.{level}.resnets.{j}", "res"
            if blocks[i].attn is not None:
                yield f"{ours}.{i}.attn", f"{theirs}.{level}.attentions.{j}", "attn"
            i += 1
        if level < levels - 1:
            resampler = f"{theirs}.{level}.{resamplers}.0"
            conv = hasattr(blocks[i], "conv")
            yield (f"{ours}.{i}.conv", f"{resampler}.conv", "conv") if conv else (f"{ours}.{i}", resampler, "res")
            i += 1


def _param_pairs(net: UNet) -> Iterator[tuple[str, str | tuple[str, ...]]]:
    """(our parameter name, diffusers' parameter name, or the three q, k, v names our fused qkv stacks)."""
    ours = dict(net.named_parameters())
    for our, their, kind in _pairs(net):
        subs = _RES if kind == "res" else _ATTN if kind == "attn" else (("", ""),)
        for o, t in subs:
            for p in ("weight", "bias"):
                name = ".".join(s for s in (our, o, p) if s)
                if name in ours:
                    yield name, ".".join(s for s in (their, t, p) if s)
        if kind == "attn":
            for p in ("weight", "bias"):
                yield f"{our}.qkv.{p}", tuple(f"{their}.{q}.{p}" for q in _QKV)


def _get(state: Mapping[str, Tensor], name: str, source: str) -> tuple[str, Tensor]:
    """(the key found, its tensor): ``name``, or its pre-0.14 attention name."""
    for key in (name, _legacy_of(name)):
        if key in state:
            return key, state[key]
    raise CheckpointError(f"{source}: no weight {name}: the weights do not belong to the network of its config.json")


def _legacy_of(name: str) -> str:
    for new, old in _LEGACY.items():
        name = name.replace(f".{new}.", f".{old}.")
    return name


def state_dict_from_diffusers(net: UNet, state: Mapping[str, Tensor], source: str = "unet weights") -> dict[str, Tensor]:
    """Our ``net.state_dict()`` from a ``UNet2DModel`` state dict of the config ``net`` was built from; every
    tensor is used and has the shape its place asks for, else ``CheckpointError``."""
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ours, theirs in _param_pairs(net):
        names = theirs if isinstance(theirs, tuple) else (theirs,)
        found = [_get(state, n, source) for n in names]
        used.update(key for key, _ in found)
        parts = [tensor for _, tensor in found]
        tensor = torch.cat([p.reshape(p.shape[0], -1) if p.ndim > 1 else p for p in parts]) if len(parts) > 1 else parts[0]
        if tensor.numel() != shapes[ours].numel():
            raise CheckpointError(f"{source}: {names[0]} has shape {tuple(parts[0].shape)}, not the one its config.json "
                                  f"implies: the weights do not belong to this config")
        out[ours] = tensor.reshape(shapes[ours]).to(torch.float32)
    left = sorted(set(state) - used)
    if left:
        raise CheckpointError(f"{source}: {len(left)} weights have no place in the network of its config.json "
                              f"(first: {left[0]}): the weights do not belong to this config")
    missing = sorted(set(shapes) - set(out))
    if missing:  # a bug in the pairing above, not the user's file
        raise AssertionError(f"unmapped UNet parameters: {missing[:3]}")
    return out


def state_dict_to_diffusers(net: UNet) -> dict[str, Tensor]:
    """``net``'s weights under ``UNet2DModel``'s names (contiguous float32 copies, ready for safetensors)."""
    ours = net.state_dict()
    out: dict[str, Tensor] = {}
    for name, theirs in _param_pairs(net):
        tensor = ours[name].detach().to("cpu", torch.float32)
        if isinstance(theirs, tuple):
            for n, part in zip(theirs, tensor.chunk(3, dim=0)):
                out[n] = part.contiguous().clone()
        else:
            out[theirs] = tensor.contiguous().clone()
    return out


__all__ = ["UNET2D_DEFAULTS", "unet_options", "unet2d_config", "unet_defaults", "state_dict_from_diffusers",
           "state_dict_to_diffusers"]
