"""The FID variant of Inception-V3 (the TensorFlow 2015-12-05 graph ported by pytorch-fid), for FID.

FID numbers are only comparable when computed with this exact network: the weights file
``pt_inception-2015-12-05-6726825d.pth`` (used by pytorch-fid; torchmetrics and torch-fidelity use the same network).
It differs from torchvision's Inception-V3 in three places, all reproduced here:
  * the average pools inside the 35x35 (A), 17x17 (C) and first 8x8 (E) blocks ignore the zero padding
    (``count_include_pad=False``), as TensorFlow's average pool does;
  * the last 8x8 block pools its pool branch with a max pool instead of an average pool;
  * the classifier has 1008 outputs (TF's label map), and there is no auxiliary classifier.
Module and parameter names follow the weights file (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch_pool.bn.bias``
...), so it loads with ``strict=True``. The FID features are the 2048-d global average pool before ``fc``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.errors import UserError
from benchmark.io import IntegrityError, check_finite
from benchmark.metrics.features import FeatureNetwork, ResizePreprocess, weights_sha256

FEATURE_DIM = 2048
NUM_CLASSES = 1008
INPUT_SIZE = 299
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries the start of its sha256


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's) -> ReLU; named ``conv``/``bn`` as in the weights file."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):
    """3x3/1 average pool that, like TensorFlow's, averages only over the pixels inside the image."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class Block35(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(tf_avg_pool(x)),
        ], 1)


class Reduction35to17(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class Block17(nn.Module):
    """17x17 block (Mixed_6b..e) with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c, 1)
        self.branch7x7_2 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c, 1)
        self.branch7x7dbl_2 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = conv(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(tf_avg_pool(x))], 1)


class Reduction17to8(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class Block8(nn.Module):
    """8x8 block (Mixed_7b/c) with split 1x3/3x1 outputs. ``max_pool_branch``: the FID graph's last block uses a
    max pool in its pool branch (Mixed_7c), the one before it the TF average pool."""

    def __init__(self, in_channels: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d3 = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool_branch else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d3, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Input: RGB in [0, 1], 299x299. ``forward`` returns the 2048-d pool features; ``logits`` the 1008 TF logits."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Block35(192, pool_features=32)
        self.Mixed_5c = Block35(256, pool_features=64)
        self.Mixed_5d = Block35(288, pool_features=64)
        self.Mixed_6a = Reduction35to17(288)
        self.Mixed_6b = Block17(768, channels_7x7=128)
        self.Mixed_6c = Block17(768, channels_7x7=160)
        self.Mixed_6d = Block17(768, channels_7x7=160)
        self.Mixed_6e = Block17(768, channels_7x7=192)
        self.Mixed_7a = Reduction17to8(768)
        self.Mixed_7b = Block8(1280, max_pool_branch=False)
        self.Mixed_7c = Block8(2048, max_pool_branch=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x):
        x = 2.0 * x - 1.0  # the TF graph expects [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def logits(self, x):
        return self.fc(self.forward(x))


def load_fid_inception(weights_path) -> FIDInceptionV3:
    model = FIDInceptionV3()
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    check_finite(state, weights_path, f"re-download {WEIGHTS_URL}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def find_inception_weights(explicit=None):
    """``explicit`` (--inception-weights) or the torch hub checkpoints cache, where pytorch-fid downloads it."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"--inception-weights {path} does not exist: pass the path of {WEIGHTS_FILENAME} ({WEIGHTS_URL})")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME
    if not path.is_file():
        raise UserError(f"FID needs the Inception weights {WEIGHTS_FILENAME}: put it in {path.parent}/ "
                        f"or pass --inception-weights PATH (download: {WEIGHTS_URL})")
    return path


def fid_inception_network(weights=None):
    """The FID ``FeatureNetwork``: FID Inception-V3 pool features (2048-d) of images clean-resized to 299x299."""
    path = find_inception_weights(weights)
    sha = weights_sha256(path)
    if path.name == WEIGHTS_FILENAME and not sha.startswith(WEIGHTS_SHA256_PREFIX):  # the published file, corrupted
        raise IntegrityError(f"{path} is corrupted: its sha256 starts {sha[:8]}, not {WEIGHTS_SHA256_PREFIX} as its "
                             f"name says; delete it and download it again from {WEIGHTS_URL}")
    if not sha.startswith(WEIGHTS_SHA256_PREFIX):  # someone's own weights under another name: allowed, flagged
        warnings.warn(f"{path} has sha256 {sha[:12]}..., not the pytorch-fid FID weights ({WEIGHTS_SHA256_PREFIX}...): "
                      "FID values will not be comparable to published ones")
    return FeatureNetwork(
        name="inception_v3_fid", dim=FEATURE_DIM, module=load_fid_inception(path),
        preprocess=ResizePreprocess(INPUT_SIZE),  # [0, 1]; the network itself maps to [-1, 1]
        weights_sha256=sha, weights_file=path.name,
        extra={"features": "pool3 (2048-d global average pool)", "network_input": "2x-1 of [0,1] RGB",
               "matches_pytorch_fid_weights": sha.startswith(WEIGHTS_SHA256_PREFIX)})
