"""The shared 32x32 sets (../shared/data) through the registry. Skipped where that folder is absent."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import UserError
from benchmark.data import ArrayImageDataset, get_dataset, to_tensor_pm1, train_transform
from benchmark.io import REPO_ROOT
from conftest import run_if

SHARED = REPO_ROOT.parent / "shared" / "data"
pytestmark = run_if(shared_data="caltech101/caltech101_32.npz")


@pytest.mark.parametrize("name, n_train, n_test, classes", [
    ("caltech101-32", 5784, 2893, 101), ("cub100-32", 2999, 2903, 100), ("cifar10-32", 50000, 10000, 10)])
def test_counts_classes_and_labels(name, n_train, n_test, classes):
    train, test = get_dataset(name, "train", root=SHARED), get_dataset(name, "test", root=SHARED)
    assert (len(train), len(test), len(get_dataset(name, "all", root=SHARED))) == (n_train, n_test, n_train + n_test)
    assert train.num_classes == classes == len(train.class_names) and train.resolution == 32
    assert train.labels.dtype == np.int64 and train.labels.min() == 0 and train.labels.max() == classes - 1
    assert (train.class_counts() > 0).all()
    image, label = train[len(train) - 1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert label == train.labels[-1]


def test_decoded_sets_return_the_stored_pixels():
    ds = get_dataset("cub100-32", "test", root=SHARED)
    with np.load(SHARED / "cub100" / "cub100_32.npz") as z:
        rows = np.flatnonzero(~z["is_train"])
        assert np.array_equal(np.asarray(ds[5][0]), z["images"][rows[5]])
        assert ds.class_names == [str(c) for c in z["class_names"]]
        assert np.array_equal(ds.labels, z["labels"][rows])


def test_cifar_jpegs_decode_lazily_to_the_original_files():
    ds = get_dataset("cifar10-32", "train", root=SHARED)
    assert isinstance(ds, ArrayImageDataset)
    with np.load(SHARED / "cifar10" / "cifar10_32_jpeg.npz") as z:
        row = np.flatnonzero(z["is_train"])[123]
        data = z["jpeg"][z["offsets"][row]:z["offsets"][row + 1]].tobytes()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    image, _ = ds[123]
    assert np.array_equal(np.asarray(image), expected)
    # at resolution 32 the crop is a no-op: the training tensor is the image itself (up to the flip)
    x = train_transform(32, flip=False)(image)
    assert torch.equal(x, to_tensor_pm1(image))


def test_array_of_a_decoded_set_and_subsets():
    ds = get_dataset("caltech101-32", "test", root=SHARED)
    array = ds.array()
    assert array.shape == (2893, 32, 32, 3) and array.dtype == np.uint8
    part = ds.subset(range(10, 20))
    assert np.array_equal(part.array(), array[10:20]) and part.labels.tolist() == ds.labels[10:20].tolist()
    assert np.array_equal(np.asarray(part[0][0]), array[10])


def test_npz_is_loaded_once_per_process():
    a = get_dataset("caltech101-32", "train", root=SHARED)
    b = get_dataset("caltech101-32", "test", root=SHARED)
    assert a.arrays is b.arrays


def test_fingerprint_is_stable_and_split_specific():
    fp = get_dataset("cub100-32", "train", root=SHARED).fingerprint()
    assert len(fp) == 16 and fp == get_dataset("cub100-32", "train", root=SHARED).fingerprint()
    assert fp != get_dataset("cub100-32", "test", root=SHARED).fingerprint()


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DOGBENCH_DATA", str(SHARED))
    assert len(get_dataset("cub100-32", "train")) == 2999
    monkeypatch.setenv("DOGBENCH_DATA", str(tmp_path))
    with pytest.raises(UserError, match=r"cub100/cub100_32.npz.*dogbench prepare cub100-32"):
        get_dataset("cub100-32", "train")
    # a root that is the set's own folder works too
    assert len(get_dataset("cub100-32", "test", root=Path(SHARED) / "cub100")) == 2903


def test_batches_through_a_dataloader():
    ds = get_dataset("caltech101-32", "train", root=SHARED, transform=train_transform(32)).subset(range(64))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1 <= x.min() and x.max() <= 1


def test_packaged_caltech_pack_is_found_without_a_data_root(tmp_path):
    """The embedded default benchmark's target data ships with the package (CC BY 4.0, attribution beside it)."""
    from benchmark.data import get_dataset
    from benchmark.data.registry import PACKAGED_DATA

    assert (PACKAGED_DATA / "caltech101" / "ATTRIBUTION.md").exists()
    ds = get_dataset("caltech101-32", split="train", root=tmp_path)  # an empty root: falls back to the pack
    assert len(ds) == 5784 and ds.num_classes == 101
    image, label = ds[0]
    assert image.size == (32, 32) and 0 <= label < 101
