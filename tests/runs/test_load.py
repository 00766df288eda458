"""TrainedRun's names: ``provenance`` says where its weights come from; ``weights`` is its deprecated alias."""
from __future__ import annotations

from pathlib import Path

from diffusion.runs import TrainedRun


def test_provenance_names_the_checkpoint_and_the_weights_kind(tmp_path):
    run = TrainedRun(model=None, process=None, cfg=None, path=tmp_path / "checkpoints" / "ckpt_2.pt", ema=False)
    assert run.provenance == {"checkpoint": str((tmp_path / "checkpoints" / "ckpt_2.pt").resolve()), "ema": False}
    assert run.weights == run.provenance  # the old name, kept for callers
    assert run.run_dir == tmp_path and isinstance(run.run_dir, Path)
