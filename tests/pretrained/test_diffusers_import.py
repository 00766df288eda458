"""diffusers DDPM folders read into our U-Net and DDPM process: the same eps as diffusers' UNet2DModel on the same
input and step (float32 round-off), for google/ddpm-cifar10-32's configuration and other DDPM-family layouts; the
scheduler's betas as our process; hostile folders refused in one line."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from diffusion.errors import CheckpointError  # noqa: E402
from diffusion.pretrained import load_diffusers  # noqa: E402
from diffusion.runs import load_run  # noqa: E402

#: google/ddpm-cifar10-32's unet/config.json (Ho et al.'s 35.7M CIFAR-10 network, as diffusers ships it)
CIFAR10 = {
    "act_fn": "silu", "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
#: its scheduler/scheduler_config.json
CIFAR10_SCHEDULER = {"beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": True,
                     "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_large"}
#: the same block layout at a quarter of the width (the default run; the full one is marked slow)
CIFAR10_SMALL = {**CIFAR10, "block_out_channels": [32, 64, 64, 64]}
#: google/ddpm-cat-256's layout (six levels, attention at 16x16 of 256) at toy width and size
CAT_TINY = {**CIFAR10, "block_out_channels": [16, 16, 32, 32, 64, 64], "norm_num_groups": 8, "sample_size": 64,
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4}
#: ADM-like options: [cos, sin] embedding, symmetric padding, several heads, scale-shift conditioning, BigGAN
#: residual resampling, attention at two levels, norm eps 1e-5, one input channel
ADM_TINY = {"block_out_channels": [16, 32, 48], "layers_per_block": 1, "attention_head_dim": 8, "sample_size": 16,
            "down_block_types": ["ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"],
            "downsample_type": "resnet", "upsample_type": "resnet", "resnet_time_scale_shift": "scale_shift",
            "attn_norm_num_groups": 8, "norm_num_groups": 8, "in_channels": 1, "out_channels": 1}


def diffusers_folder(folder: Path, unet_config: dict, scheduler: dict | None = None, seed: int = 0,
                     safe_serialization: bool = True) -> UNet2DModel:
    """A UNet2DModel with random weights (every parameter perturbed, so no zero-initialised layer hides a mistake),
    saved with a DDPMScheduler in diffusers' layout."""
    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**(scheduler or CIFAR10_SCHEDULER)))
    pipe.save_pretrained(folder, safe_serialization=safe_serialization)
    return unet


def assert_same_eps(unet: UNet2DModel, model, steps=(0, 1, 137, 500, 999), batch: int = 2, seed: int = 1):
    """eps of our model at step t equals diffusers' at timestep t to float32 round-off, on several inputs (relative
    1e-5 of the output's scale: the 35.7M network reaches 3e-6; a wrong option gives 1e-2 and more)."""
    cfg = unet.config
    g = torch.Generator().manual_seed(seed)
    for t in steps:
        x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
        with torch.no_grad():
            theirs = unet(x, torch.full((batch,), t, dtype=torch.long)).sample
            ours = model(x, torch.full((batch,), float(t)))
        scale = theirs.abs().max().item()
        assert scale > 0.1  # a real output, not a network of zeros
        assert (ours - theirs).abs().max().item() <= 1e-5 * scale, (t, (ours - theirs).abs().max().item())


def test_cifar10_layout_gives_diffusers_eps(tmp_path):
    unet = diffusers_folder(tmp_path, CIFAR10_SMALL)
    run = load_run(tmp_path)
    assert_same_eps(unet, run.model)
    assert run.shape() == ((3, 32, 32), None)
    net = run.model.net
    assert net.noise_embed.cos_first is False and net.encoder[2].bottom_right  # DDPM's sin-first, TF padding
    assert run.model.prediction == "eps" and run.process.num_steps == 1000 and run.cfg.process.schedule == "linear"
    # each DDPM-specific option matters far beyond the tolerance: the test could fail
    from diffusion.nn import UNet

    x, t = torch.randn(2, 3, 32, 32), torch.full((2,), 10.0)
    with torch.no_grad():
        want = unet(x, t.long()).sample
        for option, value in (("embedding_cos_first", True), ("embedding_freq_shift", 0.0),
                              ("downsample_padding", "symmetric")):
            kwargs = {k: v for k, v in run.cfg.model.items() if k != "_target_"}
            wrong = UNet(**{**kwargs, option: value}).eval()
            wrong.load_state_dict(net.state_dict())
            assert (wrong(x, t) - want).abs().max().item() > 1e-3 * want.abs().max().item(), option


@pytest.mark.slow
def test_cifar10_full_size_gives_diffusers_eps(tmp_path):
    unet = diffusers_folder(tmp_path, CIFAR10)
    model, _, cfg, _ = load_diffusers(tmp_path)
    assert sum(p.numel() for p in model.net.parameters()) == sum(p.numel() for p in unet.parameters())
    assert 35.5e6 < sum(p.numel() for p in unet.parameters()) < 35.9e6  # Ho et al.'s 35.7M
    assert_same_eps(unet, model, steps=(0, 250, 999))


def test_unet_cifar10_config_is_the_official_layout(tmp_path):
    """configs/model/unet_cifar10.yaml has the official network's parameter count and block layout: the imported
    network differs from it only in the three options DDPM's own code fixes (sin-first, shift 1, TF padding)."""
    from diffusion.pretrained import unet_options
    from omegaconf import OmegaConf

    ours = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "configs/model/unet_cifar10.yaml"))
    imported = unet_options(CIFAR10)
    differ = {k for k in imported if k in ours and imported[k] != ours[k]}
    assert differ == {"dropout"}, differ  # the file trains with 0.1; inference needs none
    assert {k for k in imported if k not in ours} >= {"embedding_cos_first", "embedding_freq_shift", "downsample_padding"}


@pytest.mark.parametrize("layout", [CAT_TINY, ADM_TINY], ids=["cat256_layout", "adm_options"])
def test_other_ddpm_family_layouts_give_diffusers_eps(tmp_path, layout):
    unet = diffusers_folder(tmp_path, layout)
    model, _, _, _ = load_diffusers(tmp_path)
    assert_same_eps(unet, model, steps=(0, 400, 999))


def test_legacy_bin_weights_load(tmp_path):
    """Pre-0.14 checkpoints (the official DDPM .bin files) name attention query/key/value/proj_attn."""
    unet = diffusers_folder(tmp_path, CAT_TINY, safe_serialization=False)
    path = tmp_path / "unet" / "diffusion_pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    legacy = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
              .replace(".to_out.0.", ".proj_attn."): v for k, v in state.items()}
    assert legacy != state
    torch.save(legacy, path)
    model, _, cfg, _ = load_diffusers(tmp_path)
    assert cfg.pretrained.weights.endswith(".bin")
    assert_same_eps(unet, model, steps=(3, 800))


@pytest.mark.parametrize("scheduler", [
    {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000, "prediction_type": "v_prediction"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
     "prediction_type": "sample"},
    {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 500},
    {"beta_schedule": "sigmoid", "num_train_timesteps": 200},
], ids=["cosine_v", "scaled_linear_x0", "linear_500", "sigmoid"])
def test_scheduler_maps_onto_our_ddpm(tmp_path, scheduler):
    """Our process's abar_t equals the scheduler's alphas_cumprod, and our eps model turns the network's
    prediction into the eps diffusers' scheduler implies from it."""
    unet = diffusers_folder(tmp_path, ADM_TINY, scheduler)
    model, process, cfg, _ = load_diffusers(tmp_path)
    theirs = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    torch.testing.assert_close(process.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=2e-6, atol=1e-7)
    expected_schedule = {"squaredcos_cap_v2": "cosine"}.get(scheduler["beta_schedule"], "linear")
    assert cfg.process.schedule == expected_schedule
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for t in (10, theirs.config.num_train_timesteps - 1):
        with torch.no_grad():
            out = unet(x, torch.tensor([t, t])).sample
            eps = model(x, torch.tensor([float(t)] * 2))
        abar = theirs.alphas_cumprod[t]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        kind = theirs.config.prediction_type
        want = out if kind == "epsilon" else a * out + s * x if kind == "v_prediction" else (x - a * out) / s
        torch.testing.assert_close(eps, want, rtol=1e-4, atol=1e-4)


# ---- refused in one line -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """The ddpm-cifar10-32 layout at toy width, saved once (tests copy it and edit the copy)."""
    folder = tmp_path_factory.mktemp("cifar10_toy")
    diffusers_folder(folder, {**CIFAR10, "block_out_channels": [8, 16, 16, 16], "norm_num_groups": 8})
    return folder


UNET_FIELDS = [
    ("class_embed_type", "timestep"), ("time_embedding_type", "fourier"), ("mid_block_scale_factor", 2.0),
    ("up_block_types", ["UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]), ("act_fn", "mish"),
    ("down_block_types", ["DownBlock2D", "AttnSkipDownBlock2D", "DownBlock2D", "DownBlock2D"]),
    ("center_input_sample", True), ("num_class_embeds", 10), ("some_future_field", 1),
    ("attention_head_dim", 6),  # does not divide the attention width (16): UNet's own check, as one line
]
SCHEDULER_FIELDS = [("prediction_type", "score"), ("rescale_betas_zero_snr", True),
                    ("variance_type", "learned_range"), ("beta_schedule", "exp")]


@pytest.mark.parametrize("file,field,value", [("unet/config.json", f, v) for f, v in UNET_FIELDS]
                         + [("scheduler/scheduler_config.json", f, v) for f, v in SCHEDULER_FIELDS])
def test_unsupported_field_is_one_line(tmp_path, small_folder, file, field, value):
    shutil.copytree(small_folder, tmp_path, dirs_exist_ok=True)
    path = tmp_path / file
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_run(tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"{field}=" in message and file in message


class MakesFile:
    """A pickle whose loading would create a file: proof, by the file's absence, that no code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_bin_is_refused(tmp_path):
    diffusers_folder(tmp_path, CAT_TINY, safe_serialization=False)
    marker = tmp_path / "MARKER"
    with open(tmp_path / "unet" / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_in.weight": MakesFile(marker)}, f)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_run(tmp_path)
    assert "\n" not in str(err.value) and not marker.exists()


def test_damaged_folders_are_one_line(tmp_path):
    diffusers_folder(tmp_path, CAT_TINY)
    (tmp_path / "unet" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_run(tmp_path)
    diffusers_folder(tmp_path, CAT_TINY)
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model"):
        load_run(tmp_path)
    diffusers_folder(tmp_path, CAT_TINY)
    other = tmp_path / "other"
    diffusers_folder(other, {**CAT_TINY, "block_out_channels": [16, 16, 32, 32, 64, 128]})
    (other / "unet" / "diffusion_pytorch_model.safetensors").replace(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="do not belong"):
        load_run(tmp_path)


def test_hub_id_without_internet_is_one_line(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        load_run("hf:google/ddpm-cifar10-32")
    message = str(err.value)
    assert "\n" not in message and "hf:google/ddpm-cifar10-32" in message and "ckpt=<folder>" in message
