"""sample.py writes one output folder at a time (issue 29, fault 2): a second writer is refused in one line naming
the holder, before any batch is written; once the holder is gone, the same command runs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sample_refuses_an_output_folder_another_process_writes(cli, ddpm_run, tmp_path):
    out = tmp_path / "out"
    code = "import sys, time; from diffusion.runlock import hold; hold(sys.argv[1], 'sample.py'); print('held', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, _, err = cli("sample", f"ckpt={ddpm_run}", "sampler=ddim", "sampler.steps=2", "n=2", f"out={out}")
        assert status == 2
        assert err.strip() == (f"sample.py: error: {out} is being written by sample.py (PID {holder.pid} on host "
                               f"{socket.gethostname()}, since " + err.split(", since ")[1].split(")")[0] + "): a folder "
                               "has one writer; wait for that process to end (or stop it); or pass another out=<folder>")
        assert not (out / "batches").exists() and not (out / "manifest.json").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    status, _, err = cli("sample", f"ckpt={ddpm_run}", "sampler=ddim", "sampler.steps=2", "n=2", f"out={out}")
    assert status == 0, err
    assert (out / "samples.npz").is_file()
