"""benchmarks/distillation.py: its record keeping and aims in-process (fast), and its --smoke mode end to end (a
unet_tiny teacher of 4 steps, 2-step consistency and reflow students, 16 samples at 1 and 2 NFE; about a minute
and a half on 2 cores: slow)."""
from __future__ import annotations

import math
import re

import pytest
import torch


def test_the_record_replaces_only_its_own_section(tmp_path, bench_script):
    bench = bench_script("distillation.py")
    record = tmp_path / "distillation.md"
    toy = "## Consistency distillation's recipe on exact teachers\n\ntoy table\n"
    record.write_text(f"# Distillation\n\n{toy}")
    bench.write_record(record, "## first\n")
    text = record.read_text()
    # before the toy section: distillation_toy.py rewrites from its own heading to the end
    assert text.index("## first") < text.index(toy) and text.endswith(toy)
    bench.write_record(record, "## second\n")
    text = record.read_text()
    assert "## first" not in text and text.count(bench.BEGIN) == text.count(bench.END) == 1
    assert text == f"# Distillation\n\n{bench.BEGIN}\n## second\n{bench.END}\n\n{toy}"


def test_the_aims_compare_the_best_sampler_of_each_method_with_the_ode_limit(bench_script):
    bench = bench_script("distillation.py")
    rows = [("teacher: ODE limit (dpmpp_3m)", 100, 10.0), ("teacher: ipndm, fitted grid + weights", 2, 50.0),
            ("consistency: consistency", 1, 26.0), ("consistency: consistency", 2, 14.0),
            ("reflow: ddim (Euler)", 1, 24.0), ("reflow: ddim (Euler)", 2, 40.0), ("reflow: dpmpp_2m", 2, 29.0)]
    lines = bench.aims([{"row": row, "nfe": nfe, "fd": fd} for row, nfe, fd in rows])
    # 2 NFE: consistency 1.4x (the teacher's own solver is no method); 1 NFE: reflow 2.4x; reflow's best at 2 is 2.9x
    assert lines == ["- 2 NFE, the better method (consistency): 1.40x the ODE limit (aim <= 1.5x): **met**",
                     "- 1 NFE, the better method (reflow): 2.40x the ODE limit (aim <= 2.5x): **met**",
                     "- 2 NFE, consistency: 1.40x (aim <= 3x): **met**; 0.28x the teacher's fitted solver there",
                     "- 2 NFE, reflow: 2.90x (aim <= 3x): **met**; 0.58x the teacher's fitted solver there"]
    rows[3] = ("consistency: consistency", 2, 31.0)
    lines = bench.aims([{"row": row, "nfe": nfe, "fd": fd} for row, nfe, fd in rows])
    assert "- 2 NFE, the better method (reflow): 2.90x the ODE limit (aim <= 1.5x): **missed**" in lines
    assert "- 2 NFE, consistency: 3.10x (aim <= 3x): **missed**; 0.62x the teacher's fitted solver there" in lines


@pytest.mark.slow  # three train.py runs, three grid fits and nine sample sets: about 1.5 minutes on 2 cores
def test_smoke_writes_every_row(tmp_path, bench_script):
    bench = bench_script("distillation.py")
    before, threads = bench.RECORD.read_text(), torch.get_num_threads()
    try:
        results = bench.main(["--smoke", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # main() sets the threads of this (pytest's) process
    assert bench.RECORD.read_text() == before  # smoke never touches the record
    text = results["record"].read_text()
    assert results["record"].parent.parent == tmp_path and "SMOKE" in text
    expected = [("teacher: ODE limit (dpmpp_3m)", 10)]
    for nfe in (1, 2):
        expected += [("teacher: ipndm, fitted grid + weights", nfe), ("consistency: consistency", nfe),
                     ("reflow: ddim (Euler)", nfe)]
    expected += [("reflow: dpmpp_2m", 2), ("reflow: ipndm, fitted grid + weights", 2)]
    table = re.findall(r"^\| ([a-z][^|]*?) \| (\d+) \| ([\d.]+) \| ([\d.]+) ± [\d.]+ \| ([\d.]+) \|", text, re.M)
    assert [(row, int(nfe)) for row, nfe, *_ in table] == expected   # every row, each run at its NFE
    assert all(math.isfinite(float(fd)) and float(fd) > 0 for _, _, fd, _, _ in table)
    assert float(table[0][4]) == 1.0                                 # the ODE limit is the unit
    assert re.search(r"^\| real training digits against the test split \(floor\) \| \| [\d.]+ \|", text, re.M)
    # the cost table: 2 student steps each; the teacher's calls: 2 x batch 8 x heun's 2, and 16 pairs x 2 NFE
    assert "| consistency | " in text and "| 2 | 32 (2 steps x batch 8 x 2 (heun)) |" in text
    assert "| reflow | " in text and "| 2 | 32 (16 pairs x 2 NFE) |" in text
    assert text.count("**met**") + text.count("**missed**") == 4
    grids = results["record"].with_suffix("")
    for r in results["results"]:
        assert r["grid"].parent == grids and r["grid"].stat().st_size > 0
        assert f"]({grids.name}/{r['grid'].name})" in text
