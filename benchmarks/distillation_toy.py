"""Consistency distillation's recipe, chosen on exact teachers: one setting changed at a time from the default.

The teacher is the exact eps of 2-D Gaussian data N(mu, diag(v)) on each process, whose consistency function f*
(the probability-flow map to t_min) is closed form (``toy.GaussianMixture.flow_map``). A small student (x0_pred
affine in x with time-dependent coefficients, as f* is) is first trained as a denoiser on the teacher (as a real
teacher run would start it), then distilled for ``--iters`` steps of Adam; the score is its one-step error
mean |f(x_t, t) - f*(x_t, t)| / data std at six times of a Karras grid from just above t_min to t_max.

    python benchmarks/distillation_toy.py            # about 6 minutes on 2 CPU cores; writes the toy section
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from diffusion.distillation import ConsistencyDistillation, ConsistencyModel, consistency_grid
from diffusion.processes import DDPM, EDM, RectifiedFlow, SubVPSDE, VESDE, VPSDE
from diffusion.toy import GaussianMixture

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
VAR = torch.tensor([0.09, 0.25], dtype=torch.float64)
GAUSSIAN = GaussianMixture(torch.ones(1), MU[None], torch.diag(VAR)[None])
PROCESSES = {"DDPM": DDPM(), "VP": VPSDE(), "sub-VP": SubVPSDE(), "VE": VESDE(), "EDM": EDM(), "RF": RectifiedFlow()}
DEFAULT = "default (heun, 18, karras, pseudo-Huber, ict, EMA 0.95)"
VARIANTS = {DEFAULT: {}, "target=stopgrad": {"target": "stopgrad"}, "weighting=uniform": {"weighting": "uniform"},
            "distance=l2": {"distance": "l2"}, "solver=ddim": {"solver": "ddim"}, "steps=10": {"steps": 10},
            "steps=40": {"steps": 40}, "spacing=logsnr": {"spacing": "logsnr"}}


class Student(nn.Module):
    """x0_pred = A(t) x_in + b(t) (x_in = x / sqrt(alpha^2 + sigma^2)), returned as eps."""

    prediction = "eps"

    def __init__(self, process):
        super().__init__()
        self.process, self.mlp = process, nn.Sequential(nn.Linear(8, 64), nn.SiLU(), nn.Linear(64, 4))

    @property
    def net(self):
        return self.mlp

    def forward(self, x, t, class_labels=None):
        t = t.double().reshape(-1).expand(x.shape[0])
        lam = self.process.log_snr(t).float().reshape(-1, 1) / 10
        a, b = self.mlp(torch.cat([f(lam * k) for f in (torch.sin, torch.cos) for k in (1, 2, 3, 4)], 1)).chunk(2, 1)
        alpha, sigma = (self.process.alpha(t).float()[:, None], self.process.sigma(t).float()[:, None])
        return (x - alpha * (a * x * torch.rsqrt(alpha**2 + sigma**2) + b)) / sigma

    raw = forward


def data(n, generator):
    return GAUSSIAN.sample(n, generator).float()


def one_step_error(process, student, generator) -> list[float]:
    x0, errors = data(2000, generator), []
    for t in consistency_grid(process, 6)[1:]:
        x_t = process.noise(x0, t.expand(2000), torch.randn(2000, 2, generator=generator))
        with torch.no_grad():
            err = student.denoise(x_t, t.expand(2000)) - GAUSSIAN.flow_map(process, x_t, float(t), process.t_min)
        errors.append(float(err.norm(dim=1).mean()) / float(VAR.sqrt().mean()))
    return errors


def distill(process, iters: int, **options) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    inner = Student(process)
    student, teacher = ConsistencyModel(inner, process), GAUSSIAN.eps_model(process)
    opt = torch.optim.Adam(inner.parameters(), lr=3e-3)
    gen, data_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(300):  # the teacher-to-be: a denoiser
        x0, t = data(256, data_gen), process.sample_t(256, generator=gen).double()
        x_t = process.noise(x0, t, torch.randn(256, 2, generator=gen))
        scale = (process.sigma(t) / process.alpha(t)).float()[:, None]
        loss = ((scale * (inner(x_t, t) - teacher(x_t, t))) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = one_step_error(process, student, torch.Generator().manual_seed(5))
    loss_fn = ConsistencyDistillation(process, teacher, **options)
    for _ in range(iters):
        loss = loss_fn(student, data(256, data_gen), generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, one_step_error(process, student, torch.Generator().manual_seed(5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--out", default=str(Path(__file__).with_name("distillation.md")))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), platform.processor())
    started = time.time()
    rows, before_row = [], None
    print(f"distilling {len(VARIANTS)} settings x {len(PROCESSES)} processes, {args.iters} steps each", flush=True)
    for name, options in VARIANTS.items():
        cells = []
        for process in PROCESSES.values():
            before, after = distill(process, args.iters, **options)
            before_row = before_row or []
            if name == DEFAULT:
                before_row.append(f"{sum(before) / len(before):.2f} / {max(before):.2f}")
            cells.append(f"{sum(after) / len(after):.3f} / {max(after):.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    head = "| setting | " + " | ".join(PROCESSES) + " |\n|---|" + "---:|" * len(PROCESSES)
    table = "\n".join([head, "| the teacher's denoiser (before) | " + " | ".join(before_row) + " |", *rows])
    section = (f"## Consistency distillation's recipe on exact teachers (`benchmarks/distillation_toy.py`)\n\n"
               f"One-step error of the student, mean / worst over six times from t_min to t_max, in units of the "
               f"data's std (2-D Gaussian data, exact teacher and exact f*; {args.iters} distillation steps after 300 "
               f"denoiser steps; one seed). {cpu}, {time.time() - started:.0f} s.\n\n{table}\n")
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Distillation\n\n"
    marker = "## Consistency distillation's recipe on exact teachers"
    text = text[: text.index(marker)] if marker in text else text
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text.rstrip() + "\n\n" + section)
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
