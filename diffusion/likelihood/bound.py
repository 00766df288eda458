r"""Variational upper bounds on -log p(x): the discrete DDPM bound and the continuous SDE bound.

**DDPM** (Ho et al. 2020 eq. 5; Sohl-Dickstein et al. 2015). With x_{-1} = x the clean data,

    L(x) = KL(q(x_{N-1} | x) || N(0, I))                                       prior
         + sum_{t=1}^{N-1} E_q KL(q(x_{t-1} | x_t, x) || p(x_{t-1} | x_t))     KL terms
         + E_q[-log p(x | x_0)]                                                 decoder,

p(x_{s} | x_t) = N(posterior mean with x0_pred in place of x, v_t I), v_t = beta_tilde_t (the posterior
variance) or beta_t. Given x_t = alpha_t x + sigma_t eps the two means differ by
c_x0 (x - x0_pred) = c_x0 sigma_t / alpha_t (eps_pred - eps), so every KL is closed form. The decoder is
the Gaussian N(x0_pred(x_0), beta_0 I): for data that are smooth on the scale sqrt(beta_0) (continuous
data) the true posterior q(x | x_0) is N(x0_pred, sigma_0^2/alpha_0^2 (I + O(sigma_0^2))) by Tweedie's
formula, and sigma_0^2/alpha_0^2 = beta_0/(1 - beta_0) ~ beta_0 (Ho et al.'s sigma_1^2 = beta_1).
Its -log p is d/2 log(2 pi beta_0) + |eps - eps_pred|^2 / (2 alpha_0^2).

**K-step chains.** A sampler that walks the respaced grid N-1 = t_0 > ... > t_{K-1} = 0 has the same bound
with the steps t_i -> t_{i+1} (``ddpm_chain``): the posterior q(x_s | x_t, x) of any pair s < t is Gaussian
(``processes.posterior``), so each KL stays closed form in |eps - eps_pred|^2, for the reverse variance
beta_tilde(t, s), sigma_{t|s}^2 ("beta") or Analytic-DPM's optimum (``analytic.py``, Bao et al. 2022).

**Low-variance estimate** (``t_samples=k``). Each term is const + weight |eps - eps_pred|^2: the constants, and
the prior, are summed exactly; the decoder is always evaluated (two draws, for its standard error); the K-1 step
KLs' noise parts are importance-sampled with q_i ∝ (SNR_{t_{i+1}} / SNR_{t_i} - 1), uniform in log-SNR, which is
what their weights scale with (Kingma et al. 2021, "Variational Diffusion Models": the KL of a step is
~ 1/2 Delta lambda |eps - eps_pred|^2), and stratified on q's CDF (one draw per stratum). The uniform draw of
whole terms it replaces has its variance dominated by N times the decoder's large constant.

**SDEs** (Song, Durkan, Murray & Ermon 2021, "Maximum Likelihood Training of Score-Based Diffusion
Models", thm. 1, DSM form), truncated at s = t_eps: x is the state at time s and the forward kernel from
there is q(x_t | x) = N(a x, c^2 I), a = alpha_t/alpha_s, c^2 = sigma_t^2 - a^2 sigma_s^2. Then

    L(x) = E[-log p_T(x_T)] + 1/2 int_s^T g^2 E|score(x_t) + eps/c|^2 dt - 1/2 int_s^T (g^2 d / c^2 + 2 d f) dt.

The two 1/c^2 divergences cancel analytically: with eps_c = -c score (so score + eps/c = (eps - eps_c)/c)
and E|eps|^2 = d,

    L(x) = E[-log p_T(x_T)] - d log(alpha_T/alpha_s) + int_s^T g^2/(2 c^2) E[|eps - eps_c|^2 - d] dt,

the prior term closed form for p_T = N(0, p^2 I). The remaining integrand is finite at s (eps_c = O(c)),
but a plain Monte Carlo estimate of it has infinite variance there (the mean-zero |eps|^2 - d carries
weight g^2/c^2). Writing |eps - eps_c|^2 - d = (|eps|^2 - d) - 2 eps_c.eps + |eps_c|^2 we estimate
E[...] = E[(1 - gamma)(|eps|^2 - d) - (eps_c(eps) - eps_c(-eps)).eps + (|eps_c(eps)|^2 + |eps_c(-eps)|^2)/2]
with antithetic noise (eps, -eps) (the odd term becomes a central difference, O(c^2)) and a control
variate: subtracting gamma (|eps|^2 - d) (mean zero) for any gamma independent of eps leaves the mean
unchanged. For eps_c ~ k eps + const the |eps|^2 terms cancel at gamma = (1 - k)^2, k = d eps_c / d eps
(the share of the noise the model explains: ~0 near s, ~1 at high noise). k is measured by a second,
independent antithetic pair; each pair uses the other's k, so both stay unbiased and no evaluation is wasted. Time is importance-sampled with density
proportional to g^2/sigma^2, i.e. uniform in lambda = log SNR (d lambda/dt = -g^2/sigma^2), weight
Z sigma^2/g^2 with Z = lambda(s) - lambda(T), and stratified over the ``t_samples`` draws.

With the exact score and p_T equal to the true marginal, the reverse SDE's path measure equals the forward
one, so the bound is tight for every x: L(x) = -log p_s(x), the same density ``ode_nll`` computes.

Standard errors: with one draw per stratum (DDPM terms, stratified times) the variance is estimated by
collapsing neighbouring strata in pairs, sum (y_2j - y_2j+1)^2, which overestimates it (Cochran 1977 5A.12).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import MARKOV_CHAIN, Process, posterior
from diffusion.utils import append_dims

#: reverse variances of the DDPM bound: the Bayes posterior's, Ho et al.'s beta, and Analytic-DPM's optimum
VARIANCES = ("beta_tilde", "beta", "analytic")
FIXED_VARIANCES = ("beta_tilde", "beta")
#: time draws (each two antithetic pairs, four model evaluations) per data point for the SDE bound
SDE_T_SAMPLES = 256


def _eps_pred(model, x_t: Tensor, t: Tensor, class_labels: Tensor | None) -> Tensor:
    if class_labels is None:
        return model(x_t, t)
    return model(x_t, t, class_labels)


def _sq(x: Tensor) -> Tensor:
    return x.flatten(1).pow(2).sum(1)


def ddpm_prior_kl(process: Process, x: Tensor) -> Tensor:
    """KL(q(x_{N-1} | x) || N(0, I)), shape (batch,), closed form."""
    t = torch.full((x.shape[0],), process.t_max, dtype=torch.float64, device=x.device)
    alpha2, sigma2 = (2 * process.log_alpha(t)).exp(), process.sigma2(t)
    d = x[0].numel()
    return 0.5 * (d * (sigma2 - 1 - sigma2.log()) + alpha2 * _sq(x).double()).to(x.dtype)


def ddpm_terms(process: Process, model: Callable, x: Tensor, t: Tensor, eps: Tensor, *,
               variance: str = "beta", class_labels: Tensor | None = None) -> Tensor:
    r"""The DDPM bound's term for step t per sample (batch,), nats, at x_t = alpha_t x + sigma_t eps:
    KL(q(x_{t-1} | x_t, x) || p(x_{t-1} | x_t)) for t >= 1 and the decoder -log p(x | x_0) for t = 0.
    ``t`` holds integer step indices (any mix, shape (batch,)). Differentiable in the model's output."""
    const, weight, err = _ddpm_term_parts(process, model, x, t, eps, variance, class_labels)
    return const + weight * err


def _ddpm_term_parts(process, model, x, t, eps, variance, class_labels) -> tuple[Tensor, Tensor, Tensor]:
    """term = const + weight * |eps - eps_pred|^2: (const, weight, |eps - eps_pred|^2), each (batch,)."""
    if variance not in FIXED_VARIANCES:
        raise ConfigError(f"unknown reverse variance {variance!r} for a single term; choose one of {', '.join(FIXED_VARIANCES)} "
                         "(the analytic variance is a property of a whole chain: variational_bound(variance='analytic'))")
    d = x[0].numel()
    t64 = t.double()
    x_t = process.noise(x, t64, eps)
    err = _sq(_eps_pred(model, x_t, t.to(x.dtype), class_labels).to(x.dtype) - eps)
    alpha2_t, sigma2_t = (2 * process.log_alpha(t64)).exp(), process.sigma2(t64)
    t_kl = t64.clamp_min(1)  # the decoder rows (t = 0) are selected below
    c_x0, _, beta_tilde = posterior(process, t_kl, t_kl - 1)
    beta_t = -torch.expm1(-process.g2(t_kl))  # g^2 = -log(1 - beta_t) on (t-1, t]
    var_p = beta_tilde if variance == "beta_tilde" else beta_t
    # KL between N(mean_q, beta_tilde I) and N(mean_p, var_p I), |mean_q - mean_p|^2 = c_x0^2 sigma_t^2/alpha_t^2 err
    kl_const = 0.5 * d * (torch.log(var_p / beta_tilde) + beta_tilde / var_p - 1)
    kl_weight = c_x0**2 * sigma2_t / (alpha2_t * 2 * var_p)
    beta0 = -torch.expm1(-process.g2(torch.zeros_like(t64)))
    dec_const = 0.5 * d * torch.log(2 * math.pi * beta0)
    dec_weight = 1 / (2 * alpha2_t)
    decoder = t64 < 0.5
    const = torch.where(decoder, dec_const, kl_const).to(x.dtype)
    weight = torch.where(decoder, dec_weight, kl_weight).to(x.dtype)
    return const, weight, err


def _collapsed_strata_stderr(values: Tensor) -> Tensor:
    """Standard error of values.sum(0) where row k is one draw from stratum k (neighbours alike):
    sqrt(sum_j (y_2j - y_2j+1)^2), conservative. values: (K, batch)."""
    K = values.shape[0]
    if K < 2:
        return torch.full_like(values[0], float("nan"))
    pairs = values[: K - K % 2].reshape(K // 2, 2, -1)
    var = (pairs[:, 0] - pairs[:, 1]).pow(2).sum(0)
    if K % 2:  # the odd stratum out borrows its neighbour's spread
        var = var * K / (K - 1)
    return var.sqrt()


def ddpm_chain(process: Process, steps: int | None = None, variance: str = "beta", gamma=None,
               data_bounds: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The K-step chain's terms as ``term_i = const_i + weight_i |eps - eps_pred(x_{t_i}, t_i)|^2``, float64:
    (times, const, weight, kl_weight_beta_tilde), each (K,). Rows 0..K-2 are the KLs of the steps t_i -> t_{i+1}
    on the grid ``process.timesteps(K)`` (N-1 = t_0 > ... > t_{K-1} = 0); row K-1 is the decoder at t = 0.

    A step's KL between q(x_s | x_t, x) = N(mean_q, lambda^2 I) (lambda^2 = beta_tilde(t, s), the Bayes posterior
    of the respaced chain) and p = N(mean_p, v I), |mean_q - mean_p|^2 = D^2 |eps - eps_pred|^2:
    const = d/2 (log(v / lambda^2) + lambda^2 / v - 1), weight = D^2 / (2 v), D = c_x0 sigma_t / alpha_t.
    v: ``beta_tilde`` = lambda^2, ``beta`` = sigma_{t|s}^2, ``analytic`` = the clipped optimum (``analytic.py``).
    The decoder is N(x0_pred, v_0 I) with v_0 = beta_0 (beta, beta_tilde: Ho et al.) or the analytic
    sigma_0^2 / alpha_0^2 (1 - Gamma_0), clipped; -log p = d/2 log(2 pi v_0) + sigma_0^2 / (2 alpha_0^2 v_0) |eps - eps_pred|^2.
    The last column, D^2 / (2 lambda^2) = (SNR_s / SNR_t - 1) / 2, is the importance-sampling proposal (any variance).
    The data dimension d enters ``const`` later (callers multiply the d-free part by d: ``const`` here is per dimension).
    """
    if variance not in VARIANCES:
        raise ConfigError(f"unknown reverse variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    K = process.num_steps if steps is None else int(steps)
    if K < 1 or K > process.num_steps:
        raise ConfigError(f"steps must be in 1..{process.num_steps} (the process's num_steps), got {steps!r}")
    times = process.timesteps(K, "uniform").double()
    if variance == "analytic":
        from diffusion.likelihood.analytic import as_gamma, optimal_variance

        gamma = as_gamma(gamma)
        if gamma is None:
            raise ConfigError("variance='analytic' needs gamma=likelihood.estimate_gamma(process, model, x_train, steps=K)")
        if gamma.process and gamma.process != repr(process):
            raise ConfigError(f"gamma was estimated under {gamma.process}, not {process!r}")
    t, s = times[:-1], times[1:]
    alpha2_t, sigma2_t = (2 * process.log_alpha(t)).exp(), process.sigma2(t)
    c_x0, _, lam2 = posterior(process, t, s)
    D2 = c_x0**2 * sigma2_t / alpha2_t
    if variance == "beta_tilde":
        var_p = lam2
    elif variance == "beta":
        var_p = sigma2_t - (2 * (process.log_alpha(t) - process.log_alpha(s))).exp() * process.sigma2(s)
    else:
        var_p = optimal_variance(process, gamma, t, s, data_bounds=data_bounds)
    kl_const = 0.5 * (torch.log(var_p / lam2) + lam2 / var_p - 1)
    kl_weight = D2 / (2 * var_p)
    t0 = times[-1:]
    alpha2_0, sigma2_0 = (2 * process.log_alpha(t0)).exp(), process.sigma2(t0)
    if variance == "analytic":
        v0 = optimal_variance(process, gamma, t0, None, data_bounds=data_bounds)
    else:
        v0 = -torch.expm1(-process.g2(torch.zeros_like(t0)))  # beta_0
    dec_const = 0.5 * torch.log(2 * math.pi * v0)
    dec_weight = sigma2_0 / (2 * alpha2_0 * v0)
    proposal = torch.cat([D2 / (2 * lam2), torch.zeros(1, dtype=torch.float64)])
    return times, torch.cat([kl_const, dec_const]), torch.cat([kl_weight, dec_weight]), proposal


def _errors(process, model, x, t: Tensor, generator) -> Tensor:
    """|eps - eps_pred(x_t, t)|^2 per sample (float64) for per-sample step indices t and fresh eps."""
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    t = t.to(x.device)
    eps_pred = _eps_pred(model, process.noise(x, t, eps), t.to(x.dtype), None).to(x.dtype)
    return _sq(eps_pred - eps).double()


def ddpm_chain_bounds(process: Process, model: Callable, x: Tensor, *, steps: int | None = None,
                      variances: tuple[str, ...] = ("beta",), gamma=None, t_samples: int | None = None,
                      generator: torch.Generator | None = None, sampling: str = "importance",
                      data_bounds: tuple[float, float] | None = None) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    r"""The K-step DDPM bound for several reverse variances from the same model evaluations (the noise term
    |eps - eps_pred|^2 does not depend on the variance): ({variance: (bound, stderr)}, model evaluations).

    ``t_samples=None``: every term with one x_t draw each (K evaluations). ``t_samples=k``:
      * ``sampling="importance"`` (default; every term instead when K <= k + 2, which costs no more): the prior KL and every term's constant part exactly; the decoder
        from two draws (its own standard error); the K-1 step KLs' noise parts from k draws of the step index,
        stratified on the CDF of the proposal q_i ∝ (SNR_{t_{i+1}} / SNR_{t_i} - 1) (uniform in log-SNR, what the
        terms scale with: each draw's value weight_i err_i / q_i is then O(d) for every i); row j is
        drawn from stratum [j/k, (j+1)/k) of the CDF. Unbiased; k + 2 evaluations.
      * ``sampling="uniform"``: the former estimator, k whole terms drawn uniformly (with replacement) and
        scaled by K; k evaluations. Kept to measure the gain.
    """
    if sampling not in ("importance", "uniform"):
        raise ConfigError(f"unknown sampling {sampling!r}; choose importance or uniform")
    batch, d = x.shape[0], x[0].numel()
    chains = {v: ddpm_chain(process, steps, v, gamma, data_bounds) for v in variances}
    times, _, _, proposal = next(iter(chains.values()))
    K = len(times)
    prior = ddpm_prior_kl(process, x).double()
    out = {}
    if t_samples is None or K == 1 or (sampling == "importance" and t_samples + 2 >= K):  # every term is as cheap
        # drawn from t = 0 upwards (the order of draws is part of the contract: fixed seeds give fixed bounds)
        errs = torch.stack([_errors(process, model, x, times[i].expand(batch), generator) for i in reversed(range(K))]).flip(0)
        for v, (_, const, weight, _) in chains.items():
            random = weight[:, None].to(x.device) * errs
            out[v] = (prior + d * const.sum().item() + random.sum(0), _collapsed_strata_stderr(random))
        return out, K
    k = int(t_samples)
    if sampling == "uniform":
        idx = torch.randint(0, K, (k, batch), generator=generator, device=x.device).cpu()
        errs = torch.stack([_errors(process, model, x, times[idx[j]], generator) for j in range(k)])
        for v, (_, const, weight, _) in chains.items():
            terms = K * (d * const[idx] + weight[idx] * errs.cpu()).to(x.device)  # (k, batch)
            se = terms.std(0) / math.sqrt(k) if k > 1 else torch.full_like(prior, float("nan"))
            out[v] = (prior + terms.mean(0), se)
        return out, k
    q = proposal[:-1] / proposal[:-1].sum()
    cdf = q.cumsum(0)
    u = (torch.arange(k, dtype=torch.float64)[:, None]
         + torch.rand(k, batch, generator=generator, dtype=torch.float64, device=x.device).cpu()) / k
    idx = torch.searchsorted(cdf, u.contiguous()).clamp_max(K - 2)  # (k, batch) step indices 0..K-2
    errs = torch.stack([_errors(process, model, x, times[idx[j]], generator) for j in range(k)]).cpu()
    dec = torch.stack([_errors(process, model, x, times[-1].expand(batch), generator) for _ in range(2)]).cpu()
    for v, (_, const, weight, _) in chains.items():
        rows = weight[idx] * errs / (k * q[idx])  # (k, batch): row j estimates stratum j's share of the sum
        dec_terms = weight[-1] * dec  # (2, batch)
        total = prior.cpu() + d * const.sum() + rows.sum(0) + dec_terms.mean(0)
        var = _collapsed_strata_stderr(rows) ** 2 + (dec_terms[0] - dec_terms[1]).pow(2) / 4
        out[v] = (total.to(x.device), var.sqrt().to(x.device))
    return out, k + 2


def ddpm_bound(process: Process, model: Callable, x: Tensor, *, generator: torch.Generator | None = None,
               t_samples: int | None = None, variance: str = "beta", steps: int | None = None, gamma=None,
               sampling: str = "importance", data_bounds: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, int]:
    """(bound, stderr, model evaluations) of the ``steps``-step chain (default all N): see ``ddpm_chain_bounds``."""
    out, nfe = ddpm_chain_bounds(process, model, x, steps=steps, variances=(variance,), gamma=gamma,
                                 t_samples=t_samples, generator=generator, sampling=sampling, data_bounds=data_bounds)
    bound, stderr = out[variance]
    return bound.to(x.dtype), stderr.to(x.dtype), nfe


def sde_bound(process: Process, model: Callable, x: Tensor, *, generator: torch.Generator | None = None,
              t_samples: int = SDE_T_SAMPLES, t_start: float | None = None) -> tuple[Tensor, Tensor, int]:
    """(bound, stderr, model evaluations) of the truncated continuous bound (module docstring)."""
    if t_samples < 2:
        raise ConfigError(f"the SDE bound needs t_samples >= 2 (strata for its standard error), got {t_samples}")
    batch, d, dtype = x.shape[0], x[0].numel(), x.dtype
    s0 = process.t_eps if t_start is None else float(t_start)
    ends = torch.tensor([s0, process.t_max], dtype=torch.float64, device=x.device)
    lam_s, lam_T = process.log_snr(ends).tolist()
    if abs(process.t_from_log_snr(torch.tensor([lam_s], dtype=torch.float64)).item() - s0) > 1e-6 * (process.t_max - s0):
        raise ConfigError(f"t_start={s0} is outside the range where {process!r} inverts its log-SNR; use t_start >= process.t_eps")
    Z = lam_s - lam_T
    log_a_s, log_a_T = process.log_alpha(ends).tolist()
    sigma2_s, sigma2_T = process.sigma2(ends).tolist()
    # E[-log p_T(x_T)] for x_T ~ N(a_T x, c_T^2 I), p_T = N(0, p^2 I), and -int f d dt = -d log(alpha_T / alpha_s)
    p2 = process.prior_std() ** 2
    a_T = math.exp(log_a_T - log_a_s)
    c2_T = sigma2_T - a_T**2 * sigma2_s
    closed = (0.5 * d * math.log(2 * math.pi * p2) + (a_T**2 * _sq(x).double() + d * c2_T) / (2 * p2)
              - d * (log_a_T - log_a_s))
    rows = []
    for k in range(t_samples):
        # stratum k of lambda, uniform within it: t has density Z^-1 g^2/sigma^2 on [s, T]
        u = (k + torch.rand(batch, generator=generator, dtype=torch.float64, device=x.device)) / t_samples
        t = process.t_from_log_snr(lam_T + Z * u)
        a = (process.log_alpha(t) - log_a_s).exp()
        sigma2 = process.sigma2(t)
        c2 = (sigma2 - a**2 * sigma2_s).clamp_min(0)
        weight = Z * sigma2 / (2 * c2)  # importance weight Z sigma^2/g^2 times the integrand's g^2/(2 c^2)
        mean = append_dims(a.to(dtype), x.ndim) * x
        c = append_dims(c2.sqrt().to(dtype), x.ndim)
        c_over_sigma = append_dims((c2 / sigma2).sqrt().to(dtype), x.ndim)  # eps_c = (c/sigma) eps_pred
        pairs = []
        for _ in range(2):
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype)
            eps_c_plus = c_over_sigma * model(mean + c * eps, t.to(dtype)).to(dtype)
            eps_c_minus = c_over_sigma * model(mean - c * eps, t.to(dtype)).to(dtype)
            odd = ((eps_c_plus - eps_c_minus) * eps).flatten(1).sum(1)
            even = (_sq(eps_c_plus) + _sq(eps_c_minus)) / 2
            explained = (odd / (2 * _sq(eps))).clamp(0, 1)  # k = d eps_c / d eps, from the central difference
            pairs.append((odd, even, _sq(eps) - d, explained))
        values = []
        for i, (odd, even, chi, _) in enumerate(pairs):
            k_other = pairs[1 - i][3]  # the other pair's k: independent of this eps, so the control stays unbiased
            values.append((1 - (1 - k_other) ** 2) * chi - odd + even)
        value = weight * ((values[0] + values[1]) / 2).double()
        rows.append(torch.where(c2 > 0, value, torch.zeros_like(value)))  # c = 0 only at t = s (measure zero)
    rows = torch.stack(rows)
    bound = closed + rows.mean(0)
    stderr = _collapsed_strata_stderr(rows) / t_samples
    return bound.to(dtype), stderr.to(dtype), 4 * t_samples


def bound_cost(process: Process, t_samples: int | None = None, steps: int | None = None) -> int:
    """Network evaluations per image of one ``variational_bound(process, ..., t_samples=t_samples, steps=steps)``.
    DDPM, K-step chain (K = ``steps``, default N): K for every term (``t_samples=None``), else ``t_samples`` + 2
    (the decoder's two draws), or K where summing every term costs no more. SDEs: 4 per time draw (two antithetic
    pairs), ``4 * (t_samples or SDE_T_SAMPLES)``. Equal to the ``nfe`` the bound reports with ``return_stats=True``."""
    if t_samples is not None and (not isinstance(t_samples, int) or t_samples < 1):
        raise ConfigError(f"t_samples must be a positive integer or None, got {t_samples!r}")
    if MARKOV_CHAIN not in process.offers:
        return 4 * (SDE_T_SAMPLES if t_samples is None else t_samples)
    chain = int(process.num_steps if steps is None else steps)
    if t_samples is None or chain == 1 or t_samples + 2 >= chain:
        return chain
    return t_samples + 2


def variational_bound(process: Process, model: Callable, x: Tensor, *, generator: torch.Generator | None = None,
                      t_samples: int | None = None, variance: str = "beta", t_start: float | None = None,
                      steps: int | None = None, gamma=None, data_bounds: tuple[float, float] | None = None,
                      return_stats: bool = False) -> Tensor | tuple[Tensor, dict]:
    r"""An upper bound on -log p(x) in nats per sample (summed over dimensions), shape (batch,).

    DDPM (a process that offers ``MARKOV_CHAIN``): the discrete bound on the model density of the clean x of the
    ``steps``-step chain a sampler walks (``process.timesteps(steps)``; default all N steps), with reverse
    variance ``variance`` = ``"beta"`` (default), ``"beta_tilde"`` or ``"analytic"`` (Bao et al. 2022's optimum,
    needs ``gamma = likelihood.estimate_gamma(...)`` or the path of a saved one; ``data_bounds=(a, b)`` adds
    the bounded-data clip, e.g. (-1, 1) for images). ``t_samples=None``: every term with one x_t draw each
    (``steps`` model evaluations); ``t_samples=k``: prior and decoder exact, the step KLs importance-sampled
    and stratified in log-SNR (k + 2 evaluations, unbiased; see ``ddpm_chain_bounds``).
    For continuous data beta is the tight fixed choice at N = 1000: on the tests' Gaussian mixture with the
    exact model the bound exceeds the exact NLL by ~0.00 nats/dim with beta and ~0.4 nats/dim with beta_tilde
    (which assumes x_0 is a point, so at small t it is overconfident); ``analytic`` is at least as tight as both.
    SDEs: the continuous bound on the model density at ``t_start`` (default ``process.t_eps``, as
    ``ode_nll``), ``t_samples`` stratified times (default 256, four model evaluations each).
    ``return_stats=True`` returns ``(bound, {"stderr": (batch,), "nfe": model evaluations})``, the
    standard error of the Monte Carlo estimate (conservative, see the module docstring).
    """
    if not x.is_floating_point():
        raise ConfigError(f"x must be a floating-point tensor (dequantize integer data first), got {x.dtype}")
    if t_samples is not None and (not isinstance(t_samples, int) or t_samples < 1):
        raise ConfigError(f"t_samples must be a positive integer or None, got {t_samples!r}")
    with torch.no_grad():
        if MARKOV_CHAIN not in process.offers:
            if steps is not None or gamma is not None:
                raise ConfigError("steps and gamma apply to the DDPM bound only; the SDE bound is continuous in time")
            bound, stderr, nfe = sde_bound(process, model, x, generator=generator, t_start=t_start,
                                           t_samples=SDE_T_SAMPLES if t_samples is None else t_samples)
        else:
            if t_start is not None:
                raise ConfigError("t_start applies to the SDE bound only; the DDPM bound is for the clean data")
            bound, stderr, nfe = ddpm_bound(process, model, x, generator=generator, t_samples=t_samples, variance=variance,
                                            steps=steps, gamma=gamma, data_bounds=data_bounds)
    if return_stats:
        return bound, {"stderr": stderr, "nfe": nfe}
    return bound
