"""Analytic-DPM (Bao et al. 2022) against closed forms: Gaussian data N(mu, s^2 I), whose reverse conditionals are
exactly Gaussian and isotropic, and the Gaussian mixture of ``diffusion.toy`` with its exact eps model."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion import likelihood
from diffusion.likelihood.analytic import Gamma, optimal_variance
from diffusion.likelihood.bound import ddpm_chain_bounds
from diffusion.processes import DDPM, posterior
from diffusion.samplers.ancestral import ddim, ddpm
from diffusion.toy import GaussianMixture

D, MU, S = 4, 0.4, 0.3


def _gaussian() -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.full((1, D), MU), (S**2 * torch.eye(D))[None])


def _true_explained(process, t):
    """1 - Gamma_t = Cov[eps | x_t] per dimension for N(mu, s^2 I) data: alpha^2 s^2 / (alpha^2 s^2 + sigma^2)."""
    a2, s2 = (2 * process.log_alpha(t)).exp(), process.sigma2(t)
    return a2 * S**2 / (a2 * S**2 + s2)


def _exact_gamma(process) -> Gamma:
    times = torch.arange(process.num_steps - 1, -1, -1, dtype=torch.float64)
    values = 1 - _true_explained(process, times)
    zeros = torch.zeros_like(times)
    return Gamma(times, values, zeros, 1 - values, 0, repr(process))


def test_gaussian_analytic_variance_is_the_true_conditional_variance():
    """Gaussian data, exact eps: q(x_s | x_t) = N(., lambda^2 + c^2 Cov[x_0 | x_t]) with c the x_0 coefficient of the
    family's mean, isotropic. The analytic variance from a Monte Carlo Gamma (4000 draws per step) must equal it
    within 4 of its Monte Carlo standard errors, on a 10-step chain for DDPM (lambda^2 = beta_tilde), for DDIM
    (lambda^2 = eta^2 beta_tilde, eta = 0 and 0.5) and for the decoder step to the data."""
    process = DDPM("linear")
    gm = _gaussian()
    x_train = gm.sample(4000, generator=torch.Generator().manual_seed(0))
    gamma = likelihood.estimate_gamma(process, gm.eps_model(process), x_train, steps=10,
                                      generator=torch.Generator().manual_seed(1), batch_size=40000)
    assert gamma.times.tolist() == process.timesteps(10).tolist() and gamma.meta["nfe_rows"] == 40000
    t, s = gamma.times[:-1], gamma.times[1:]
    a2_t, s2_t = (2 * process.log_alpha(t)).exp(), process.sigma2(t)
    a2_s, s2_s = (2 * process.log_alpha(s)).exp(), process.sigma2(s)
    cov_x0 = S**2 * s2_t / (a2_t * S**2 + s2_t)  # Cov[x_0 | x_t] per dimension
    beta_tilde = posterior(process, t, s)[2]
    for lam2 in (beta_tilde, 0.25 * beta_tilde, torch.zeros_like(t)):
        c = a2_s.sqrt() - (s2_s - lam2).sqrt() * a2_t.sqrt() / s2_t.sqrt()  # x_0 coefficient of the family's mean
        truth = lam2 + c**2 * cov_x0
        got = optimal_variance(process, gamma, t, s, lam2, data_bounds=None)
        se = c**2 * s2_t / a2_t * gamma.stderr[:-1]  # D^2 SE(Gamma), D = c sigma_t / alpha_t
        assert ((got - truth).abs() <= 4 * se + 1e-12).all(), (got / truth - 1)
        assert (got - lam2).min() >= 0
    # the decoder (x_s = x_0): variance sigma_0^2/alpha_0^2 (1 - Gamma_0) = Cov[x_0 | x_{t=0}]
    t0 = gamma.times[-1:]
    dec = optimal_variance(process, gamma, t0, None, data_bounds=None)
    truth0 = S**2 * process.sigma2(t0) / ((2 * process.log_alpha(t0)).exp() * S**2 + process.sigma2(t0))
    se0 = process.sigma2(t0) / (2 * process.log_alpha(t0)).exp() * gamma.stderr[-1]
    assert (dec - truth0).abs() <= 4 * se0


@pytest.mark.parametrize("K", [10, 100])
def test_gaussian_k_step_bound_with_analytic_variance_is_tight_up_to_the_prior(K):
    """With the exact eps and its optimal variances, every reverse step of the K-step chain is q's own reverse
    conditional, so E_x[bound(x) + log q(x)] = KL(q(x_T) || N(0, I)), closed form (~1e-5 nats here). 1500 points:
    the mean gap must be within 4 standard errors of that. beta_tilde at K=10 must fail the same check
    (it is loose by many nats), so the test can tell."""
    process = DDPM("linear")
    gm = _gaussian()
    model = gm.eps_model(process)
    gamma = likelihood.estimate_gamma(process, model, gm.sample(2000, generator=torch.Generator().manual_seed(2)), steps=K,
                                      generator=torch.Generator().manual_seed(3), batch_size=200000)
    x = gm.sample(1500, generator=torch.Generator().manual_seed(4))
    exact = -gm.log_prob(x)
    out, nfe = ddpm_chain_bounds(process, model, x, steps=K, variances=("analytic", "beta_tilde"), gamma=gamma,
                                 generator=torch.Generator().manual_seed(5))
    assert nfe == K
    T = torch.tensor(float(process.t_max), dtype=torch.float64)
    a2, s2 = (2 * process.log_alpha(T)).exp(), process.sigma2(T)
    var_T = a2 * S**2 + s2
    prior_kl = 0.5 * D * (var_T - 1 - var_T.log()) + 0.5 * D * a2 * MU**2
    gap = out["analytic"][0] - exact
    se = gap.std() / math.sqrt(len(x))
    assert abs(gap.mean() - prior_kl) < 4 * se, (gap.mean(), se, prior_kl)
    assert se < 0.02 * D
    if K == 10:
        loose = out["beta_tilde"][0] - exact
        assert loose.mean() - prior_kl > 20 * loose.std() / math.sqrt(len(x))


@pytest.fixture(scope="module")
def mixture_gamma(mixture):
    process = DDPM("linear")
    x_train = mixture.sample(400, generator=torch.Generator().manual_seed(10))
    return likelihood.estimate_gamma(process, mixture.eps_model(process), x_train, steps=100,
                                     generator=torch.Generator().manual_seed(11), batch_size=100000)


@pytest.mark.parametrize("K", [10, 100, pytest.param(1000, marks=pytest.mark.slow)])
def test_mixture_analytic_bound_is_the_tightest_and_every_bound_holds(K, mixture, mixture_gamma):
    """The exact mixture model, Gamma estimated on a 100-step grid (interpolated for K=1000). Same noise for the three
    variances (one pass), so their per-point differences are paired: the analytic bound must not exceed the beta and
    beta_tilde bounds by more than 3 paired standard errors (and is below both by > 3 at K=10, where they differ
    most), and every bound must be above the exact NLL up to 3 standard errors."""
    process = DDPM("linear")
    x = mixture.sample(300, generator=torch.Generator().manual_seed(12))
    exact = -mixture.log_prob(x)
    out, _ = ddpm_chain_bounds(process, mixture.eps_model(process), x, steps=K, variances=("beta", "beta_tilde", "analytic"),
                               gamma=mixture_gamma, generator=torch.Generator().manual_seed(13))
    n = len(x)
    for v in ("beta", "beta_tilde"):
        diff = out["analytic"][0] - out[v][0]
        se = diff.std() / math.sqrt(n)
        assert diff.mean() < 3 * se, (v, diff.mean(), se)
        if K == 10:
            assert diff.mean() < -3 * se, (v, diff.mean(), se)
    for v, (bound, _) in out.items():
        gap = bound - exact
        assert gap.mean() > -3 * gap.std() / math.sqrt(n), (v, gap.mean())


def _replicates(process, model, x, reps, **kw):
    """(mean estimate, empirical SD across replicates, RMS reported SE), each per point, of ``reps`` independent runs."""
    runs = [ddpm_chain_bounds(process, model, x, generator=torch.Generator().manual_seed(100 + r), **kw) for r in range(reps)]
    est = torch.stack([out["beta"][0] for out, _ in runs])
    se = torch.stack([out["beta"][1] for out, _ in runs])
    return est.mean(0), est.std(0), se.pow(2).mean(0).sqrt(), runs[0][1]


def test_importance_sampled_bound_is_unbiased_and_beats_uniform_at_equal_cost(mixture):
    """DDPM N=1000, the exact mixture model, 16 points. The importance-sampled estimate (t_samples=16: 18 model
    evaluations) agrees with the full 1000-term sum within 3 standard errors; its empirical spread over 12
    replicates is below a fifth of the uniform estimator's at the same 18 evaluations (measured ~1/30), its reported
    standard error is of the right size (conservative: 0.7..3 x the empirical spread) and shrinks with t_samples."""
    process = DDPM("linear")
    model = mixture.eps_model(process)
    x = mixture.sample(16, generator=torch.Generator().manual_seed(20))
    full, nfe_full = ddpm_chain_bounds(process, model, x, generator=torch.Generator().manual_seed(21))
    assert nfe_full == 1000
    is_mean, is_sd, is_se, nfe_is = _replicates(process, model, x, 12, t_samples=16)
    un_mean, un_sd, _, nfe_un = _replicates(process, model, x, 12, t_samples=18, sampling="uniform")
    assert nfe_is == nfe_un == 18
    # unbiased: the replicate mean vs the full sum (its SE), per point and pooled
    se = (is_sd**2 / 12 + full["beta"][1] ** 2).sqrt()
    assert ((is_mean - full["beta"][0]).abs() < 4 * se).all()
    assert (is_mean - full["beta"][0]).mean().abs() < 3 * se.pow(2).sum().sqrt() / len(x)
    assert (is_sd.pow(2).mean() / un_sd.pow(2).mean()).sqrt() < 0.2
    assert 0.7 < (is_se.pow(2).mean() / is_sd.pow(2).mean()).sqrt() < 3.0
    _, _, se64, nfe64 = _replicates(process, model, x, 2, t_samples=64)
    assert nfe64 == 66 and se64.pow(2).mean().sqrt() < 0.7 * is_se.pow(2).mean().sqrt()


def test_analytic_bound_through_variational_bound_and_errors(mixture, mixture_gamma, tmp_path):
    """The public call form, a saved-and-reloaded Gamma (JSON), and one-line errors for missing or foreign Gamma."""
    process = DDPM("linear")
    model = mixture.eps_model(process)
    x = mixture.sample(8, generator=torch.Generator().manual_seed(30))
    path = mixture_gamma.save(tmp_path / "gamma.json")
    a = likelihood.variational_bound(process, model, x, steps=10, variance="analytic", gamma=mixture_gamma,
                                     generator=torch.Generator().manual_seed(31))
    b, stats = likelihood.variational_bound(process, model, x, steps=10, variance="analytic", gamma=str(path),
                                            generator=torch.Generator().manual_seed(31), return_stats=True)
    torch.testing.assert_close(a, b)
    assert stats["nfe"] == 10
    _, stats = likelihood.variational_bound(process, model, x, steps=10, variance="analytic", gamma=path, t_samples=4,
                                            generator=torch.Generator().manual_seed(31), return_stats=True)
    assert stats["nfe"] == 6 and torch.isfinite(stats["stderr"]).all()
    with pytest.raises(ValueError, match="needs gamma"):
        likelihood.variational_bound(process, model, x, steps=10, variance="analytic")
    with pytest.raises(ValueError, match="estimated under"):
        likelihood.variational_bound(DDPM("cosine"), model, x, steps=10, variance="analytic", gamma=mixture_gamma)
    with pytest.raises(ValueError, match="steps must be"):
        likelihood.variational_bound(process, model, x, steps=1001)
    with pytest.raises(ValueError, match="no Gamma file"):
        likelihood.variational_bound(process, model, x, steps=10, variance="analytic", gamma=tmp_path / "missing.json")


def test_analytic_samplers_reproduce_gaussian_data_in_ten_steps():
    """Gaussian data, exact eps and exact Gamma: with analytic variances each step is q's exact reverse conditional
    (for DDPM and for DDIM at any eta), so 10 steps from N(0, I) give the data's mean and, after the final
    denoising step, variance Var E[x_0 | x_{t=0}]; within 4 Monte Carlo SE. beta_tilde at 10 steps misses it."""
    process = DDPM("linear")
    model = _gaussian().eps_model(process)
    gamma = _exact_gamma(process)
    n = 6000
    t0 = torch.zeros((), dtype=torch.float64)
    a2, s2 = (2 * process.log_alpha(t0)).exp(), process.sigma2(t0)
    var_target = float(S**2 - S**2 * s2 / (a2 * S**2 + s2))
    se_var = var_target * math.sqrt(2 / (n * D))

    def run(sampler, **kw):
        g = torch.Generator().manual_seed(40)
        x_T = torch.randn(n, D, generator=g, dtype=torch.float64)
        x = sampler(process, model, x_T, 10, g, **kw)
        return float(x.mean()), float(x.var())

    for sampler, kw in [(ddpm, {"variance": "analytic"}), (ddim, {"eta": 0.0, "variance": "analytic"}),
                        (ddim, {"eta": 0.5, "variance": "analytic"})]:
        mean, var = run(sampler, gamma=gamma, **kw)
        assert abs(mean - MU) < 4 * S / math.sqrt(n * D), (kw, mean)
        assert abs(var - var_target) < 4 * se_var, (kw, var, var_target)
    _, var = run(ddpm, variance="beta_tilde")
    assert abs(var - var_target) > 10 * se_var
    with pytest.raises(ValueError, match="needs gamma"):
        run(ddpm, variance="analytic")
    with pytest.raises(ValueError, match="variance"):
        run(ddim, variance="beta")
