#!/usr/bin/env python
"""Evaluate a trained model: likelihoods, a sampler sweep, or FID of a set of samples.

    python evaluate.py ckpt=runs/<run> task=likelihood                  # ODE NLL, SDE and DDPM bounds, bits/dim
    python evaluate.py ckpt=runs/<run> task=likelihood likelihood.divergence=exact likelihood.t_samples=null
    python evaluate.py ckpt=runs/<run> task=sweep sweep.samplers=[ddim,dpmpp_2m] sweep.steps=[5,10,20] n=1000
    python evaluate.py task=fid samples=runs/<run>/samples/ddim_50_seed0/samples.npz [ckpt=runs/<run> | data=cifar10]
    python evaluate.py task=fid samples=my_pngs/ data=folder data.root=real_pngs/ data.image_size=64

Results go to <run>/eval/ (likelihood.md|json, gamma_ema.json (Analytic-DPM's Gamma, reused by samplers), sweep/sweep.md|json|png, fid.json) and the tables are printed.
Quality: FID through torch-fidelity's Inception when its weights can be had (else "n/a" with a one-line reason),
and for MNIST the Frechet distance in a small digit classifier's features (offline). A bad request is one line on
stderr and exit code 2. Configuration: configs/evaluate.yaml.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf


def _switch(value: str) -> bool | str:
    v = str(value).lower()
    if v in ("auto",):
        return "auto"
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected auto, true or false, got {value!r}")


def _out_dir(cfg: DictConfig, path: Path | None, fallback: Path | None = None) -> Path:
    from diffusion.evaluation import cli

    if cfg.out:
        return Path(cfg.out)
    if path is not None:
        return cli.run_dir_of(path) / "eval"
    return fallback or Path("eval")


def _quality(cfg: DictConfig, shape, data_cfg: DictConfig | None, device):
    from diffusion.evaluation import cli
    from diffusion.evaluation.quality import build_quality, dataset_images

    reference = None
    if data_cfg is not None:
        def reference():
            return dataset_images(cli.build_data(data_cfg, "train"))
    return build_quality(tuple(shape), reference, data_target=None if data_cfg is None else data_cfg.get("_target_"),
                         fid=_switch(cfg.fid.inception), digit_fd=_switch(cfg.fid.digit_fd),
                         inception_weights=cfg.fid.inception_weights, inception_url=cfg.fid.inception_url,
                         device=device, log=lambda m: print(m, file=sys.stderr))


def likelihood(cfg: DictConfig) -> dict:
    from diffusion.evaluation import cli
    from diffusion.evaluation.likelihood_table import likelihood_table

    device = cli.pick_device(cfg.device)
    model, process, train_cfg, path = cli.load_trained(_need_ckpt(cfg), cfg.ema, device)
    data = cli.build_data(train_cfg.data, "test")
    from diffusion.evaluation.quality import dataset_images

    n = LIKELIHOOD_N if cfg.n is None else int(cfg.n)
    images = dataset_images(data)[:n]
    if len(images) < n:
        print(f"note: the test split has only {len(images)} images (n={n})", file=sys.stderr)
    lc = cfg.likelihood
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(lc.dtype)
    if dtype is None:
        raise cli.EvaluationError(f"likelihood.dtype={lc.dtype!r}: use float32 or float64")
    from diffusion.likelihood.bound import VARIANCES

    variances = tuple(str(v) for v in lc.variances)
    bad = [v for v in variances if v not in VARIANCES]
    if bad or not variances:
        raise cli.EvaluationError(f"likelihood.variances={list(variances)}: choose from {', '.join(VARIANCES)}, e.g. [beta_tilde,analytic]")
    print(f"likelihood of {len(images)} test images under {path} ({'EMA' if cfg.ema else 'raw'} weights, {process!r}) on {device}")
    gamma = None
    if lc.bound:  # Analytic-DPM's Gamma: estimated once per checkpoint, kept in <run>/eval for samplers and bounds
        from diffusion.evaluation.likelihood_table import stored_gamma
        from diffusion.likelihood.analytic import Gamma, gamma_path

        if lc.gamma:  # the user's file, as it is
            gamma = Gamma.load(lc.gamma)
        else:
            gamma = stored_gamma(process, model, gamma_path(cli.run_dir_of(path), cfg.ema), str(path),
                                 lambda: dataset_images(cli.build_data(train_cfg.data, "train")), steps=int(lc.gamma_steps),
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
    from diffusion.evaluation import cli
    from diffusion.evaluation.sweep import check_samplers, markdown_table, run_sweep, save_sweep

    device = cli.pick_device(cfg.device)
    model, process, train_cfg, path = cli.load_trained(_need_ckpt(cfg), cfg.ema, device)
    n = SWEEP_N if cfg.n is None else int(cfg.n)
    names = list(cfg.sweep.samplers)
    steps = [int(s) for s in cfg.sweep.steps]
    if not names or not steps:
        raise cli.EvaluationError("sweep.samplers and sweep.steps must be non-empty lists, e.g. sweep.steps=[5,10,20]")
    check_samplers(process, names)
    overrides = OmegaConf.to_container(cfg.sweep.options, resolve=True) if cfg.sweep.options else {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise cli.EvaluationError(f"sweep.options names {', '.join(unknown)}, which is not in sweep.samplers={names}")
    samplers = {name: {**cli.sampler_defaults(name), **(overrides.get(name) or {})} for name in names}
    shape, note = cli.sample_shape(train_cfg)
    if note:
        print(f"note: {note}", file=sys.stderr)
    quality = _quality(cfg, shape, train_cfg.data, device)
    out = _out_dir(cfg, path) / "sweep"
    print(f"sweep of {names} x steps {steps}, {n} samples per row, from {path} ({process!r}) on {device}")
    rows = run_sweep(process, model, shape, samplers, steps, n=n, batch_size=int(cfg.batch_size),
                     seed=int(cfg.seed), device=device, quality=quality, num_classes=cli.num_classes_of(model, train_cfg),
                     grid_dir=out if cfg.sweep.grids else None, progress=cfg.progress,
                     log=lambda m: print(m, file=sys.stderr))
    notes = list(quality.notes)
    if quality.digits is not None:
        notes.append(f"digit FD: Frechet distance of the digit classifier's 128-d features (test accuracy "
                     f"{quality.digits.test_accuracy:.2%}) to the MNIST5k train digits; comparable only at equal n")
    files = save_sweep(rows, out, notes, extra={"checkpoint": str(path), "quality": quality.describe(),
                                                "samplers": samplers}, title=f"{process!r}, n={n}")
    print(markdown_table(rows, notes) + f"\nwrote {files['md']}, {files['json']} and {files['png']}")
    return {"rows": rows, "files": files}


def fid(cfg: DictConfig) -> dict:
    from diffusion.evaluation import cli
    from diffusion.evaluation.io import json_safe, load_images
    from diffusion.evaluation.quality import DIGIT_SHAPE

    if not cfg.samples:
        raise cli.EvaluationError("task=fid needs samples=<file.npz or folder of images>")
    images, _ = load_images(cfg.samples)
    device = cli.pick_device(cfg.device)
    path = None
    if cfg.ckpt:
        from diffusion.training.build import config_from_checkpoint
        from diffusion.training.checkpoint import load_checkpoint

        state = load_checkpoint(cfg.ckpt)
        data_cfg, path = config_from_checkpoint(state).data, Path(state["path"])
    elif cfg.data is not None:
        data_cfg = cfg.data
    elif tuple(images.shape[1:]) == DIGIT_SHAPE:  # 28x28 digits: the bundled MNIST5k is the reference
        data_cfg = OmegaConf.load(cli.CONFIG_DIR / "data" / "mnist5k.yaml")
    else:
        raise cli.EvaluationError("task=fid: pass ckpt=<run> or data=<a configs/data option, e.g. cifar10> "
                                  "to say what the samples are compared with")
    quality = _quality(cfg, images.shape[1:], data_cfg, device)
    scores = quality(images)
    samples = Path(cfg.samples)
    out = _out_dir(cfg, path, samples if samples.is_dir() else samples.parent)
    out.mkdir(parents=True, exist_ok=True)
    result = {"samples": str(samples), "n": len(images), "reference": data_cfg.get("_target_"), **scores,
              "quality": quality.describe()}
    (out / "fid.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"| samples | n | FID | digit FD |\n|---|---:|---:|---:|\n| {samples} | {len(images)} | "
          f"{fmt(scores['fid'])} | {fmt(scores['digit_fd'])} |\n\nwrote {out / 'fid.json'}")
    return result


def _need_ckpt(cfg: DictConfig) -> str:
    if not cfg.ckpt:
        from diffusion.evaluation.cli import EvaluationError

        raise EvaluationError(f"task={cfg.task.value} needs ckpt=<train.py run folder or checkpoint file>")
    return cfg.ckpt


TASKS = {"likelihood": likelihood, "sweep": sweep, "fid": fid}


def run(cfg: DictConfig) -> dict:
    return TASKS[cfg.task.value](cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.evaluation.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.evaluation.cli import run_main

    return run_main("evaluate.py", hydra_main)


if __name__ == "__main__":
    sys.exit(main())
