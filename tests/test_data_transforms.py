"""The ADM/DiT preprocessing: center_crop_arr, the flip, the [-1, 1] tensor."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import center_crop_arr, eval_transform, to_tensor_pm1, train_transform


def test_native_size_is_a_no_op():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = center_crop_arr(Image.fromarray(pixels), 32)
    assert out.size == (32, 32)
    assert np.array_equal(np.asarray(out), pixels)


def test_box_halving_averages_blocks_exactly():
    # 128 -> 64 -> 32 by two box halvings (the short side is still >= 2x32 at 64), no bicubic step after:
    # each output pixel is the mean of a constant 4x4 block, i.e. that block's value
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(np.kron(blocks, np.ones((4, 4, 1), dtype=np.uint8)))
    out = np.asarray(center_crop_arr(image, 32)).astype(int)
    assert out.shape == (32, 32, 3)
    assert np.abs(out - blocks.astype(int)).max() <= 1


def test_halving_stops_below_twice_the_target_then_bicubic_and_centre():
    # 300x200 to 64: one halving (150x100; 100 < 128 stops it), bicubic to short side 64 -> 96x64, crop x in [16, 80)
    stripes = np.zeros((200, 300, 3), dtype=np.uint8)
    stripes[:, :100] = (255, 0, 0)
    stripes[:, 100:200] = (0, 255, 0)
    stripes[:, 200:] = (0, 0, 255)
    out = np.asarray(center_crop_arr(Image.fromarray(stripes), 64)).astype(int)
    assert out.shape == (64, 64, 3)
    # the middle of the crop is the green stripe; its edges reach 16 px into red and blue (96 px wide -> 64 crop)
    assert (out[:, 24:40, 1] > 240).all() and (out[:, 24:40, 0] < 15).all()
    assert out[:, 0, 0].min() > 200 and out[:, -1, 2].min() > 200


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (70, 50), (10, 200, 30)).convert(mode)
    out = center_crop_arr(image, 16)
    assert out.mode == "RGB" and out.size == (16, 16)


def test_tall_and_tiny_images():
    assert center_crop_arr(Image.new("RGB", (20, 90)), 32).size == (32, 32)  # upscaled: short side 20 -> 32
    assert center_crop_arr(Image.new("RGB", (1000, 260)), 64).size == (64, 64)


def test_tensor_range_and_values():
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 128)
    x = to_tensor_pm1(Image.fromarray(pixels))
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert x[:, 0, 0].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    assert x[:, 1, 1].tolist() == [-1.0, -1.0, -1.0]


def test_train_transform_flips_about_half_the_time_and_eval_never():
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = 255  # left half white
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    flipped = [bool(train_transform(32)(image)[0, 0, 0] < 0) for _ in range(200)]
    assert 60 < sum(flipped) < 140
    assert not any(train_transform(32, flip=False)(image)[0, 0, 0] < 0 for _ in range(20))
    out = eval_transform(32)(image)
    assert out.shape == (3, 32, 32) and torch.equal(out, to_tensor_pm1(image))


def test_transform_pickles_for_dataloader_workers():
    t = pickle.loads(pickle.dumps(train_transform(64)))
    assert t.resolution == 64 and t.flip
    assert t(Image.new("RGB", (100, 80))).shape == (3, 64, 64)
