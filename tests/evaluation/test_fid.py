"""FID plumbing: offline handling of the Inception weights, the safety check on them, and cached reference stats.
(The Inception network itself is torch-fidelity's; it is not downloaded here.)"""
from __future__ import annotations

import pickle

import pytest
import torch

from diffusion.evaluation import fid as fid_module
from diffusion.evaluation.fid import FID, InceptionUnavailable, inception_weights, load_inception
from diffusion.evaluation.quality import build_quality


class _MakesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_is_a_one_line_unavailable(hub):
    with pytest.raises(InceptionUnavailable) as e:
        inception_weights(url="http://127.0.0.1:9/weights-inception.pth", timeout=2)
    assert "\n" not in str(e.value) and "cannot download" in str(e.value)
    assert not list(hub.rglob("*.pth*"))  # nothing half-downloaded is kept


def test_missing_local_weights(tmp_path):
    with pytest.raises(InceptionUnavailable, match="no Inception weights at"):
        load_inception(weights=tmp_path / "nope.pth")


def test_weights_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "weights.pth"
    bad.write_bytes(pickle.dumps({"w": _MakesFile(marker)}, protocol=2))
    with pytest.raises(InceptionUnavailable, match="not a plain Inception state dict"):
        load_inception(weights=bad)
    assert not marker.exists()


def test_quality_reports_fid_as_unavailable_offline(hub):
    notes = []
    quality = build_quality((3, 8, 8), lambda: torch.zeros(4, 3, 8, 8, dtype=torch.uint8), digit_fd=False,
                            inception_url="http://127.0.0.1:9/w.pth", log=notes.append)
    assert quality.fid is None and quality.digits is None
    assert len(notes) == 1 and "n/a" in notes[0] and "\n" not in notes[0]
    assert quality(torch.zeros(4, 3, 8, 8, dtype=torch.uint8)) == {"fid": None, "digit_fd": None}
    with pytest.raises(InceptionUnavailable):  # fid=true insists
        build_quality((3, 8, 8), lambda: None, fid=True, digit_fd=False, inception_url="http://127.0.0.1:9/w.pth")


class _MeanColour(torch.nn.Module):
    """A stand-in feature extractor with torch-fidelity's call convention: uint8 (N, 3, H, W) -> (features,)."""

    calls = 0

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        _MeanColour.calls += 1
        f = x.float().flatten(2)
        return (torch.cat([f.mean(2), f.std(2)], 1),)


def test_fid_compares_to_cached_reference_stats(tmp_path):
    g = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8)  # grayscale: repeated to RGB
    fid = FID(_MeanColour(), reference, cache=tmp_path)
    assert fid(reference) == pytest.approx(0.0, abs=1e-3)  # round-off of traces ~1e4
    other = torch.randint(0, 128, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    assert fid(other) > 100
    calls = _MeanColour.calls
    again = FID(_MeanColour(), reference, cache=tmp_path)  # statistics come from the cache file
    assert _MeanColour.calls == calls and len(list(tmp_path.glob("inception_stats_*.safetensors"))) == 1
    torch.testing.assert_close(again.ref_cov, fid.ref_cov)
    assert fid_module.fingerprint(reference) != fid_module.fingerprint(other)
