"""Quality against cost: every (sampler, steps) pair draws the same number of samples from the same seeds, and is
scored by NFE, wall time and the data set's quality scores (``quality.Quality``). Output: rows, a Markdown
table and a PNG plot of quality vs NFE with one line per sampler.

The seeds are shared across rows (batch i uses derive_seed(seed, "batch", i) everywhere), so deterministic samplers
start from the same x_T and differences between rows are the solvers', not the noise's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from diffusion.fitting import on_fixed_grid, resolve_sampler
from diffusion.processes.base import Process
from diffusion.runs.generate import generate
from diffusion.runs.store import json_safe, save_uint8_grid
from diffusion.samplers.spec import SamplerSpec
from diffusion.utils import write_atomic, write_json, write_text

METRICS = {"fid": "FID (Inception)", "kid": "KID (Inception)", "digit_fd": "digit FD (to the test split)",
           "digit_kid": "digit KID (to the test split)"}


def run_sweep(process: Process, model: Callable, shape: Sequence[int],
              samplers: Sequence[SamplerSpec] | dict[str, dict[str, Any]], steps: Sequence[int], *, n: int, batch_size: int = 64, seed: int = 0, device: torch.device | str = "cpu",
              quality: Callable[[torch.Tensor], dict[str, float | None]] | None = None,
              num_classes: int | None = None, grid_dir: str | Path | None = None, progress: bool = False,
              log: Callable[[str], None] = print,
              fitted: Callable[[SamplerSpec, int], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (sampler, steps): {"sampler", "steps", "nfe", "seconds", "images_per_second", "n", "fid", "kid",
    "digit_fd", "digit_kid", ...and every other score ``quality`` gives (floors, KID std, ...)}.

    samplers: ``SamplerSpec``s, or name -> options (e.g. {"ddim": {"eta": 0.0}, "pc": {"snr": 0.16}}); ``steps``
    overrides theirs. Every one is checked against the process before anything runs, and a schedule file among its
    options read (``fitting.resolve_sampler``; ``fitted`` options are the ``fitted`` rows' business).
    With ``grid_dir`` the first 16 samples of every row are saved as ``<sampler>_<steps>.png``.
    ``fitted(spec, steps) -> {"timesteps": times[, "coefficients": weights]}``: each (sampler, steps) also runs
    with the options it returns (a grid fitted to the model, and the sampler's weights where they were fitted too:
    ``diffusion.fitting``), in a row named ``<sampler> fitted`` (grids ``<sampler>_fitted_<steps>.png``).
    """
    if isinstance(samplers, dict):
        samplers = [SamplerSpec(name, **{k: v for k, v in (options or {}).items() if k not in ("name", "steps")})
                    for name, options in samplers.items()]
    # coefficients=fitted are fitted with a grid: the fixed grid walks the sampler's own weights (``on_fixed_grid``)
    fixed = [resolve_sampler(on_fixed_grid(spec), process, fit=False) for spec in samplers]
    walks = [(spec.name, spec, int(s)) for spec in fixed for s in steps]
    if fitted is not None:
        walks += [(f"{spec.name} fitted", spec.replace(**fitted(spec, int(s))), int(s))
                  for spec in samplers for s in steps]
    rows = []
    for name, spec, s in walks:
        images, _, stats = generate(process, model, n, shape, sampler=spec.replace(steps=s), seed=seed,
                                    batch_size=batch_size, num_classes=num_classes, device=device, progress=progress)
        scores = quality(images) if quality is not None else {}
        row = {"sampler": name, "steps": s, "nfe": stats.nfe, "seconds": stats.seconds,
               "images_per_second": stats.images_per_second, "n": n,
               **{k: scores.get(k) for k in METRICS}, **{k: v for k, v in scores.items() if k not in METRICS}}
        rows.append(row)
        if grid_dir is not None:
            save_uint8_grid(images[:16], Path(grid_dir) / f"{name.replace(' ', '_')}_{s}.png")
        log(" ".join(f"{k}={_fmt(v)}" for k, v in row.items() if not isinstance(v, (list, dict))))
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _pm(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2) -> str:
    """"mean ± std" of a KID (shown x ``scale``), or n/a."""
    v, sd = row.get(key), row.get(f"{key}_std")
    if v is None:
        return "n/a"
    return f"{v * scale:.{digits}f} ± {sd * scale:.{digits}f}" if sd is not None else _fmt(v * scale, digits)


def markdown_table(rows: list[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    # KID first: it is unbiased, so it means something at n = 1,000; FID is read beside its real-vs-real floor
    head = ["| sampler | steps | NFE | seconds | images/s | KID x1e3 | FID | digit FD | digit KID |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    body = [f"| {r['sampler']} | {r['steps']} | {_fmt(r['nfe'], 0)} | {_fmt(r['seconds'], 2)} | "
            f"{_fmt(r['images_per_second'], 2)} | {_pm(r, 'kid', 1e3)} | {_fmt(r['fid'], 2)} | {_fmt(r['digit_fd'], 2)} | "
            f"{_pm(r, 'digit_kid')} |" for r in rows]
    n = rows[0]["n"] if rows else 0
    text = (f"Sampler sweep: {n} samples per row; KID and FID against the train split, digit FD and KID against the "
            "MNIST5k test split in the digit classifier's features.\n\n")
    text += "\n".join(head + body) + "\n"
    floors = [f"{name} floor at n={r[f'{key}_n']}: {_fmt(r[key], 2)}" for r in rows[:1]
              for key, name in (("fid_floor", "FID"), ("digit_fd_floor", "digit FD")) if r.get(key) is not None]
    if rows and rows[0].get("kid_floor") is not None:
        floors.insert(0, f"KID x1e3 floor: {_pm({'k': rows[0]['kid_floor'], 'k_std': rows[0].get('kid_floor_std')}, 'k', 1e3)}")
    if rows and rows[0].get("digit_kid_floor") is not None:
        floors.append(f"digit KID floor: {_pm({'k': rows[0]['digit_kid_floor'], 'k_std': rows[0]['digit_kid_floor_std']}, 'k')}")
    notes = [*(["real-vs-real " + "; ".join(floors) + " (real images at the same n)"] if floors else []), *notes]
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    return text


def plot_sweep(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Quality vs NFE (log x), one line per sampler and one panel per available score; images/s if none is."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    panels = metrics or ["images_per_second"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for name in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["nfe"], r[metric]) for r in rows if r["sampler"] == name and r.get(metric) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        floor = rows[0].get(f"{metric}_floor") if rows else None
        if floor is not None:  # real images at the same n: how low the score can go
            ax.axhline(floor, color="gray", linestyle="--", label="real images, same n")
        nfes = sorted({r["nfe"] for r in rows if r["nfe"] == r["nfe"]})
        ax.set_xscale("log")
        ax.set_xticks(nfes, [f"{v:g}" for v in nfes])
        ax.minorticks_off()
        ax.set_xlabel("NFE (model evaluations per sample)")
        ax.set_ylabel(METRICS.get(metric, "images / s (no quality score available)"))
        values = [r[metric] for r in rows if r.get(metric) is not None and r[metric] > 0]
        if metric in METRICS and values and max(values) > 10 * min(values):
            ax.set_yscale("log")  # scores span decades between few and many steps
        else:
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title or "quality vs NFE (lower is better)")
    fig.tight_layout()
    path = Path(path)
    write_atomic(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)
    return path


def save_sweep(rows: list[dict[str, Any]], out_dir: str | Path, notes: Sequence[str] = (), extra: dict | None = None,
               title: str = "") -> dict[str, Path]:
    """``sweep.md``, ``sweep.json`` and ``sweep.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sweep.md", markdown_table(rows, notes))
    write_json(out / "sweep.json", json_safe({"rows": rows, "notes": list(notes), **(extra or {})}), indent=2,
               allow_nan=False)
    return {"md": out / "sweep.md", "json": out / "sweep.json", "png": plot_sweep(rows, out / "sweep.png", title)}
