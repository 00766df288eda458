"""The U-Net backbone: shapes per config, per-sample independence, conditioning, gradients, determinism,
input validation, and equality under torch.compile / checkpointing / channels_last / bf16 autocast."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from diffusion import processes
from diffusion.nn import UNet
from diffusion.parameterization import EpsModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def tiny(**overrides) -> UNet:
    cfg = OmegaConf.load(CONFIGS / "unet_tiny.yaml")
    return instantiate(cfg, **overrides)


def scramble(net: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Perturb every parameter: the zero-initialised layers would otherwise make the output identically 0,
    and tests about how the output depends on its inputs could not fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def inputs(net: UNet, batch: int = 4, seed: int = 1, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    side = size or net.image_size
    return torch.randn(batch, net.in_channels, side, side, generator=g), torch.rand(batch, generator=g) * 999


# ---- configs ------------------------------------------------------------------------------------------
def test_cifar10_config_is_the_ddpm_network():
    torch.manual_seed(0)
    net = instantiate(OmegaConf.load(CONFIGS / "unet_cifar10.yaml"))
    params = sum(p.numel() for p in net.parameters())
    # Ho et al. 2020, appendix B: 35.7M parameters for the CIFAR-10 model
    assert abs(params - 35.7e6) / 35.7e6 < 0.01, params
    x, t = inputs(net, batch=1)
    with torch.no_grad():
        assert net.eval()(x, t).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", ["mnist", "tiny"])
def test_small_configs_shapes(name: str):
    net = scramble(instantiate(OmegaConf.load(CONFIGS / f"unet_{name}.yaml")))
    params = sum(p.numel() for p in net.parameters())
    if name == "mnist":
        assert net.image_size == 28 and net.in_channels == 1 and net.levels == 3
        assert params == 716_929, params  # 16-32-64 channels (benchmarks/default_run.md)
    x, t = inputs(net, batch=2)
    with torch.no_grad():
        out = net.eval()(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_any_size_divisible_by_the_level_factor_runs():
    net = scramble(tiny()).eval()  # two levels: sides must be even
    with torch.no_grad():
        assert net(torch.randn(2, 1, 6, 10), torch.tensor([3.0, 7.0])).shape == (2, 1, 6, 10)


def test_untrained_network_outputs_zero():
    # zero-initialised residual branches and output layer (DDPM's init_scale=0)
    net = tiny()
    x, t = inputs(net)
    assert torch.equal(net(x, t), torch.zeros_like(x))


# ---- independence across the batch -------------------------------------------------------------------
def test_no_leakage_across_the_batch():
    net = scramble(tiny(num_classes=3)).eval()
    x, t = inputs(net, batch=4)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        out = net(x, t, labels)
        x2 = x.clone()
        x2[0] += torch.randn_like(x2[0])
        t2, labels2 = t.clone(), labels.clone()
        t2[0], labels2[0] = 500.0, 2
        out2 = net(x2, t2, labels2)
    assert not torch.allclose(out[0], out2[0])
    # eval mode: GroupNorm and attention act per sample, so the other samples are bit-for-bit unchanged
    assert torch.equal(out[1:], out2[1:])


# ---- conditioning -------------------------------------------------------------------------------------
def test_time_changes_the_output_and_scalar_t_broadcasts():
    net = scramble(tiny()).eval()
    x, _ = inputs(net, batch=3)
    with torch.no_grad():
        a, b = net(x, torch.full((3,), 10.0)), net(x, torch.full((3,), 900.0))
        assert not torch.allclose(a, b)
        assert torch.equal(net(x, 10.0), a)


def test_class_labels_and_null_class():
    net = scramble(tiny(num_classes=3)).eval()
    assert net.num_classes == 3 and net.null_class == 3
    x, t = inputs(net, batch=2)
    with torch.no_grad():
        outs = [net(x, t, torch.full((2,), k)) for k in range(4)]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not torch.allclose(outs[i], outs[j]), (i, j)
        # no labels means the null class: the unconditional branch of classifier-free guidance
        assert torch.equal(net(x, t), outs[3])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        net(x, t, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="num_classes"):
        tiny()(x, t, torch.tensor([0, 1]))


def test_fourier_embedding_for_log_sigma_through_eps_model():
    # VE: the EpsModel passes log sigma in about [-4.6, 3.9]; the Fourier features must separate such values
    net = scramble(tiny(embedding="fourier")).eval()
    model = EpsModel(net, processes.VESDE())
    x, _ = inputs(net, batch=2)
    with torch.no_grad():
        a = model(x, torch.full((2,), 0.30, dtype=torch.float64))
        b = model(x, torch.full((2,), 0.31, dtype=torch.float64))
    assert a.shape == x.shape and not torch.allclose(a, b)


# ---- gradients ----------------------------------------------------------------------------------------
def _all_options() -> UNet:
    return tiny(num_classes=3, resblock_updown=True, embedding="fourier", dropout=0.1)


def test_gradient_reaches_every_parameter():
    net = scramble(_all_options()).train()
    x, t = inputs(net)
    net(x, t, torch.tensor([0, 1, 2, 3])).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_zero_init_passes_the_gradient_on_one_layer_per_step():
    # step 0: only the zero-initialised output layer has a gradient; step 1: the last layers of the residual
    # branches too (conv2, attention projections) and everything on the skip paths; step 2: every parameter
    net = _all_options().train()
    x, t = inputs(net)
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    has_grad = []
    for _ in range(3):
        opt.zero_grad()
        net(x, t, labels).sub(x).square().mean().backward()
        has_grad.append({n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        opt.step()
    assert has_grad[0] == {"conv_out.weight", "conv_out.bias"}
    assert {"conv_in.weight", "norm_out.weight", "encoder.0.res.conv2.weight", "middle.0.attn.proj.weight"} <= has_grad[1]
    assert "emb_mlp.0.weight" not in has_grad[1]
    assert has_grad[2] == {n for n, _ in net.named_parameters()}


def test_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = scramble(tiny(dropout=0.2, checkpointing=checkpointing)).train()
        x, t = inputs(net)
        torch.manual_seed(1)  # the same dropout masks; checkpoint replays the RNG state on recompute
        net(x, t).square().mean().backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- determinism and validation -----------------------------------------------------------------------
def test_deterministic_under_a_seed():
    nets = []
    for _ in range(2):
        torch.manual_seed(123)
        nets.append(tiny(embedding="fourier"))
    for (name, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items()):
        assert torch.equal(a, b), name
    # the Fourier frequencies come from their own seeded generator, not the global RNG
    torch.manual_seed(999)
    assert torch.equal(tiny(embedding="fourier").noise_embed.freqs, nets[0].noise_embed.freqs)
    net = scramble(nets[0]).eval()
    x, t = inputs(net)
    assert torch.equal(net(x, t), net(x, t))


def test_wrong_input_size_is_a_one_line_value_error():
    net = instantiate(OmegaConf.load(CONFIGS / "unet_mnist.yaml"))  # three levels: sides divide by 4
    with pytest.raises(ValueError, match=r"divide by 2\^\(levels-1\) = 4") as err:
        net(torch.randn(1, 1, 30, 30), torch.zeros(1))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, 3, 28, 28), torch.zeros(1))


def test_bad_constructor_arguments_are_value_errors():
    kwargs = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONFIGS / "unet_tiny.yaml")).items()
              if k != "_target_"}
    with pytest.raises(ValueError, match="image_size"):
        UNet(**{**kwargs, "image_size": 9})
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(**{**kwargs, "attention_resolutions": [16]})
    with pytest.raises(ValueError, match="embedding"):
        UNet(**{**kwargs, "embedding": "learned"})
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(**{**kwargs, "norm_groups": 32})


# ---- execution modes ----------------------------------------------------------------------------------
def test_channels_last_matches():
    net = scramble(tiny()).eval()
    x, t = inputs(net)
    with torch.no_grad():
        ref = net(x, t)
        out = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs_and_is_close():
    net = scramble(tiny()).train()
    x, t = inputs(net)
    ref = net(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); a few dozen ops accumulate to ~1e-2
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 5e-2, rel


@pytest.mark.slow  # inductor compiles C++ kernels: ~1-2 min on 2 busy CPU cores
def test_torch_compile_gives_equal_outputs():
    net = scramble(tiny(num_classes=3)).eval()
    x, t = inputs(net)
    labels = torch.tensor([0, 1, 2, 3])
    compiled = torch.compile(net)
    with torch.no_grad():
        ref, out = net(x, t, labels), compiled(x, t, labels)
    # inductor fuses and reorders float32 reductions (GroupNorm, softmax): rounding-level differences only
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_is_nearest_then_conv3x3(channels_last):
    """Upsample runs nearest-x2 + 3x3 convolution as one stride-2 transposed convolution: the same function and
    gradients (float64: to rounding), the same state_dict as the plain convolution."""
    from diffusion.nn.unet import Upsample

    torch.manual_seed(0)
    up = Upsample(5).double()
    x = torch.randn(3, 5, 4, 7, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), up.conv.weight, up.conv.bias, padding=1)
    out = up(x)
    assert out.shape == (3, 5, 8, 14) and torch.allclose(out, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    wanted = torch.autograd.grad(ref, (x, up.conv.weight, up.conv.bias), grad)
    got = torch.autograd.grad(out, (x, up.conv.weight, up.conv.bias), grad)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-11) for a, b in zip(got, wanted))
    assert list(up.state_dict()) == ["conv.weight", "conv.bias"]


@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_conv_is_a_1x1_convolution(channels_last):
    from diffusion.nn.unet import PointwiseConv

    torch.manual_seed(0)
    conv = PointwiseConv(6, 4).double()
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    x = (x.to(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
    ref, out = F.conv2d(x, conv.weight, conv.bias), conv(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    wanted = torch.autograd.grad(ref, (x, conv.weight, conv.bias), grad)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-11) for a, b in zip(got, wanted))
    assert isinstance(conv, torch.nn.Conv2d) and list(conv.state_dict()) == ["weight", "bias"]
    assert conv(torch.zeros(0, 6, 5, 3, dtype=torch.float64)).shape == (0, 4, 5, 3)   # an empty batch, as Conv2d
