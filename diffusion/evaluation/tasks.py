"""The tasks of ``evaluate.py`` (``configs/evaluate.yaml``, typed by ``config.EvaluateConfig``): one function each,
``cfg -> result dict``, writing into ``<run>/eval`` (or ``out=``) and printing its table.

- ``likelihood``: ODE NLL and the variational bounds in bits/dim on the test split (``likelihood_table``).
- ``sweep``: quality against NFE for several samplers (``sweep``), optionally on grids fitted to the model.
- ``fid``: the quality scores of a set of samples (``quality``).
- ``schedule``: a time grid (and iPNDM weights) fitted to the model (``schedule``).
- ``export``: the run as a diffusers folder (``diffusion.pretrained``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion.consistency import ConsistencyModel
from diffusion.device import pick_device
from diffusion.errors import ConfigError, EvaluationError
from diffusion.evaluation.config import count
from diffusion.evaluation.quality import data_quality, dataset_images, digit_reference, quality_table
from diffusion.runs import TrainedRun, load_run, run_dir_of
from diffusion.runs.store import json_safe, load_images
from diffusion.samplers import SamplerSpec, sampler_from_config
from diffusion.utils import write_json, write_text


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def switch(key: str, value: str) -> bool | str:
    """An ``auto | true | false`` option (``fid.inception``, ``fid.digit_fd``) as "auto", True or False."""
    v = str(value).lower()
    if v in ("auto",):
        return "auto"
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}={value!r}: expected auto, true or false")


def out_dir(cfg: DictConfig, path: Path | None, fallback: Path | None = None) -> Path:
    """``out=``, else ``<run>/eval`` of the checkpoint at ``path``, else ``fallback`` (or ``eval``)."""
    if cfg.out:
        return Path(cfg.out)
    if path is not None:
        return run_dir_of(path) / "eval"
    return fallback or Path("eval")


def load(cfg: DictConfig) -> tuple[TrainedRun, torch.device]:
    """The run of ``ckpt=`` on the configured device; a one-line error when the task has none."""
    if not cfg.ckpt:
        raise EvaluationError(f"task={cfg.task.value} needs ckpt=<train.py run folder or checkpoint file>")
    device = pick_device(cfg.device)
    trained = load_run(cfg.ckpt, cfg.ema, device, cfg.trust_checkpoint_config)
    if cfg.data is not None and trained.cfg.get("data") is None:  # an imported model: the data the user names
        trained.cfg.data = cfg.data
    return trained, device


def quality_of(cfg: DictConfig, shape, data_cfg: DictConfig | None, device):
    """The scores ``fid.*`` asks for, of samples of ``shape`` against ``data_cfg`` (``quality.data_quality``)."""
    return data_quality(tuple(shape), data_cfg, fid=switch("fid.inception", cfg.fid.inception),
                        digit_fd=switch("fid.digit_fd", cfg.fid.digit_fd), inception_weights=cfg.fid.inception_weights,
                        inception_url=cfg.fid.inception_url, device=device, log=_log)


def likelihood(cfg: DictConfig) -> dict:
    from diffusion.evaluation.likelihood_table import likelihood_table, stored_gamma
    from diffusion.likelihood.analytic import Gamma, gamma_path
    from diffusion.likelihood.bound import VARIANCES
    from diffusion.processes import MARKOV_CHAIN

    trained, device = load(cfg)
    model, process, path = trained.model, trained.process, trained.path
    if isinstance(model, ConsistencyModel):  # its eps is f's, not a score: an "ODE likelihood" of it means nothing
        raise EvaluationError(f"{path} is a consistency model (distill=consistency): it maps x_t to the end of its "
                              "ODE in one call and defines no probability-flow ODE, so it has no ODE likelihood "
                              "or bound; evaluate its teacher instead (distill.teacher in its config.yaml)")
    n = count(cfg)
    images = dataset_images(trained.data("test"))[:n]
    if len(images) < n:
        _log(f"note: the test split has only {len(images)} images (n={n})")
    lc = cfg.likelihood
    dtype = getattr(torch, lc.dtype.value)
    variances = tuple(v.value for v in lc.variances)
    if not variances:
        raise EvaluationError(f"likelihood.variances=[]: choose from {', '.join(VARIANCES)}, e.g. [beta_tilde,analytic]")
    print(f"likelihood of {len(images)} test images under {path} ({'EMA' if cfg.ema else 'raw'} weights, {process!r}) on {device}")
    gamma = None
    # Analytic-DPM's Gamma, for the Markov-chain (DDPM) bounds with variance=analytic: estimated once per checkpoint,
    # kept in <run>/eval for those bounds and the samplers' variance=analytic
    if lc.bound and MARKOV_CHAIN in process.offers and "analytic" in variances:
        if lc.gamma:  # the user's file, as it is
            gamma = Gamma.load(lc.gamma)
        else:
            gamma = stored_gamma(process, model, gamma_path(trained.run_dir, cfg.ema), str(path),
                                 lambda: dataset_images(trained.data("train")), steps=int(lc.gamma_steps),
                                 images_per_step=int(lc.gamma_images), seed=int(cfg.seed), batch_size=int(cfg.batch_size),
                                 device=device, dtype=dtype, progress=cfg.progress, log=_log)
    table = likelihood_table(process, model, images, ode=lc.ode, bound=lc.bound, method=lc.method, rtol=lc.rtol,
                             atol=lc.atol, divergence=lc.divergence.value, probes=int(lc.probes),
                             t_samples=None if lc.t_samples is None else int(lc.t_samples),
                             batch_size=int(cfg.batch_size), seed=int(cfg.seed), device=device, dtype=dtype,
                             progress=cfg.progress, sde_bound=lc.sde_bound,
                             steps=None if lc.steps is None else int(lc.steps), variances=variances, gamma=gamma)
    table.settings.update(checkpoint=str(path), ema=cfg.ema, split="test")
    out = out_dir(cfg, path)
    out.mkdir(parents=True, exist_ok=True)
    md = table.to_markdown()
    write_text(out / "likelihood.md", md)
    write_text(out / "likelihood.json", table.to_json())
    print(md + f"\nwrote {out / 'likelihood.md'} and {out / 'likelihood.json'}")
    return {"table": table, "out": out}


def sweep(cfg: DictConfig) -> dict:
    from diffusion.evaluation.sweep import markdown_table, run_sweep, save_sweep
    from diffusion.fitting import fitted_options

    trained, device = load(cfg)
    n = count(cfg)
    names = list(cfg.sweep.samplers)
    steps = [int(s) for s in cfg.sweep.steps]
    if not names or not steps:
        raise EvaluationError("sweep.samplers and sweep.steps must be non-empty lists, e.g. sweep.steps=[5,10,20]")
    overrides = OmegaConf.to_container(cfg.sweep.options, resolve=True) if cfg.sweep.options else {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise EvaluationError(f"sweep.options names {', '.join(unknown)}, which is not in sweep.samplers={names}")
    specs = [SamplerSpec(name, steps[0], **(overrides.get(name) or {})).check(trained.process) for name in names]
    if not cfg.sweep.fitted and any("coefficients" in fitted_options(spec) for spec in specs):
        raise EvaluationError("coefficients=fitted are fitted together with a grid: add sweep.fitted=true (the "
                              "fixed grids then walk Adams-Bashforth's weights)")
    shape, note = trained.shape()
    if note:
        _log(f"note: {note}")
    quality = quality_of(cfg, shape, trained.cfg.data, device)
    out = out_dir(cfg, trained.path) / "sweep"
    print(f"sweep of {names} x steps {steps}, {n} samples per row, from {trained.path} ({trained.process!r}) on {device}")
    rows = run_sweep(trained.process, trained.model, shape, specs, steps, n=n, batch_size=int(cfg.batch_size),
                     seed=int(cfg.seed), device=device, quality=quality, num_classes=trained.num_classes,
                     grid_dir=out if cfg.sweep.grids else None, progress=cfg.progress, log=_log,
                     fitted=fitted_grid(cfg, trained, shape, device) if cfg.sweep.fitted else None)
    notes = list(quality.notes)
    if quality.digits is not None:
        notes.append(f"digit FD/KID: in the shipped digit classifier's 128-d features (test accuracy "
                     f"{quality.digits.digits.test_accuracy:.2%}) against the MNIST5k test split; FD only at equal n")
    files = save_sweep(rows, out, notes, extra={"checkpoint": str(trained.path), "quality": quality.describe(),
                                                "samplers": {spec.name: spec.options for spec in specs}},
                       title=f"{trained.process!r}, n={n}")
    print(markdown_table(rows, notes) + f"\nwrote {files['md']}, {files['json']} and {files['png']}")
    return {"rows": rows, "files": files}


def fitted_grid(cfg: DictConfig, trained: TrainedRun, shape, device) -> Callable[[SamplerSpec, int], dict]:
    """``(spec, steps) -> {timesteps[, coefficients]}`` for ``sweep.fitted``: ``spec`` at ``steps`` on the run's
    fitted grid (``fitting.resolve_sampler``): from the schedule file of task=schedule for that sampler, its options
    and steps, fitted now with ``schedule.*`` where none fitted with the same settings exists yet; the weights too
    where the sampler has coefficients=fitted."""
    from diffusion.fitting import on_fitted_grid, resolve_sampler

    def walk(spec: SamplerSpec, steps: int) -> dict:
        fitted = resolve_sampler(on_fitted_grid(spec.replace(steps=steps)), trained.process, trained.model, shape,
                                 schedules_dir=out_dir(cfg, trained.path) / "schedules", refine=cfg.schedule.refine,
                                 fine_steps=int(cfg.schedule.fine_steps), n=int(cfg.schedule.n), seed=int(cfg.seed),
                                 device=device, meta=trained.provenance, log=_log)
        return {option: fitted.options[option] for option in fitted.sources}

    return walk


def fid(cfg: DictConfig) -> dict:
    from diffusion.evaluation.quality import DIGIT_SHAPE
    from diffusion.pretrained import is_diffusers_source
    from diffusion.runs import saved_config

    if not cfg.samples:
        raise EvaluationError("task=fid needs samples=<file.npz or folder of images>")
    images, _ = load_images(cfg.samples)
    device = pick_device(cfg.device)
    path = None
    if cfg.ckpt and not is_diffusers_source(cfg.ckpt):  # a diffusers model names no data set: data= says it
        run_cfg, path = saved_config(cfg.ckpt, trust=cfg.trust_checkpoint_config)
        data_cfg = run_cfg.data
    elif cfg.data is not None:
        data_cfg = cfg.data
    elif tuple(images.shape[1:]) == DIGIT_SHAPE:  # 28x28 digits: the bundled MNIST5k is the reference
        data_cfg = digit_reference()
    else:
        raise EvaluationError("task=fid: pass ckpt=<run> or data=<a configs/data option, e.g. cifar10> "
                              "to say what the samples are compared with")
    quality = quality_of(cfg, images.shape[1:], data_cfg, device)
    scores = quality(images)
    samples = Path(cfg.samples)
    out = out_dir(cfg, path, samples if samples.is_dir() else samples.parent)
    out.mkdir(parents=True, exist_ok=True)
    result = {"samples": str(samples), "n": len(images), "reference": data_cfg.get("_target_"), **scores,
              "quality": quality.describe()}
    write_json(out / "fid.json", json_safe(result), indent=2, allow_nan=False)
    print(f"{quality_table(scores, len(images), str(samples))}\nwrote {out / 'fid.json'}")
    return result


def schedule(cfg: DictConfig) -> dict:
    from diffusion.fitting import fit_schedule, fitted_options

    trained, device = load(cfg)
    spec = sampler_from_config(cfg.sampler) if cfg.sampler is not None else SamplerSpec("ipndm", 10)
    steps = int(cfg.steps) if cfg.steps is not None else spec.steps
    spec.check(trained.process)
    shape, _ = trained.shape()
    out, times = fit_schedule(trained.process, trained.model, shape, spec.name, steps,
                              out_dir(cfg, trained.path) / "schedules", n=count(cfg), seed=int(cfg.seed),
                              device=device, fine_steps=int(cfg.schedule.fine_steps), refine=cfg.schedule.refine,
                              options=spec.options, meta=trained.provenance)
    weights = f" sampler.coefficients={out}" if "coefficients" in fitted_options(spec) else ""
    print(f"{spec.name}, {steps} NFE: times {', '.join(f'{t:.4g}' for t in times)}\nwrote {out}; use it with "
          f"`python sample.py ckpt={cfg.ckpt} sampler={spec.name} sampler.timesteps={out}{weights}`")
    return {"path": out, "timesteps": times}


def export(cfg: DictConfig) -> dict:
    from diffusion.pretrained import export_diffusers

    if not cfg.out:
        raise EvaluationError("task=export needs out=<folder> for the diffusers model")
    trained, _ = load(cfg)
    shape, _ = trained.shape()
    if shape[-1] != shape[-2]:
        raise EvaluationError(f"the run's images are {shape[-2]}x{shape[-1]}; diffusers' sample_size is one side")
    out = export_diffusers(trained.model, trained.process, trained.cfg.model, cfg.out, sample_size=shape[-1])
    print(f"wrote {out} (UNet2DModel + DDPMScheduler, {trained.process!r}); load it with "
          f"diffusers.DDPMPipeline.from_pretrained({str(out)!r})")
    if trained.process.name != "ddpm":  # a VP SDE: its chain at the labels 999 t (diffusion.pretrained.scheduler)
        _log("note: the DDPMScheduler walks the VP SDE's chain at t = i/999; at i = 0 diffusers feeds label 0 where "
             "this run's model uses 999 t_eps")
    return {"out": out}


TASKS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {"likelihood": likelihood, "sweep": sweep, "fid": fid,
                                                            "schedule": schedule, "export": export}


def run(cfg: DictConfig) -> dict:
    """``evaluate.py``: the task ``cfg.task`` names."""
    return TASKS[cfg.task.value](cfg)
