"""The registry of datasets: one ``DatasetSpec`` per name, and ``get_dataset(name, split, root)``.

The seven target sets of the paper (Zhong et al. 2025, after DiffFit) read their official distribution's layout
with its standard split; ``folder`` reads any class-per-folder tree; the shared 32x32 sets read the project's .npz.

Where a dataset lives: ``root`` (a --data-root / --root flag, else $DOGBENCH_DATA, else ./data or ../shared/data, see
``benchmark.io.data_root``) may be the dataset's own folder, hold it under the registry name (root/food101/...), or
hold the official archive's top folder (root/food-101/...); the first of these that has the layout's marker file wins.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from benchmark.errors import UserError
from benchmark.data import downloads, parsers
from benchmark.data.dataset import FileImageDataset, ImageDataset
from benchmark.data.shared32 import open_shared
from benchmark.io import data_root

# 32x32 data that ships inside the package (benchmark/assets/data): found when the data root lacks it
PACKAGED_DATA = Path(__file__).resolve().parent.parent / "assets" / "data"

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: Optional[int]        # None: whatever the folder holds (generic `folder`)
    resolution: int                   # nominal: 256 for the paper's sets, 32 for the shared sets
    group: str                        # "paper" | "generic" | "shared"
    layout: str                       # one line: what to place where
    source: str                       # where the files come from
    parse: Optional[Callable] = None  # file layouts: parsers.parse_*(base, split, **options) -> Listing
    npz: Optional[str] = None         # shared sets: the .npz path relative to the data root
    folder_names: tuple = ()          # top folder(s) of the official archive, which may sit under the root
    markers: tuple = ()               # relative paths, any of which marks the dataset's base folder
    expected: dict = field(default_factory=dict)  # official image counts per split, checked by `dogbench prepare`
    download: Optional[Callable] = None           # download(target_dir) where a public source exists
    path: Optional[Path] = None       # a user's own dataset (folder_dataset): its folder, whatever the data root

    def candidates(self, root: Path) -> list[Path]:
        """Folders that may be this dataset's base, in the order they are tried."""
        # a folder under its name wins over the root itself: the generic `folder` set (no marker file) would
        # otherwise take a data root that holds folder/ (and other datasets) for a class-per-folder tree
        tops = [root] if root.name == self.name else [root / self.name, root]
        return [top / f if f else top for top in tops for f in ("",) + self.folder_names]

    def locate(self, root: str | os.PathLike) -> Optional[Path]:
        """The base folder (file layouts) or .npz file (shared sets) under ``root``, or None."""
        if self.path is not None:
            return self.path if self.path.is_dir() else None
        root = Path(root).expanduser()
        if self.npz:
            for path in (root / self.npz, root / Path(self.npz).name):
                if path.is_file():
                    return path
            return None
        for base in self.candidates(root):
            if base.is_dir() and (not self.markers or any((base / m).exists() for m in self.markers)):
                return base
        return None

    def splits_in(self, base: Path) -> tuple[str, ...]:
        """The real splits ("train", "test") this copy has; a plain class-per-folder tree has only "train"."""
        if self.parse is parsers.parse_folder and not any((base / s).is_dir() for s in ("train", "test")):
            return ("train",)
        return ("train", "test")

    def missing_message(self, root: Path) -> str:
        if self.path is not None:
            what = "is not a folder" if self.path.exists() else "does not exist"
            return (f"dataset {self.name}: {self.path} {what}; give the path of a class-per-folder tree "
                    f"({self.layout})")
        where = self.npz if self.npz else self.layout
        return (f"{self.title} not found under {root}: expected {where}; "
                f"run `dogbench prepare {self.name} --root PATH` to see how to get it")


_SHARED_HINT = "the project's shared data (../shared/data; point --data-root or $DOGBENCH_DATA at it)"

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec(
        "food101", "Food-101", 101, 256, "paper",
        layout="food-101/ with images/<class>/<id>.jpg and meta/{classes,train,test}.txt",
        source=f"food-101.tar.gz from {downloads.FOOD101_URL}",
        parse=parsers.parse_food101, folder_names=("food-101",), markers=("meta/classes.txt",),
        expected={"train": 75750, "test": 25250}, download=downloads.download_food101),
    DatasetSpec(
        "sun397", "SUN397", 397, 256, "paper",
        layout="SUN397/<letter>/<class>/sun_*.jpg and Partitions/{ClassName,Training_01,Testing_01}.txt",
        source=f"SUN397.tar.gz from {downloads.SUN397_URL} and Partitions.zip from {downloads.SUN397_PARTITIONS_URL}",
        parse=parsers.parse_sun397, markers=("SUN397",),
        expected={"train": 19850, "test": 19850}, download=downloads.download_sun397),
    DatasetSpec(
        "df20mini", "DF20-Mini", 182, 256, "paper",
        layout="DF20M/<image files> beside DF20M-train_metadata_PROD.csv and DF20M-public_test_metadata_PROD.csv",
        source=f"DF20M-images.tar.gz and DF20M-metadata.zip from {downloads.DF20M_IMAGES_URL.rsplit('/', 1)[0]}/",
        parse=parsers.parse_df20mini,
        markers=tuple(f"{d}/DF20M-train_metadata_PROD.csv" for d in parsers.DF20M_METADATA_DIRS) + ("DF20M",),
        download=downloads.download_df20mini),  # image counts differ between metadata releases: not checked
    DatasetSpec(
        "caltech101", "Caltech-101", 101, 256, "paper",
        layout="101_ObjectCategories/<class>/image_NNNN.jpg (BACKGROUND_Google is ignored), optionally with "
               "train.txt/test.txt split lists beside it",
        source=f"caltech-101.zip from {downloads.CALTECH101_URL} (its 101_ObjectCategories.tar.gz)",
        parse=parsers.parse_caltech101, folder_names=("caltech101", "caltech-101"), markers=("101_ObjectCategories",),
        # every-third-image split (parsers.parse_caltech101); with the Homework2 split lists: 5784 / 2893
        expected={"train": 5818, "test": 2859, "all": 8677}, download=downloads.download_caltech101),
    DatasetSpec(
        "cub200", "CUB-200-2011", 200, 256, "paper",
        layout="CUB_200_2011/ with images/, images.txt, image_class_labels.txt, train_test_split.txt, classes.txt",
        source=f"CUB_200_2011.tgz from {downloads.CUB200_URL}",
        parse=parsers.parse_cub200, folder_names=("CUB_200_2011",), markers=("images.txt",),
        expected={"train": 5994, "test": 5794}, download=downloads.download_cub200),
    DatasetSpec(
        "artbench10", "ArtBench-10", 10, 256, "paper",
        layout="artbench-10-imagefolder-split/{train,test}/<style>/*.jpg",
        source=f"artbench-10-imagefolder-split.tar from {downloads.ARTBENCH10_URL}",
        parse=parsers.parse_artbench10, folder_names=("artbench-10-imagefolder-split",), markers=("train", "test"),
        expected={"train": 50000, "test": 10000}, download=downloads.download_artbench10),
    DatasetSpec(
        "stanford_cars", "Stanford Cars", 196, 256, "paper",
        layout="stanford_cars/ with devkit/{cars_meta,cars_train_annos}.mat, cars_train/, cars_test/ and "
               "cars_test_annos_withlabels.mat (or car_devkit/devkit/ and cars_train/cars_train/ as on Kaggle)",
        source="car_devkit.tgz, cars_train.tgz, cars_test.tgz and cars_test_annos_withlabels.mat: the original "
               "host (ai.stanford.edu/~jkrause/cars) is gone; mirrors exist on Kaggle and Hugging Face",
        parse=parsers.parse_stanford_cars, folder_names=("stanford_cars", "stanford-cars"),
        markers=tuple(f"{d}/cars_meta.mat" for d in ("devkit", "car_devkit/devkit", ".")) + ("cars_annos.mat",),
        expected={"train": 8144, "test": 8041}),
    DatasetSpec(
        "folder", "Class-per-folder dataset", None, 256, "generic",
        layout="<root>/<class>/*.jpg, or <root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg",
        source="any images, one folder per class", parse=parsers.parse_folder),
    DatasetSpec(
        "cifar10-32", "CIFAR-10 32x32", 10, 32, "shared", layout="cifar10/cifar10_32_jpeg.npz",
        source=_SHARED_HINT, npz="cifar10/cifar10_32_jpeg.npz", expected={"train": 50000, "test": 10000}),
    DatasetSpec(
        "caltech101-32", "Caltech-101 32x32", 101, 32, "shared", layout="caltech101/caltech101_32.npz",
        source=_SHARED_HINT, npz="caltech101/caltech101_32.npz", expected={"train": 5784, "test": 2893}),
    DatasetSpec(
        "cub100-32", "CUB-100 32x32", 100, 32, "shared", layout="cub100/cub100_32.npz",
        source=_SHARED_HINT, npz="cub100/cub100_32.npz", expected={"train": 2999, "test": 2903}),
]}


LAYOUTS = {"folder": parsers.parse_folder}  # what a user's own dataset may be: a class-per-folder tree


def folder_dataset(name: str, path: str | os.PathLike, layout: str = "folder", resolution: int = 256) -> DatasetSpec:
    """A user's own dataset under its own name (an experiment's ``{name, path, layout}`` entry): a class-per-folder
    tree at ``path``, read like the generic ``folder`` set, found there whatever the data root."""
    if layout not in LAYOUTS:
        raise UserError(f"dataset {name}: unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if name in DATASETS:
        raise UserError(f"dataset name {name!r} is a registered dataset; give your own dataset another name")
    generic = DATASETS["folder"]
    return DatasetSpec(name, name, None, resolution, "custom", layout=generic.layout, source=str(path),
                       parse=LAYOUTS[layout], path=Path(path).expanduser().resolve())


def dataset_names(group: Optional[str] = None) -> list[str]:
    """Registered names, optionally only one group: "paper", "generic" or "shared"."""
    return [name for name, spec in DATASETS.items() if group is None or spec.group == group]


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The spec of a registered name; a spec (a user's own dataset, ``folder_dataset``) is returned as it is."""
    if isinstance(name, DatasetSpec):
        return name
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def list_files(spec: DatasetSpec, base: Path, split: str, **options) -> parsers.Listing:
    """The listing of ``split`` ("all" = every real split, concatenated) of the dataset at ``base``."""
    try:
        if split != "all":
            return spec.parse(base, split, **options)
        parts = [spec.parse(base, s, **options) for s in spec.splits_in(base)]
    except parsers.Incomplete as e:
        raise UserError(f"{spec.title} at {base} is incomplete: {e}; expected {spec.layout}; "
                        f"see `dogbench prepare {spec.name} --root {base}`") from e
    return parsers.Listing([f for p in parts for f in p.files], [y for p in parts for y in p.labels],
                           parts[0].class_names)


def locate_dataset(name: str | DatasetSpec, root: Optional[str | os.PathLike] = None) -> Path:
    """Where ``get_dataset`` reads ``name`` from (its folder, or its .npz) under ``root`` (default: the data root);
    a one-line UserError naming what to place where when it is not there."""
    spec = get_spec(name)
    # a chosen root that is missing is an error, never the pack; a user's own dataset has its own folder
    root = data_root(root, must_exist=True) if spec.path is None else spec.path
    found = spec.locate(root)
    if found is None and spec.npz:  # the data pack that ships with the package (the offline default benchmark)
        found = spec.locate(PACKAGED_DATA)
    if found is None:
        raise UserError(spec.missing_message(root))
    return found


def get_dataset(name: str | DatasetSpec, split: str = "train", root: Optional[str | os.PathLike] = None,
                transform: Optional[Callable] = None, **options) -> ImageDataset:
    """Split ``split`` ("train" | "test" | "all") of registered dataset ``name`` found under ``root`` (default:
    the data root), or of a user's own dataset (a ``folder_dataset`` spec, which knows its folder). ``ds[i]`` is
    ``(PIL RGB image, int label)``, or ``(transform(image), label)``. ``options`` go to the layout's parser (e.g.
    ``partition=2`` for sun397, ``label_column=...`` for df20mini)."""
    spec = get_spec(name)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    found = locate_dataset(spec, root)
    if spec.npz:
        return open_shared(spec.name, found, split, spec.resolution, transform)
    listing = list_files(spec, found, split, **options)
    if not listing.files:
        raise UserError(f"{spec.title} at {found}: the {split} split lists no images; expected {spec.layout}")
    if split != "test":  # a test split may lack rare classes (DF20-Mini); the training data may not
        counts = np.bincount(listing.labels, minlength=len(listing.class_names))
        empty = [c for c, n in zip(listing.class_names, counts) if n == 0]
        if empty:
            raise UserError(f"{spec.title} at {found}: {len(empty)} class(es) have no {split} images (e.g. "
                            f"{empty[0]!r}); the copy is incomplete: restore it or remove the class")
    return FileImageDataset(spec.name, split, found, listing.files, listing.labels, listing.class_names,
                            spec.resolution, transform)
