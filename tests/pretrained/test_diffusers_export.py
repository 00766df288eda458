"""Our networks written as diffusers folders: DDPMPipeline.from_pretrained loads them, its UNet2DModel gives our
eps to float32 round-off, its DDPMScheduler holds our chain, the pipeline samples; processes diffusers' DDPM chain
cannot hold are refused in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

pytest.importorskip("diffusers")
from diffusers import DDPMPipeline  # noqa: E402

from diffusion.errors import CheckpointError  # noqa: E402
from diffusion.parameterization import EpsModel  # noqa: E402
from diffusion.pretrained import export_diffusers, load_diffusers  # noqa: E402
from diffusion.processes import DDPM, EDM, VPSDE, RectifiedFlow, SubVPSDE, VESDE  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def tiny_model(process, prediction: str = "eps", seed: int = 0, **overrides):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "unet_tiny.yaml"), overrides)
    torch.manual_seed(seed)
    net = instantiate(cfg)
    with torch.no_grad():  # perturb the zero-initialised layers too: a zero network would match anything
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return EpsModel(net, process, prediction=prediction).eval(), cfg


def exported_eps(pipe, x, step: int) -> torch.Tensor:
    with torch.no_grad():
        out = pipe.unet(x, torch.full((x.shape[0],), step, dtype=torch.long)).sample
    abar = pipe.scheduler.alphas_cumprod[step].double()
    a, s = abar.sqrt().float(), (1 - abar).sqrt().float()
    kind = pipe.scheduler.config.prediction_type
    return out if kind == "epsilon" else a * out + s * x if kind == "v_prediction" else (x - a * out) / s


@pytest.mark.parametrize("schedule,prediction,overrides", [
    ("linear", "eps", {}),
    ("cosine", "v", {"resblock_updown": True, "attention_resolutions": [4], "num_heads": 1}),
    ("linear", "x0", {"scale_shift": False, "channel_mults": [1, 2, 2], "embedding_cos_first": False,
                      "embedding_freq_shift": 1.0, "downsample_padding": "bottom_right", "head_channels": 8}),
], ids=["unet_tiny", "cosine_v_biggan", "x0_ddpm_options"])
def test_ddpm_export_loads_in_diffusers_with_our_eps(tmp_path, schedule, prediction, overrides):
    process = DDPM(schedule, 1000)
    model, cfg = tiny_model(process, prediction, **overrides)
    export_diffusers(model, process, cfg, tmp_path, sample_size=8)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = DDPMPipeline.from_pretrained(tmp_path)
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod.double(), process.alphas_cumprod, rtol=2e-6, atol=1e-7)
    g = torch.Generator().manual_seed(1)
    for step in (0, 1, 321, 999):
        x = torch.randn(3, 1, 8, 8, generator=g)
        t = torch.full((3,), float(step))
        with torch.no_grad():  # the network's own output (eps, v or x0): what diffusers' scheduler consumes
            ours, theirs = model.raw(x, t), pipe.unet(x, t.long()).sample
        scale = ours.abs().max().item()
        assert scale > 0.1
        assert (theirs - ours).abs().max().item() <= 1e-5 * scale
        if step >= 1:  # eps as diffusers' float32 alphas_cumprod implies it (at step 0 its 1 - abar cancels)
            with torch.no_grad():
                eps = model(x, t)
            assert (exported_eps(pipe, x, step) - eps).abs().max().item() <= 1e-4 * eps.abs().max().item()
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and ((images >= 0) & (images <= 1)).all()
    # and back: the exported folder imports as the same model
    again, again_process, _, _ = load_diffusers(tmp_path)
    x = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(again(x, torch.tensor([5.0, 700.0])), model(x, torch.tensor([5.0, 700.0])),
                                   rtol=1e-5, atol=1e-5)
    assert again_process.schedule == schedule and again.prediction == prediction


def test_ddpm_with_other_steps_exports_its_betas(tmp_path):
    process = DDPM("linear", 200)  # Ho et al.'s line rescaled by 1000/N
    model, cfg = tiny_model(process)
    export_diffusers(model, process, cfg, tmp_path)
    pipe = DDPMPipeline.from_pretrained(tmp_path)
    assert pipe.scheduler.config.num_train_timesteps == 200
    torch.testing.assert_close(pipe.scheduler.betas.double(), process.betas, rtol=1e-6, atol=1e-9)


def test_vp_export_walks_its_chain_at_the_labels(tmp_path):
    """A VP SDE run: diffusers' chain at step i is the VP marginal at t = i/999, where our model labels 999 t = i,
    so the exported UNet gives our eps at every i >= 1 (i = 0 stands for t_eps)."""
    process = VPSDE()
    model, cfg = tiny_model(process)
    export_diffusers(model, process, cfg, tmp_path)
    pipe = DDPMPipeline.from_pretrained(tmp_path)
    for i in (1, 100, 999):
        t = torch.tensor([i / 999])
        torch.testing.assert_close(pipe.scheduler.alphas_cumprod[i].double(), process.alpha(t.double())[0] ** 2,
                                   rtol=1e-6, atol=1e-9)
        x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            ours = model(x, t.expand(2).float())
        assert (exported_eps(pipe, x, i) - ours).abs().max().item() <= 1e-5 * ours.abs().max().item()


@pytest.mark.parametrize("process", [SubVPSDE(), VESDE(), RectifiedFlow(), EDM()], ids=lambda p: p.name)
def test_other_processes_are_refused_in_one_line(tmp_path, process):
    model, cfg = tiny_model(DDPM())
    model.process = process
    with pytest.raises(CheckpointError) as err:
        export_diffusers(model, process, cfg, tmp_path)
    assert "\n" not in str(err.value) and "not exported" in str(err.value)
    assert not (tmp_path / "model_index.json").exists()


def test_edm_preconditioned_run_is_refused(tmp_path):
    from diffusion.preconditioning import EDMPrecond

    _, cfg = tiny_model(DDPM())
    process = EDM()
    model = EDMPrecond(instantiate(cfg), process)
    with pytest.raises(CheckpointError, match="not exported") as err:
        export_diffusers(model, process, cfg, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,field", [({"num_classes": 10}, "num_classes"),
                                             ({"embedding": "fourier"}, "embedding"),
                                             ({"attention_resolutions": [8], "num_heads": 2, "channel_mults": [1, 3]},
                                              "num_heads")])
def test_networks_diffusers_cannot_hold_are_one_line(tmp_path, overrides, field):
    model, cfg = tiny_model(DDPM(), **overrides)
    with pytest.raises(CheckpointError) as err:
        export_diffusers(model, model.process, cfg, tmp_path)
    assert "\n" not in str(err.value) and f"{field}=" in str(err.value)


def test_score_prediction_is_refused(tmp_path):
    model, cfg = tiny_model(DDPM(), prediction="score")
    with pytest.raises(CheckpointError, match="prediction_type"):
        export_diffusers(model, model.process, cfg, tmp_path)
