"""The peers' adapters: each runs a peer's own solver on our exact eps model and x_T, counted by the same
``CountingModel`` as ours, and each loader skips its peer with a note when its source is missing.

Peers: Lu et al.'s official DPM-Solver (``dpm_solver_pytorch.py``), diffusers' schedulers, k-diffusion's samplers,
zju-pi/diff-sampler (its iPNDM, UniPC, DPM-Solver++, DEIS and GITS), and score_sde_pytorch's ODE likelihood.
k-diffusion and diff-sampler run in EDM's variables (``edm_space``). Their sources are fetched, not vendored.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import math
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import Tensor

from diffusion import processes
from diffusion.samplers import CountingModel

from .report import note
from .runs import Run


def official_dpm_solver(module, model, process, x_T: Tensor, skip_type: str, order: int = 2,
                        denoise: bool = False) -> Run:
    """Lu et al.'s DPM-Solver++ multistep (``order`` 2 or 3, lower_order_final) on DDPM(linear) through its
    discrete schedule (``model_wrapper`` maps its t to our step index) or on the VP SDE through its linear one,
    from t = 1 to t_end (1/N on DDPM, our t_min on VP): ``steps = NFE``, or with ``denoise`` ``NFE - 1`` plus
    denoise_to_zero (our endpoint: x0_pred at t_min)."""
    discrete = isinstance(process, processes.DDPM)
    ns = (module.NoiseScheduleVP("discrete", betas=process.betas.double()) if discrete else
          module.NoiseScheduleVP("linear", continuous_beta_0=process.beta_min, continuous_beta_1=process.beta_max))

    def run(nfe: int):
        counter = CountingModel(model)
        fn = module.model_wrapper(counter, ns, model_type="noise", model_kwargs={})
        solver = module.DPM_Solver(fn, ns, algorithm_type="dpmsolver++")
        steps = nfe - 1 if denoise else nfe
        if steps < 2:
            raise ValueError("multistep needs steps >= 2")
        x = solver.sample(x_T.clone(), steps=steps, t_end=None if discrete else process.t_min, order=order,
                          skip_type=skip_type, method="multistep", lower_order_final=True, denoise_to_zero=denoise)
        return x, counter.nfe
    return run


def diffusers_run(cls, model, x_T: Tensor, **config) -> Run:
    def run(nfe: int):
        counter = CountingModel(model)
        sched = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **config)
        sched.set_timesteps(nfe)
        x = x_T.clone()
        for t in sched.timesteps:
            eps = counter(x, torch.full((x.shape[0],), float(t), dtype=torch.float64))
            x = sched.step(eps, t, x).prev_sample
        return x, counter.nfe
    return run


def edm_space(model, process):
    """A process in EDM's variables (Karras et al. 2022, eq. 4 with s = alpha): x = x_process / alpha and sigma =
    sigma_process / alpha. Returns (denoiser(x, sigma) = x - sigma eps(alpha x, t(sigma)), sigma_min, sigma_max,
    alpha(t_max)): how k-diffusion and diff-sampler run our eps model on any process."""
    ends = torch.tensor([process.t_max, process.t_min], dtype=torch.float64)
    alpha_T = float(process.alpha(ends[:1]))
    sigma_max, sigma_min = (process.sigma(ends) / process.alpha(ends)).tolist()

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        t = process.t_from_log_snr(-2 * s.log())
        alpha = process.alpha(t).to(x.dtype)[:, None]
        return x - s.to(x.dtype)[:, None] * model(alpha * x, t)
    return denoiser, sigma_min, sigma_max, alpha_T


def k_diffusion_run(kd_sampling, fn_name: str, model, vp, x_T: Tensor, sigmas: str = "karras", **solver_kwargs) -> Run:
    """k-diffusion works in x / alpha with sigma = sigma_VP / alpha (``edm_space``)."""
    solver = getattr(kd_sampling, fn_name)
    evals_per_step = 2 if fn_name == "sample_heun" else 1

    def run(nfe: int):
        counter = CountingModel(model)
        denoiser, sigma_min, sigma_max, alpha_T = edm_space(counter, vp)
        # Heun: 2 evaluations per step, 1 on the last (Euler to sigma = 0): 2 m - 1 for m sigmas
        m = (nfe + 1) // 2 if evals_per_step == 2 else nfe
        grid = (kd_sampling.get_sigmas_karras(m, sigma_min, sigma_max, rho=7.0) if sigmas == "karras" else
                kd_sampling.get_sigmas_exponential(m, sigma_min, sigma_max)).to(x_T.dtype)
        x = solver(denoiser, x_T / alpha_T, grid, disable=True, **solver_kwargs)
        return x, counter.nfe
    return run


class _DiffSamplerNet:
    """What zju-pi/diff-sampler's solvers call: net(x, sigma, class_labels=None) -> denoised, on images
    (b, C, R, R); a d-vector is the image (b, d, 1, 1)."""

    label_dim, img_resolution = 0, 1

    def __init__(self, denoiser, dim: int):
        self.denoiser, self.img_channels = denoiser, dim

    def __call__(self, x: Tensor, sigma, class_labels=None) -> Tensor:
        return self.denoiser(x.flatten(1), sigma).reshape(x.shape)


def diff_sampler_run(ds, solver: str, model, process, x_T: Tensor, schedule: str = "polynomial", afs: bool = False,
                     gits: bool = False, **solver_kwargs) -> Run:
    """zju-pi/diff-sampler (Zhou et al.): ``solver`` in its ``solvers.py`` on ``schedule`` (polynomial = Karras rho
    7, logsnr, time_uniform) from sigma_max to sigma_min of ``process`` in EDM variables, or with ``gits`` on its
    GITS grid (``gits_utils.get_dp_list``: iPNDM teacher on 61 polynomial times, metric dev, coeff 1.15, 256
    warm-up draws; the settings of its launch.sh). ``afs``: analytical first step (one NFE fewer per grid)."""
    dim = x_T.shape[1]

    def run(nfe: int):
        counter = CountingModel(model)
        denoiser, sigma_min, sigma_max, alpha_T = edm_space(counter, process)
        net = _DiffSamplerNet(denoiser, dim)
        kwargs = dict(num_steps=nfe + 1 + int(afs), sigma_min=sigma_min, sigma_max=sigma_max, schedule_type=schedule,
                      schedule_rho=7.0, afs=afs, **solver_kwargs)
        if gits:
            kwargs["t_steps"] = _diff_sampler_gits(ds, _DiffSamplerNet(edm_space(model, process)[0], dim), kwargs)
        else:
            kwargs["t_steps"] = ds.solver_utils.get_schedule(kwargs["num_steps"], sigma_min, sigma_max,
                                                             schedule_type=schedule, schedule_rho=7.0)
        kwargs["t_steps"] = kwargs["t_steps"].to(torch.float64)
        if solver == "deis":
            kwargs["coeff_list"] = ds.solver_utils.get_deis_coeff_list(kwargs["t_steps"], solver_kwargs.get("max_order", 4))
        latents = (x_T / alpha_T / sigma_max)[:, :, None, None]  # the solvers start at latents * sigma_max
        x = getattr(ds.solvers, f"{solver}_sampler")(net, latents, **kwargs)
        return x.flatten(1).to(x_T.dtype), counter.nfe
    return run


def _diff_sampler_gits(ds, net, kwargs) -> Tensor:
    """Its GITS grid for kwargs["num_steps"] times (fitted anew for every run: 61 calls on 256 draws)."""
    torch.manual_seed(50)  # its warm-up latents come from the global generator
    settings = dict(kwargs, dataset_name="mixture", num_warmup=256, max_batch_size=256, num_steps_tea=61,
                    metric="dev", coeff=1.15, model_source="edm", solver_tea="ipndm", solver="ipndm", prompt=None)
    with contextlib.redirect_stdout(io.StringIO()):
        dp_list = ds.gits_utils.get_dp_list(net, "cpu", **settings)
    return ds.solver_utils.get_schedule(61, kwargs["sigma_min"], kwargs["sigma_max"], schedule_type="polynomial",
                                        schedule_rho=7.0, dp_list=dp_list)


def load_diff_sampler(path: str | None):
    """zju-pi/diff-sampler's gits-main folder (its solvers.py holds the diff-solvers samplers too); its GITS
    all-reduces the cost matrix, so a one-process gloo group is started."""
    if not path or not (Path(path) / "gits_utils.py").is_file():
        note(f"diff-sampler skipped: no gits-main folder at --diff-sampler-path={path} (fetch zju-pi/diff-sampler)")
        return None
    sys.path.insert(0, str(path))
    try:
        module = types.SimpleNamespace(solvers=importlib.import_module("solvers"),
                                       solver_utils=importlib.import_module("solver_utils"),
                                       gits_utils=importlib.import_module("gits_utils"))
    except Exception as err:  # noqa: BLE001 - a peer that does not import is skipped with its reason
        note(f"diff-sampler skipped: import failed ({err!r})")
        return None
    finally:
        sys.path.remove(str(path))
    # its data-prediction solvers clip x0 per image to [-1, 1] (dynamic thresholding, for pixels in [-1, 1]); the
    # mixture's data exceed 1, so the clip is switched off to compare the solvers themselves
    module.solvers.dynamic_thresholding_fn = module.solver_utils.dynamic_thresholding_fn = lambda x0: x0
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method=f"file://{Path(tempfile.mkdtemp()) / 'store'}",
                                             rank=0, world_size=1)
    return module


def load_official(path: str | None):
    """Lu et al.'s ``dpm_solver_pytorch.py`` as a module."""
    if not path or not Path(path).is_file():
        note(f"official DPM-Solver skipped: no file at --dpm-solver-path={path}")
        return None
    spec = importlib.util.spec_from_file_location("dpm_solver_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_k_diffusion():
    """k_diffusion.sampling; if the package's __init__ fails (its evaluation module imports clip, which needs
    pkg_resources), load the sampling module alone, with a stand-in for torchsde (used only by SDE noise samplers)."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception as err:  # noqa: BLE001 - any import failure: try the lone module, else skip
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            note("k-diffusion skipped: not installed")
            return None
        for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
            del sys.modules[name]
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
        if importlib.util.find_spec("torchsde") is None:
            stand_in = types.ModuleType("torchsde")
            stand_in.__spec__ = importlib.machinery.ModuleSpec("torchsde", None)  # diffusers probes find_spec
            sys.modules["torchsde"] = stand_in
        try:
            module = importlib.import_module("k_diffusion.sampling")
        except Exception as err2:  # noqa: BLE001
            note(f"k-diffusion skipped: import failed ({err!r}; lone sampling module: {err2!r})")
            return None
        note(f"`import k_diffusion` fails ({type(err).__name__}: {err}); loaded k_diffusion.sampling alone")
        return module


def load_score_sde(path: str | None):
    """score_sde_pytorch's (likelihood, sde_lib) modules from a checkout."""
    if not path or not (Path(path) / "likelihood.py").is_file():
        note(f"score_sde_pytorch skipped: no likelihood.py under --score-sde-path={path}")
        return None
    if not (Path(path) / "models" / "__init__.py").exists():
        note(f"score_sde_pytorch skipped: {path}/models/__init__.py is missing (create an empty one there)")
        return None
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("likelihood"), importlib.import_module("sde_lib")
    except Exception as err:  # noqa: BLE001
        note(f"score_sde_pytorch skipped: import failed ({err!r})")
        return None


def score_sde_nll(lik, sde_lib, eps_model, x: Tensor, d: int, tol: float, seed: int):
    """score_sde_pytorch's likelihood_fn on our exact eps: its VP continuous path calls model(x, 999 t) and takes
    score = -model / std, so the fake model returns eps(x, label / 999). Its probes come from the global RNG.
    Returns (NLL in nats per sample, NFE, seconds)."""
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)

    class FakeScoreModel(torch.nn.Module):  # it calls model.eval()
        def forward(self, xx: Tensor, labels: Tensor) -> Tensor:
            return eps_model(xx, labels.double() / 999.0)

    counter = CountingModel(FakeScoreModel())
    fn = lik.get_likelihood_fn(sde, inverse_scaler=lambda v: v + 8.0, rtol=tol, atol=tol)  # offset 7 - (-1 + 8) = 0
    side = int(math.isqrt(d))
    shape = (x.shape[0], 1, side, side) if side * side == d else (x.shape[0], 1, 1, d)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    bpd, _, nfe = fn(counter, x.float().reshape(shape))
    sec = time.perf_counter() - t0
    return bpd.double() * math.log(2) * d, nfe, sec
