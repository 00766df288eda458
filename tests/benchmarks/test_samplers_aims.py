"""The few-step record's verdicts (benchmarks/lib/fewstep.py, ``tables``) on a made-up table of excesses:
at 5 and 6 NFE ours must have at most half the best peer's excess, at 10 NFE at most the peer's (within 0.01: a
tie at the ODE limit); a miss whose aim lies below the ODE limit is marked out of reach."""
from __future__ import annotations


def test_aim_verdicts(bench_lib):
    fewstep = bench_lib.fewstep
    limit = {"a, wide": 0.1, "b, narrow": 0.4}
    cells = {  # (mixture, nfe): (ours, best peer)
        ("a, wide", 5): (0.4, 1.0), ("a, wide", 6): (0.6, 1.0), ("a, wide", 10): (-0.5, -0.505),
        ("b, narrow", 5): (0.2, 2.0), ("b, narrow", 6): (0.9, 0.6), ("b, narrow", 10): (0.3, 0.2),
    }
    summary = {}
    for (m, k), (ours, peer) in cells.items():
        summary[(m, "DDPM", "ours unipc gits", k)] = ours
        summary[(m, "DDPM", "ours ddim logsnr", k)] = ours + 5  # never the best of ours
        summary[(m, "DDPM", "diffusers X", k)] = peer
        summary[(m, "DDPM", fewstep.REFERENCE, k)] = limit[m]
    lines = fewstep.tables(summary, (5, 6, 10))
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in lines if line.startswith("| DDPM |")}
    verdict = {key: row.rstrip(" |").rsplit("|", 1)[1].strip() for key, row in rows.items()}
    assert verdict[("DDPM", "5", "a")] == "met"  # 0.4 of the peer's excess
    assert verdict[("DDPM", "6", "a")] == "**missed**"  # 0.6
    assert verdict[("DDPM", "10", "a")] == "met"  # 0.005 behind the peer, both at the ODE limit: a tie
    assert verdict[("DDPM", "5", "b")] == "met"
    assert verdict[("DDPM", "6", "b")].startswith("missed; out of reach")  # half of 0.6 is below the limit 0.4
    assert verdict[("DDPM", "10", "b")] == "**missed**"
    assert "ours unipc gits" not in " ".join(rows.values())  # the table names the configuration without "ours"
    assert any("Aims met in 4 of 9 cells" in line for line in lines), lines  # a 5, a 10, b 5 and the mean at 5
    # own error = (excess - ODE limit) of ours over the peer's: a, 5 NFE: (0.4 - 0.1) / (1.0 - 0.1)
    own = {key: float(row.rstrip(" |").split("|")[-2]) for key, row in rows.items()}
    assert abs(own[("DDPM", "5", "a")] - 0.3 / 0.9) < 0.006
    assert abs(own[("DDPM", "5", "b")] - (0.2 - 0.4) / (2.0 - 0.4)) < 0.006  # ours below the ODE limit: negative
    assert abs(own[("DDPM", "6", "b")] - 0.5 / 0.2) < 0.006
    assert own[("DDPM", "10", "b")] == float("inf")  # the peer's own error -0.2 <= 0 and ours -0.1 above it
