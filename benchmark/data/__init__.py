"""Datasets: the paper's seven target sets read from their official layouts, a generic class-per-folder set, and
the shared 32x32 sets, all behind one registry (contract: .notes/DATA_API.md).

    from benchmark.data import get_dataset, train_transform
    ds = get_dataset("caltech101-32", split="train", transform=train_transform(32))
"""
from benchmark.data.dataset import FileImageDataset, ImageDataset
from benchmark.data.registry import (DATASETS, SPLITS, DatasetSpec, dataset_names, folder_dataset, get_dataset,
                                     get_spec, locate_dataset)
from benchmark.data.shared32 import ArrayImageDataset
from benchmark.data.transforms import center_crop_arr, eval_transform, to_tensor_pm1, train_transform

__all__ = [
    "DATASETS", "SPLITS", "ArrayImageDataset", "DatasetSpec", "FileImageDataset", "ImageDataset",
    "center_crop_arr", "dataset_names", "eval_transform", "folder_dataset", "get_dataset", "get_spec", "locate_dataset",
    "to_tensor_pm1", "train_transform",
]
