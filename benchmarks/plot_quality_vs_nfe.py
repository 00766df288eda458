"""The README's picture: few-step sample quality against NFE, fitted and fixed grids against the best peer.

    python benchmarks/plot_quality_vs_nfe.py           # seconds; runs no sampler

Draws the numbers recorded by ``fewstep.py`` in ``benchmarks/samplers_fewstep.json`` (nothing is rerun): per
process, the mean over its four exact mixtures of FD / exact-sample floor at 5, 6 and 10 NFE, for ``dpmpp_2m`` on
its default grid, UniPC-2 on a fitted (GITS) grid, ``fewstep`` (UniPC-3 on a refined fitted grid), iPNDM with its
weights fitted on a fitted grid, the best peer on that process (the peer configuration with the lowest mean over
the mixtures and NFEs; the peers ran on DDPM, VP and EDM only) and the ODE limit of the same x_T (what ever more
steps converge to). Writes ``docs/quality_vs_nfe.png``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.lib.fewstep import COEFFICIENTS, PEER_PREFIXES, RECORD, REFERENCE, load_summary  # noqa: E402

#: (label in the record, legend, style) of our rows, worst first
OURS = [("ours dpmpp_2m logsnr", "ours dpmpp_2m, its default grid (logsnr)", dict(color="C0", marker="o")),
        ("ours unipc-2 bh2 gits", "ours unipc (order 2) on a fitted grid (GITS)", dict(color="C1", marker="s")),
        ("ours unipc-3 bh2 gits+refine", "ours fewstep: unipc-3 on a refined fitted grid", dict(color="C2", marker="D")),
        (COEFFICIENTS, "ours ipndm, fitted grid and fitted weights", dict(color="C3", marker="^"))]


def mean_ratio(summary: dict, mixtures: list[str], process: str, label: str, nfe: int) -> float:
    """Mean over the mixtures of FD / floor (the record keeps the excess, FD / floor - 1)."""
    values = [summary.get((m, process, label, nfe), float("nan")) for m in mixtures]
    return sum(values) / len(values) + 1


def best_peer(summary: dict, mixtures: list[str], process: str, nfes) -> str | None:
    """The peer configuration with the lowest mean over the mixtures and NFEs (one that ran in every cell)."""
    labels = {lb for (_, p, lb, _) in summary if p == process and lb.startswith(PEER_PREFIXES)}
    score = {lb: sum(mean_ratio(summary, mixtures, process, lb, k) for k in nfes) for lb in labels}
    score = {lb: s for lb, s in score.items() if math.isfinite(s)}
    return min(score, key=score.get) if score else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=str(RECORD), help="the few-step record")
    p.add_argument("--png", default=str(ROOT / "docs" / "quality_vs_nfe.png"))
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = load_summary(args.json)
    mixtures = list(dict.fromkeys(m for m, _, _, _ in summary))
    processes = list(dict.fromkeys(p for _, p, _, _ in summary))
    nfes = sorted({k for _, _, _, k in summary})
    fig, axes = plt.subplots(2, (len(processes) + 1) // 2, figsize=(13, 8.6), sharex=True, sharey=True)
    for ax, process in zip(axes.flat, processes):
        ax.axhline(1.0, color="0.4", lw=1, zorder=0)
        ode = mean_ratio(summary, mixtures, process, REFERENCE, nfes[0])
        ax.axhline(ode, color="k", ls=":", lw=1.2, zorder=0)
        for label, legend, style in OURS:
            ax.plot(nfes, [mean_ratio(summary, mixtures, process, label, k) for k in nfes], lw=2, ms=5,
                    label=legend, **style)
        peer = best_peer(summary, mixtures, process, nfes)
        if peer is not None:
            ax.plot(nfes, [mean_ratio(summary, mixtures, process, peer, k) for k in nfes], color="0.35", ls="--",
                    lw=1.6, marker="x", ms=6, label="best peer")
            ax.text(0.97, 0.97, f"best peer here:\n{peer}", transform=ax.transAxes, ha="right", va="top",
                    fontsize=8, color="0.25")
        else:
            ax.text(0.97, 0.97, "no peer runs on this process", transform=ax.transAxes, ha="right", va="top",
                    fontsize=8, color="0.25")
        ax.set_title(process, fontsize=11)
        ax.set(yscale="log", xticks=nfes)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    for ax in axes.flat[len(processes):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("NFE (model evaluations)")
    for ax in axes[:, 0]:
        ax.set_ylabel("FD / exact-sample floor (mean of 4 mixtures)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="k", ls=":", lw=1.2), plt.Line2D([], [], color="0.4", lw=1)]
    labels += ["ODE limit of the same x_T (where more steps converge)", "1 = as close as 1000 exact samples"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Few-step sample quality on exact Gaussian mixtures (exact model: every error is the solver's); "
                 "lower is better.\nMean over 4 mixtures (64-D, 16-D, 8-D, 2-D) of 3 x_T draws of 1000 samples, from "
                 "benchmarks/samplers_fewstep.json", fontsize=10.5)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    plt.close(fig)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
