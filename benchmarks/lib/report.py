"""What every benchmark script writes besides its numbers: notes, the machine it ran on, its shared flags, and its
section of a markdown record (kept between ``<!-- name -->`` and ``<!-- /name -->`` so that scripts sharing one
record rewrite only their own part)."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from diffusion.device import describe_machine

ROOT = Path(__file__).resolve().parents[2]
#: peers' sources are fetched, not vendored; a missing one is skipped with a note
PEER_PATHS = {"dpm_solver_path": "/work/peers/dpm_solver_pytorch.py", "score_sde_path": "/work/peers/score_sde",
              "diff_sampler_path": "/work/peers/diff-sampler/gits-main"}
NOTES: list[str] = []


def note(msg: str) -> None:
    """Print a caveat now and keep it for the record's notes."""
    print(f"note: {msg}", flush=True)
    NOTES.append(msg)


def machine() -> str:
    return (f"Machine: {describe_machine()} ({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
            f"Python {platform.python_version()}, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.")


def load_average() -> str:
    """The 1/5/15-minute load averages, "1.9 / 1.8 / 1.6": a timed record says how busy the machine was."""
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this script (``argv``: the arguments main() was given, else sys.argv's)."""
    return f"python benchmarks/{Path(sys.argv[0]).name} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def begin(threads: int, plan: str) -> float:
    """Start a run: torch on ``threads`` threads, say what it will compute and for how long; returns its start time."""
    torch.set_num_threads(threads)
    print(plan, flush=True)
    return time.perf_counter()


def footer(started: float) -> list[str]:
    """A section's closing lines: the notes, then the run time since ``started`` (``time.perf_counter()``)."""
    notes = ["Notes:", "", *(f"- {n}" for n in NOTES), ""] if NOTES else []
    return notes + [f"Run time: {time.perf_counter() - started:.0f} s.", ""]


def add_common_flags(p: argparse.ArgumentParser, *, samples: bool = True, peers: tuple[str, ...] = (),
                     record: str = "samplers.md") -> None:
    """Flags shared by the mixture benchmarks: seed, threads, the record its section goes into (``--out``, by default
    ``benchmarks/<record>``), the peers' paths named in ``peers`` and, with ``samples``, the samples per run and the
    FD floor's draws."""
    p.add_argument("--out", default=str(ROOT / "benchmarks" / record), help="the record its section goes into")
    if samples:
        p.add_argument("--n", type=int, default=1000, help="samples per sampler run")
        p.add_argument("--floor-draws", type=int, default=10, help="sets of n exact samples averaged into the FD floor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    helps = {"dpm_solver_path": "Lu et al.'s dpm_solver_pytorch.py (LuChengTHU/dpm-solver)",
             "score_sde_path": "a score_sde_pytorch checkout (its likelihood.py)",
             "diff_sampler_path": "zju-pi/diff-sampler's gits-main folder (its iPNDM, UniPC, DPM++, DEIS and GITS)"}
    for name in peers:
        p.add_argument("--" + name.replace("_", "-"), default=PEER_PATHS[name], help=helps[name])


def write_section(path: Path, name: str, lines: list[str]) -> None:
    """Put ``lines`` between ``<!-- name -->`` and ``<!-- /name -->`` in the markdown file ``path``, keeping the
    rest of the file; a file without that section gets it appended."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    body = "\n".join([begin, *lines, end])
    old = path.read_text() if path.is_file() else ""
    if begin in old and end in old:
        text = old.split(begin)[0] + body + old.split(end, 1)[1]
    else:
        text = (old.rstrip() + "\n\n" if old else "") + body + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a record is never left half written


def publish(path: Path, name: str, section: list[str]) -> None:
    """Print the section and write it into the record ``path`` (``write_section``)."""
    print("\n".join(section))
    write_section(Path(path), name, section)
