#!/usr/bin/env python
"""Evaluate a trained model: likelihoods, a sampler sweep, or FID of a set of samples.

    python evaluate.py ckpt=runs/<run> task=likelihood                  # ODE NLL, SDE and DDPM bounds, bits/dim
    python evaluate.py ckpt=runs/<run> task=likelihood likelihood.divergence=exact likelihood.t_samples=null
    python evaluate.py ckpt=runs/<run> task=sweep sweep.samplers=[ddim,dpmpp_2m] sweep.steps=[5,10,20] n=1000
    python evaluate.py task=fid samples=runs/<run>/samples/ddim_50_seed0/samples.npz [ckpt=runs/<run> | data=cifar10]
    python evaluate.py task=fid samples=my_pngs/ data=folder data.root=real_pngs/ data.image_size=64
    python evaluate.py ckpt=runs/<run> task=schedule sampler=ipndm steps=5   # GITS grid -> eval/schedules/ipndm_5.json

Results go to <run>/eval/ (likelihood.md|json, gamma_ema.json (Analytic-DPM's Gamma, reused by samplers),
sweep/sweep.md|json|png, fid.json) and the tables are printed.
Quality: FID and KID through torch-fidelity's Inception when its weights can be had (else "n/a" with a one-line
reason), and for MNIST the digit FD/KID report of the shipped digit classifier; each beside its floor at the same n. A bad request is one line on
stderr and exit code 2. Configuration: configs/evaluate.yaml.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf


def _switch(key: str, value: str) -> bool | str:
    from diffusion.errors import ConfigError

    v = str(value).lower()
    if v in ("auto",):
        return "auto"
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}={value!r}: expected auto, true or false")


def _out_dir(cfg: DictConfig, path: Path | None, fallback: Path | None = None) -> Path:
    from diffusion.runs import run_dir_of

    if cfg.out:
        return Path(cfg.out)
    if path is not None:
        return run_dir_of(path) / "eval"
    return fallback or Path("eval")


def _load(cfg: DictConfig):
    from diffusion.device import pick_device
    from diffusion.errors import EvaluationError
    from diffusion.runs import load_run

    if not cfg.ckpt:
        raise EvaluationError(f"task={cfg.task.value} needs ckpt=<train.py run folder or checkpoint file>")
    device = pick_device(cfg.device)
    return load_run(cfg.ckpt, cfg.ema, device, cfg.trust_checkpoint_config), device


def _count(n, default, what: str) -> int:
    """The top-level ``n=`` (``default`` when unset): a positive count, else a one-line error (a negative n would
    slice [:n] and silently drop images)."""
    from diffusion.errors import EvaluationError

    given = default if n is None else n
    if int(given) < 1:
        raise EvaluationError(f"n={given} must be a positive number of {what}")
    return int(given)


def _quality(cfg: DictConfig, shape, data_cfg: DictConfig | None, device):
    from diffusion.evaluation.quality import build_quality, dataset_images
    from diffusion.runs import build_data

    def reference():
        return dataset_images(build_data(data_cfg, "train"))

    def heldout():  # real images FID's floor is measured on: the test split, where the data set has one
        try:
            return dataset_images(build_data(data_cfg, "test"))
        except Exception:  # noqa: BLE001 - no test split (a folder of images): no floor
            return None

    has_data = data_cfg is not None  # a run without its data config: no reference images, no floor
    return build_quality(tuple(shape), reference if has_data else None,
                         data_target=data_cfg.get("_target_") if has_data else None,
                         fid=_switch("fid.inception", cfg.fid.inception),
                         digit_fd=_switch("fid.digit_fd", cfg.fid.digit_fd),
                         inception_weights=cfg.fid.inception_weights, inception_url=cfg.fid.inception_url,
                         device=device, log=lambda m: print(m, file=sys.stderr), heldout=heldout if has_data else None)


def likelihood(cfg: DictConfig) -> dict:
    from diffusion.errors import EvaluationError
    from diffusion.evaluation.likelihood_table import likelihood_table, stored_gamma
    from diffusion.evaluation.quality import dataset_images
    from diffusion.likelihood.analytic import Gamma, gamma_path
    from diffusion.likelihood.bound import VARIANCES
    from diffusion.processes import MARKOV_CHAIN

    trained, device = _load(cfg)
    model, process, path = trained.model, trained.process, trained.path
    n = _count(cfg.n, LIKELIHOOD_N, "test images")
    images = dataset_images(trained.data("test"))[:n]
    if len(images) < n:
        print(f"note: the test split has only {len(images)} images (n={n})", file=sys.stderr)
    lc = cfg.likelihood
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(lc.dtype)
    if dtype is None:
        raise EvaluationError(f"likelihood.dtype={lc.dtype!r}: use float32 or float64")
    variances = tuple(str(v) for v in lc.variances)
    bad = [v for v in variances if v not in VARIANCES]
    if bad or not variances:
        raise EvaluationError(f"likelihood.variances={list(variances)}: choose from {', '.join(VARIANCES)}, e.g. [beta_tilde,analytic]")
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
                                 device=device, dtype=dtype, progress=cfg.progress, log=lambda m: print(m, file=sys.stderr))
    table = likelihood_table(process, model, images, ode=lc.ode, bound=lc.bound, method=lc.method, rtol=lc.rtol,
                             atol=lc.atol, divergence=lc.divergence.value, probes=int(lc.probes),
                             t_samples=None if lc.t_samples is None else int(lc.t_samples),
                             batch_size=int(cfg.batch_size), seed=int(cfg.seed), device=device, dtype=dtype,
                             progress=cfg.progress, sde_bound=lc.sde_bound,
                             steps=None if lc.steps is None else int(lc.steps), variances=variances, gamma=gamma)
    table.settings.update(checkpoint=str(path), ema=cfg.ema, split="test")
    out = _out_dir(cfg, path)
    out.mkdir(parents=True, exist_ok=True)
    md = table.to_markdown()
    (out / "likelihood.md").write_text(md)
    (out / "likelihood.json").write_text(table.to_json())
    print(md + f"\nwrote {out / 'likelihood.md'} and {out / 'likelihood.json'}")
    return {"table": table, "out": out}


#: default number of test images for task=likelihood (and of samples per row for task=sweep)
LIKELIHOOD_N, SWEEP_N = 32, 256


def sweep(cfg: DictConfig) -> dict:
    from diffusion.errors import EvaluationError
    from diffusion.evaluation.sweep import markdown_table, run_sweep, save_sweep
    from diffusion.samplers import SamplerSpec
    from diffusion.samplers.common import FITTED

    trained, device = _load(cfg)
    n = _count(cfg.n, SWEEP_N, "samples per row")
    names = list(cfg.sweep.samplers)
    steps = [int(s) for s in cfg.sweep.steps]
    if not names or not steps:
        raise EvaluationError("sweep.samplers and sweep.steps must be non-empty lists, e.g. sweep.steps=[5,10,20]")
    overrides = OmegaConf.to_container(cfg.sweep.options, resolve=True) if cfg.sweep.options else {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise EvaluationError(f"sweep.options names {', '.join(unknown)}, which is not in sweep.samplers={names}")
    specs = [SamplerSpec(name, steps[0], **(overrides.get(name) or {})).check(trained.process) for name in names]
    if not cfg.sweep.fitted and any(spec.options.get("coefficients") == FITTED for spec in specs):
        raise EvaluationError("coefficients=fitted are fitted together with a grid: add sweep.fitted=true (the "
                              "fixed grids then walk Adams-Bashforth's weights)")
    shape, note = trained.shape()
    if note:
        print(f"note: {note}", file=sys.stderr)
    quality = _quality(cfg, shape, trained.cfg.data, device)
    out = _out_dir(cfg, trained.path) / "sweep"
    print(f"sweep of {names} x steps {steps}, {n} samples per row, from {trained.path} ({trained.process!r}) on {device}")
    rows = run_sweep(trained.process, trained.model, shape, specs, steps, n=n, batch_size=int(cfg.batch_size),
                     seed=int(cfg.seed), device=device, quality=quality, num_classes=trained.num_classes,
                     grid_dir=out if cfg.sweep.grids else None, progress=cfg.progress,
                     log=lambda m: print(m, file=sys.stderr),
                     fitted=_fitted_grid(cfg, trained, shape, device) if cfg.sweep.fitted else None)
    notes = list(quality.notes)
    if quality.digits is not None:
        notes.append(f"digit FD/KID: in the shipped digit classifier's 128-d features (test accuracy "
                     f"{quality.digits.digits.test_accuracy:.2%}) against the MNIST5k test split; FD only at equal n")
    files = save_sweep(rows, out, notes, extra={"checkpoint": str(trained.path), "quality": quality.describe(),
                                                "samplers": {spec.name: spec.options for spec in specs}},
                       title=f"{trained.process!r}, n={n}")
    print(markdown_table(rows, notes) + f"\nwrote {files['md']}, {files['json']} and {files['png']}")
    return {"rows": rows, "files": files}


def _fitted_grid(cfg: DictConfig, trained, shape, device):
    """``(spec, steps) -> {timesteps[, coefficients]}`` for ``sweep.fitted``: from the schedule file of task=schedule
    for that sampler, its options and steps (``fitted_schedule``), fitted now with ``schedule.*`` on 256 prior draws
    where none fitted with the same settings exists yet; the weights too where the sampler has coefficients=fitted."""
    from diffusion.evaluation.schedule import fitted_schedule
    from diffusion.samplers.coefficients import load_coefficients
    from diffusion.samplers.common import FITTED
    from diffusion.samplers.gits import load_timesteps

    def walk(spec, steps: int) -> dict:
        path = fitted_schedule(
            trained.process, trained.model, shape, spec.name, steps, spec.options,
            _out_dir(cfg, trained.path) / "schedules", refine=cfg.schedule.refine,
            fine_steps=int(cfg.schedule.fine_steps), n=int(cfg.schedule.n), seed=int(cfg.seed), device=device,
            meta=trained.weights,
            log=lambda m: print(m, file=sys.stderr))
        weights = {"coefficients": load_coefficients(path)} if spec.options.get("coefficients") == FITTED else {}
        return {"timesteps": load_timesteps(path), **weights}

    return walk


def fid(cfg: DictConfig) -> dict:
    from diffusion.device import pick_device
    from diffusion.errors import EvaluationError
    from diffusion.evaluation.quality import DIGIT_SHAPE, quality_table
    from diffusion.runs import config_from_checkpoint
    from diffusion.runs.store import json_safe, load_images
    from diffusion.training.checkpoint import load_checkpoint

    if not cfg.samples:
        raise EvaluationError("task=fid needs samples=<file.npz or folder of images>")
    images, _ = load_images(cfg.samples)
    device = pick_device(cfg.device)
    path = None
    if cfg.ckpt:
        state = load_checkpoint(cfg.ckpt)
        data_cfg, path = config_from_checkpoint(state, trust=cfg.trust_checkpoint_config).data, Path(state["path"])
    elif cfg.data is not None:
        data_cfg = cfg.data
    elif tuple(images.shape[1:]) == DIGIT_SHAPE:  # 28x28 digits: the bundled MNIST5k is the reference
        data_cfg = OmegaConf.load(Path(__file__).resolve().parent / "configs" / "data" / "mnist5k.yaml")
    else:
        raise EvaluationError("task=fid: pass ckpt=<run> or data=<a configs/data option, e.g. cifar10> "
                                  "to say what the samples are compared with")
    quality = _quality(cfg, images.shape[1:], data_cfg, device)
    scores = quality(images)
    samples = Path(cfg.samples)
    out = _out_dir(cfg, path, samples if samples.is_dir() else samples.parent)
    out.mkdir(parents=True, exist_ok=True)
    result = {"samples": str(samples), "n": len(images), "reference": data_cfg.get("_target_"), **scores,
              "quality": quality.describe()}
    (out / "fid.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
    print(f"{quality_table(scores, len(images), str(samples))}\nwrote {out / 'fid.json'}")
    return result


def schedule(cfg: DictConfig) -> dict:
    from diffusion.evaluation.schedule import fit_schedule
    from diffusion.samplers import SamplerSpec, sampler_from_config
    from diffusion.samplers.common import FITTED

    trained, device = _load(cfg)
    spec = sampler_from_config(cfg.sampler) if cfg.sampler is not None else SamplerSpec("ipndm", 10)
    steps = int(cfg.steps) if cfg.steps is not None else spec.steps
    spec.check(trained.process)
    shape, _ = trained.shape()
    out, times = fit_schedule(trained.process, trained.model, shape, spec.name, steps,
                              _out_dir(cfg, trained.path) / "schedules",
                              n=int(cfg.schedule.n) if cfg.n is None else int(cfg.n),
                              seed=int(cfg.seed),
                              device=device, fine_steps=int(cfg.schedule.fine_steps),
                              refine=cfg.schedule.refine,
                              options=spec.options,
                              meta=trained.weights)
    weights = f" sampler.coefficients={out}" if spec.options.get("coefficients") == FITTED else ""
    print(f"{spec.name}, {steps} NFE: times {', '.join(f'{t:.4g}' for t in times)}\nwrote {out}; use it with "
          f"`python sample.py ckpt={cfg.ckpt} sampler={spec.name} sampler.timesteps={out}{weights}`")
    return {"path": out, "timesteps": times}


TASKS = {"likelihood": likelihood, "sweep": sweep, "fid": fid, "schedule": schedule}


def run(cfg: DictConfig) -> dict:
    return TASKS[cfg.task.value](cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.cli import run_main

    return run_main("evaluate.py", hydra_main)


if __name__ == "__main__":
    sys.exit(main())
