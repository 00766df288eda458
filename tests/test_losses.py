"""Losses on Gaussian data N(0, s^2 I), where the optimal predictor and the minimal loss are closed form:
E[eps | x_t] = sigma / (alpha^2 s^2 + sigma^2) x_t, and E|eps - E[eps|x_t]|^2 / d = alpha^2 s^2 / (alpha^2 s^2 + sigma^2)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.losses import DSM, EpsMSE, HybridLoss, VLBLoss
from diffusion.parameterization import EpsModel, from_eps
from diffusion.processes import DDPM, VESDE, VPSDE

S = 0.5  # data std
D = 4


def label_to_t(process, label):
    if isinstance(process, VESDE):  # label = log sigma
        return process.t_from_log_snr(-2 * label.double())
    if isinstance(process, DDPM):
        return label.double()
    return label.double() / 999


class Optimal(nn.Module):
    """The Bayes-optimal network for N(0, S^2 I) data, in its own prediction space, times a scalar k per
    sample (k = 1 is optimal), with the input scaling of EpsModel undone."""

    def __init__(self, process, prediction):
        super().__init__()
        self.process, self.prediction = process, prediction
        self.k = None

    def forward(self, x_in, label, class_labels=None):
        t = label_to_t(self.process, label)
        alpha, sigma = self.process.alpha(t)[:, None], self.process.sigma(t)[:, None]
        x_t = x_in * (alpha**2 + sigma**2).sqrt()  # EpsModel scaled it by c_in
        eps_opt = sigma / (alpha**2 * S**2 + sigma**2) * x_t
        out = from_eps(self.prediction, self.process, x_t, t, eps_opt)
        return out if self.k is None else self.k[:, None] * out


def expected_eps_mse(process, n=20001):
    """E_t[alpha^2 s^2/(alpha^2 s^2 + sigma^2)] over process.sample_t's distribution."""
    if not isinstance(process, DDPM):  # DDPM draws integer steps
        t = torch.linspace(process.t_eps, process.t_max, n, dtype=torch.float64)
        a2, s2 = process.alpha(t) ** 2, process.sigma(t) ** 2
        return torch.trapezoid(a2 * S**2 / (a2 * S**2 + s2), t).item() / (process.t_max - process.t_eps)
    t = torch.arange(process.num_steps, dtype=torch.float64)
    a2, s2 = process.alpha(t) ** 2, process.sigma(t) ** 2
    return (a2 * S**2 / (a2 * S**2 + s2)).mean().item()


@pytest.mark.parametrize("process", [VPSDE(), VESDE(), DDPM("linear", 1000)], ids=["vp", "ve", "ddpm"])
def test_eps_mse_at_the_optimum_matches_closed_form(process):
    """8192 samples: the Monte Carlo mean must be within 3 standard errors of the closed form."""
    model = EpsModel(Optimal(process, "eps"), process).double()
    x0 = S * torch.randn(8192, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = EpsMSE(process)(model, x0, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (8192,)
    se = loss.std() / len(loss) ** 0.5
    assert abs(loss.mean().item() - expected_eps_mse(process)) < 3 * se


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("process", [VPSDE(), DDPM("cosine", 1000)], ids=["vp", "ddpm"])
def test_every_prediction_space_has_the_same_optimum(process, prediction):
    """Scale the optimal output by k: d loss / dk at k = 1 is E[opt (opt - target)] = 0 for a posterior
    mean in any space. The per-sample gradients (autograd through the loss) must average to 0 within
    3 standard errors; and gradients flow."""
    net = Optimal(process, prediction)
    model = EpsModel(net, process, prediction=prediction)
    x0 = S * torch.randn(4096, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net.k = torch.ones(4096, dtype=torch.float64, requires_grad=True)
    loss = EpsMSE(process)(model, x0, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(loss.sum(), net.k)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert grad.mean().abs() < 3 * grad.std() / len(grad) ** 0.5


def test_dsm_weightings_relate_as_documented():
    """Same generator seed => same t and eps: DSM(sigma2) is EpsMSE exactly, and DSM(likelihood) is
    g^2/sigma^2 times it per sample."""
    process = VPSDE()
    model = EpsModel(Optimal(process, "eps"), process).double()
    x0 = S * torch.randn(64, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    run = lambda loss: loss(model, x0, generator=torch.Generator().manual_seed(5))
    simple, sigma2, lik = run(EpsMSE(process)), run(DSM(process, "sigma2")), run(DSM(process, "likelihood"))
    torch.testing.assert_close(sigma2, simple, rtol=1e-6, atol=1e-12)
    t = process.sample_t(64, generator=torch.Generator().manual_seed(5)).double()
    torch.testing.assert_close(lik, process.g2(t) / process.sigma2(t) * sigma2, rtol=1e-5, atol=1e-10)
    with pytest.raises(ValueError, match="weighting"):
        DSM(process, "uniform")


@pytest.mark.parametrize("weighting", ["likelihood", "sigma2"])
def test_importance_sampled_dsm_has_the_plain_expectation(weighting):
    """Both estimate (1/(T - t_eps)) int lambda(t)/sigma^2 * alpha^2 s^2/(alpha^2 s^2 + sigma^2) dt at the
    optimum; each must match the quadrature within 3 standard errors (16384 samples), and importance
    sampling must cut the likelihood-weighted variance. t_eps = 1e-2: with uniform t the likelihood weight
    g^2/sigma^2 ~ 1/t makes the plain estimator's variance ~ 1/t_eps (heavy-tailed at t_eps = 1e-5, which
    is the point of importance sampling, but then its standard error cannot be trusted)."""
    process = VPSDE(t_eps=1e-2)
    model = EpsModel(Optimal(process, "eps"), process).double()
    x0 = S * torch.randn(16384, D, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    t = torch.linspace(process.t_eps, process.t_max, 200001, dtype=torch.float64)
    a2, s2 = process.alpha(t) ** 2, process.sigma2(t)
    lam = process.g2(t) if weighting == "likelihood" else s2
    want = torch.trapezoid(lam / s2 * a2 * S**2 / (a2 * S**2 + s2), t).item() / (process.t_max - process.t_eps)
    stds = []
    for importance_sampling in (False, True):
        loss = DSM(process, weighting, importance_sampling)(model, x0, generator=torch.Generator().manual_seed(7))
        assert abs(loss.mean().item() - want) < 3 * loss.std().item() / len(loss) ** 0.5
        stds.append(loss.std().item())
    if weighting == "likelihood":
        assert stds[1] < stds[0]


def test_vlb_loss_estimates_the_bound_and_hybrid_adds_it():
    """VLBLoss is an unbiased one-draw estimate of variational_bound / d: compare batch means within 3 SE.
    HybridLoss = EpsMSE + w * VLBLoss with the generator's draws in that order."""
    from diffusion import likelihood

    process = DDPM("linear", 100)
    model = EpsModel(Optimal(process, "eps"), process).double()
    x0 = S * torch.randn(4096, D, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    vlb = VLBLoss(process)(model, x0, generator=torch.Generator().manual_seed(9))
    bound, stats = likelihood.variational_bound(process, model, x0[:512], generator=torch.Generator().manual_seed(10),
                                                return_stats=True)
    se = (vlb.var() / len(vlb) + (bound / D).var() / 512) ** 0.5
    assert abs(vlb.mean() - bound.mean() / D) < 3 * se
    g = torch.Generator().manual_seed(11)
    hybrid = HybridLoss(process, vlb_weight=0.01)(model, x0[:8], generator=g)
    g = torch.Generator().manual_seed(11)
    simple = EpsMSE(process)(model, x0[:8], generator=g)
    torch.testing.assert_close(hybrid, simple + 0.01 * VLBLoss(process)(model, x0[:8], generator=g))
    with pytest.raises(ValueError, match="DSM"):
        VLBLoss(VPSDE())


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, D)
        self.seen = []

    def forward(self, x_in, label, class_labels=None):
        self.seen.append(class_labels)
        return self.lin(x_in)


@pytest.mark.parametrize("make", [EpsMSE, DSM, lambda p: DSM(p, "likelihood", True), HybridLoss, VLBLoss],
                         ids=["epsmse", "dsm", "dsm-lik-is", "hybrid", "vlb"])
def test_gradients_flow_and_labels_pass_through(make):
    process = DDPM("linear", 100) if make in (HybridLoss, VLBLoss) else VPSDE()
    net = Recorder()
    model = EpsModel(net, process)
    labels = torch.tensor([3, 1, 4, 1])
    loss = make(process)(model, torch.randn(4, D), class_labels=labels, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(seen is labels for seen in net.seen)




@pytest.mark.parametrize("process_name, loss_name", [("DDPM", "EpsMSE"), ("VPSDE", "EpsMSE"), ("VESDE", "EpsMSE"),
                                                     ("RectifiedFlow", "FlowMatching"), ("EDM", "EDMLoss")])
def test_loss_auto_is_resolved_by_the_losses_table(process_name, loss_name):
    """loss=auto: auto_loss names the process's default_loss in losses.LOSSES, the one table of loss names;
    default_loss builds that class, and config.LOSSES (its old place) reads the same table."""
    from diffusion import config, losses, processes

    process = getattr(processes, process_name)()
    name = losses.auto_loss(process)
    assert losses.LOSSES[name].__name__ == loss_name and type(losses.default_loss(process)).__name__ == loss_name
    assert config.LOSSES == {key: cls.__name__ for key, cls in losses.LOSSES.items()}


def test_unknown_default_loss_is_a_one_line_error():
    from diffusion.errors import ConfigError
    from diffusion.losses import auto_loss

    class Odd(VPSDE):
        default_loss = "nope"

    with pytest.raises(ConfigError, match="default_loss='nope' is not one of eps_mse, dsm.*set loss= explicitly"):
        auto_loss(Odd())
