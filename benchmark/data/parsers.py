"""Readers of each dataset's official on-disk layout.

Every parser is ``parse(base, split, **options) -> Listing`` with ``split`` "train" or "test": ``base`` is the
dataset's top folder (found by the registry), the listing's ``files`` are relative to it. The class list never
depends on the split, so a label means the same class in train and test. A missing or malformed piece raises
``Incomplete`` naming it; the registry turns that into a one-line UserError with the expected layout.
Parsers only list files; they do not open images (that happens lazily, see dataset.py).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy.io import loadmat

from benchmark.data.dataset import IMAGE_EXTENSIONS, is_image_file


class Incomplete(Exception):
    """The dataset folder exists but a piece of its layout is missing or malformed (message: which)."""


@dataclass
class Listing:
    files: list[str]            # image paths relative to the dataset's base folder
    labels: list[int]           # in [0, len(class_names))
    class_names: list[str]


def _need(path: Path, what: str = "") -> Path:
    if not path.exists():
        raise Incomplete(f"missing {what or path.name} ({path})")
    return path


def _first_existing(base: Path, candidates: Sequence[str]) -> Optional[Path]:
    for rel in candidates:
        if (base / rel).exists():
            return base / rel
    return None


def _lines(path: Path) -> list[str]:
    with open(_need(path), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _id_table(path: Path) -> dict[int, str]:
    """CUB's '<id> <value>' files -> {id: value}."""
    table = {}
    for line in _lines(path):
        key, _, value = line.partition(" ")
        table[int(key)] = value.strip()
    return table


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))


def _images_in(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


# --- Food-101 (Bossard et al. 2014): food-101/{images/<class>/<id>.jpg, meta/{classes,train,test}.txt} ---
def parse_food101(base: Path, split: str) -> Listing:
    classes = _lines(base / "meta" / "classes.txt")
    index = {c: i for i, c in enumerate(classes)}
    _need(base / "images", "the images/ folder")
    files, labels = [], []
    for entry in _lines(base / "meta" / f"{split}.txt"):  # "apple_pie/1005649"
        cls = entry.split("/")[0]
        if cls not in index:
            raise Incomplete(f"meta/{split}.txt names class {cls!r}, which meta/classes.txt lacks")
        files.append(f"images/{entry}.jpg")
        labels.append(index[cls])
    return Listing(files, labels, classes)


# --- CUB-200-2011 (Wah et al. 2011): CUB_200_2011/{images/, images.txt, image_class_labels.txt, ...} ---
def parse_cub200(base: Path, split: str) -> Listing:
    class_table = _id_table(base / "classes.txt")                   # "1 001.Black_footed_Albatross"
    class_ids = sorted(class_table)
    classes = [class_table[i].split(".", 1)[-1] for i in class_ids]  # drop the "001." prefix
    class_index = {cid: k for k, cid in enumerate(class_ids)}
    images = _id_table(base / "images.txt")                         # "1 001.Black.../Black_..._0046_18.jpg"
    image_class = _id_table(base / "image_class_labels.txt")        # "1 1"
    is_train = _id_table(base / "train_test_split.txt")             # "1 0": 1 = train
    _need(base / "images", "the images/ folder")
    want = "1" if split == "train" else "0"
    files, labels = [], []
    for image_id in sorted(images):
        if image_id not in image_class or image_id not in is_train:
            raise Incomplete(f"image {image_id} of images.txt has no entry in image_class_labels.txt or "
                             f"train_test_split.txt")
        if is_train[image_id] == want:
            files.append(f"images/{images[image_id]}")
            labels.append(class_index[int(image_class[image_id])])
    return Listing(files, labels, classes)


# --- SUN397 (Xiao et al. 2010): SUN397/<letter>/<class>[/<sub>]/sun_*.jpg + Partitions/{ClassName,Training_NN,
#     Testing_NN}.txt. Partition NN=01 by default (50 train + 50 test images per class). ---
SUN397_PARTITION_DIRS = ("Partitions", "Partitions/Partitions", ".", "SUN397/Partitions")


def parse_sun397(base: Path, split: str, partition: int = 1) -> Listing:
    list_name = f"{'Training' if split == 'train' else 'Testing'}_{partition:02d}.txt"
    partitions = _first_existing(base, [f"{d}/{list_name}" for d in SUN397_PARTITION_DIRS])
    if partitions is None:
        raise Incomplete(f"missing the partition file {list_name} (from Partitions.zip, expected in Partitions/)")
    beside = partitions.parent.relative_to(base).as_posix()
    class_file = _first_existing(base, [f"{beside}/ClassName.txt", "SUN397/ClassName.txt", "ClassName.txt"])
    if class_file is None:
        raise Incomplete("missing ClassName.txt (in Partitions/ or SUN397/)")
    keys = _lines(class_file)                                   # "/a/abbey", "/a/apartment_building/outdoor"
    classes = [k.strip("/").split("/", 1)[1] for k in keys]     # "abbey", "apartment_building/outdoor"
    index = {k.rstrip("/"): i for i, k in enumerate(keys)}
    _need(base / "SUN397", "the SUN397/ image folder")
    files, labels = [], []
    for entry in _lines(partitions):                            # "/a/abbey/sun_aaalbzqrimafwbiv.jpg"
        key = entry.rsplit("/", 1)[0]
        if key not in index:
            raise Incomplete(f"{list_name} names class {key!r}, which ClassName.txt lacks")
        files.append("SUN397" + entry)
        labels.append(index[key])
    return Listing(files, labels, classes)


# --- Stanford Cars (Krause et al. 2013): devkit .mat annotations. Accepted arrangements: the official archives
#     (and torchvision's stanford_cars/): devkit/{cars_meta,cars_train_annos}.mat, cars_train/, cars_test/,
#     cars_test_annos_withlabels.mat; Kaggle's car_devkit/devkit/ and cars_train/cars_train/; or the all-in-one
#     cars_annos.mat + car_ims/. ---
_CARS_DEVKIT = ("devkit", "car_devkit/devkit", ".")


def _mat_records(path: Path, key: str) -> np.ndarray:
    return np.atleast_1d(loadmat(path, squeeze_me=True)[key])


def parse_stanford_cars(base: Path, split: str) -> Listing:
    all_in_one = base / "cars_annos.mat"
    if all_in_one.exists() and (base / "car_ims").is_dir():
        records = _mat_records(all_in_one, "annotations")
        classes = [str(c) for c in _mat_records(all_in_one, "class_names")]
        test_flag = 1 if split == "test" else 0
        keep = [r for r in records if int(r["test"]) == test_flag]
        return Listing([str(r["relative_im_path"]) for r in keep], [int(r["class"]) - 1 for r in keep], classes)

    meta = _first_existing(base, [f"{d}/cars_meta.mat" for d in _CARS_DEVKIT])
    if meta is None:
        raise Incomplete("missing devkit/cars_meta.mat (from car_devkit.tgz)")
    classes = [str(c) for c in _mat_records(meta, "class_names")]
    if split == "train":
        annos = _first_existing(base, [f"{d}/cars_train_annos.mat" for d in _CARS_DEVKIT])
        what = "devkit/cars_train_annos.mat (from car_devkit.tgz)"
    else:
        annos = _first_existing(base, [f"{d}/cars_test_annos_withlabels.mat" for d in (".",) + _CARS_DEVKIT])
        what = "cars_test_annos_withlabels.mat (the test labels, published apart from the devkit)"
    if annos is None:
        raise Incomplete(f"missing {what}")
    folder = f"cars_{split}"
    images = _first_existing(base, [f"{folder}/{folder}", folder])  # Kaggle nests cars_train/cars_train/
    if images is None or not images.is_dir():
        raise Incomplete(f"missing the {folder}/ image folder (from {folder}.tgz)")
    records = _mat_records(annos, "annotations")
    if "class" not in (records.dtype.names or ()):
        raise Incomplete(f"{annos.name} has no class labels; use cars_test_annos_withlabels.mat")
    prefix = images.relative_to(base).as_posix()
    return Listing([f"{prefix}/{r['fname']}" for r in records], [int(r["class"]) - 1 for r in records], classes)


# --- Caltech-101 (Fei-Fei et al. 2004): 101_ObjectCategories/<class>/image_NNNN.jpg, minus BACKGROUND_Google.
#     It has no official split. If train.txt / test.txt lists ("<class>/image_NNNN.jpg", the split of
#     github.com/MachineLearning2020/Homework2-Caltech101 that the shared caltech101-32 set uses) lie beside
#     101_ObjectCategories they decide; otherwise every third image of a class (sorted by name; positions 2, 5, 8, ...)
#     is a test image: deterministic, about the same 2:1 ratio. ---
CALTECH_BACKGROUND = "BACKGROUND_Google"


def parse_caltech101(base: Path, split: str) -> Listing:
    categories = _need(base / "101_ObjectCategories", "the 101_ObjectCategories/ folder")
    classes = [c for c in _class_dirs(categories) if c != CALTECH_BACKGROUND]
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    split_file = base / f"{split}.txt"
    if split_file.exists():
        for entry in _lines(split_file):
            entry = entry.removeprefix("101_ObjectCategories/")
            cls = entry.split("/")[0]
            if cls == CALTECH_BACKGROUND:
                continue
            if cls not in index:
                raise Incomplete(f"{split}.txt names class {cls!r}, which 101_ObjectCategories/ lacks")
            files.append(f"101_ObjectCategories/{entry}")
            labels.append(index[cls])
        return Listing(files, labels, classes)
    for cls in classes:
        for position, name in enumerate(_images_in(categories / cls)):
            if (position % 3 == 2) == (split == "test"):
                files.append(f"101_ObjectCategories/{cls}/{name}")
                labels.append(index[cls])
    return Listing(files, labels, classes)


# --- class-per-folder: [train|test]/<class>/*.jpg (ArtBench-10's artbench-10-imagefolder-split/, generic `folder`) ---
def folder_listing(base: Path, split: str, split_dirs: bool) -> Listing:
    """``split_dirs``: the tree has train/ and test/ class folders; else every image under base/<class>/ is one
    split, offered as "train" (a "test" split then does not exist)."""
    if split_dirs:
        roots = [base / s for s in ("train", "test") if (base / s).is_dir()]
        _need(base / split, f"the {split}/ folder")
    else:
        if split == "test":
            raise Incomplete("no test/ folder: this class-per-folder tree has one split only (use split='train' "
                             "or 'all', or make train/ and test/ subfolders)")
        roots = [base]
    classes = sorted(set().union(*(_class_dirs(r) for r in roots)))
    if not classes:
        raise Incomplete(f"no class folders in {roots[0]}")
    folder = base / split if split_dirs else base
    files, labels = [], []
    for i, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue
        prefix = (folder / cls).relative_to(base).as_posix()
        names = _images_in(folder / cls)
        if not names:
            raise Incomplete(f"class folder {prefix}/ holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        files += [f"{prefix}/{n}" for n in names]
        labels += [i] * len(names)
    return Listing(files, labels, classes)


def parse_artbench10(base: Path, split: str) -> Listing:
    return folder_listing(base, split, split_dirs=True)


def parse_folder(base: Path, split: str) -> Listing:
    return folder_listing(base, split, split_dirs=(base / "train").is_dir() or (base / "test").is_dir())


# --- DF20-Mini (Picek et al. 2022): DF20M-train_metadata_PROD.csv / DF20M-public_test_metadata_PROD.csv with an
#     image_path column (file names inside DF20M/) and the species label: class_id when present, else the species /
#     scientificName column. Column names can be overridden (options) for other metadata releases. ---
DF20M_TRAIN_CSV = "DF20M-train_metadata*.csv"
DF20M_TEST_CSV = "DF20M-*test_metadata*.csv"
DF20M_METADATA_DIRS = (".", "DF20M-metadata", "metadata")
DF20M_IMAGE_DIRS = ("DF20M", "DF20M-300px", "DF20M_300", "DF20M-images/DF20M", "images", ".")


def _find_csv(base: Path, pattern: str) -> Optional[Path]:
    for d in DF20M_METADATA_DIRS:
        found = sorted((base / d).glob(pattern)) if (base / d).is_dir() else []
        if found:
            return found[0]
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    # the metadata holds Danish place and habitat names; a few releases are not valid UTF-8
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


def parse_df20mini(base: Path, split: str, path_column: str = "image_path", label_column: Optional[str] = None,
                   name_column: Optional[str] = None) -> Listing:
    csvs = {"train": _find_csv(base, DF20M_TRAIN_CSV), "test": _find_csv(base, DF20M_TEST_CSV)}
    if csvs[split] is None:
        raise Incomplete(f"missing the metadata file {DF20M_TRAIN_CSV if split == 'train' else DF20M_TEST_CSV} "
                         f"(from DF20M-metadata.zip)")
    tables = {s: _read_csv(p) for s, p in csvs.items() if p is not None}
    header = set(tables[split][0]) if tables[split] else set()
    name_column = name_column or next((c for c in ("species", "scientificName") if c in header), None)
    label_column = label_column or ("class_id" if "class_id" in header else name_column)
    for col in (path_column, label_column, name_column):
        if col is None or col not in header:
            raise Incomplete(f"{csvs[split].name} has no {col or 'species/scientificName'} column "
                             f"(columns: {', '.join(sorted(header))})")

    def usable(row):  # some rows carry no species determination; they have no class
        return all((row.get(c) or "").strip() not in ("", "nan", "-1") for c in (label_column, name_column))

    # classes from every split present, so a label means the same species in train and test
    names: dict[str, str] = {}
    for rows in tables.values():
        for row in filter(usable, rows):
            names.setdefault(row[label_column].strip(), row[name_column].strip())
    keys = sorted(names, key=lambda k: (0, int(k), k) if k.lstrip("-").isdigit() else (1, 0, k))
    index = {k: i for i, k in enumerate(keys)}
    rows = [r for r in tables[split] if usable(r)]
    if not rows:
        raise Incomplete(f"{csvs[split].name} lists no labelled images")
    image_dir = _first_existing(base, [f"{d}/{rows[0][path_column]}" for d in DF20M_IMAGE_DIRS])
    if image_dir is None:
        raise Incomplete(f"images listed in {csvs[split].name} (e.g. {rows[0][path_column]}) are not in DF20M/")
    prefix = image_dir.parent.relative_to(base).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    return Listing([prefix + r[path_column] for r in rows], [index[r[label_column].strip()] for r in rows],
                   [names[k] for k in keys])
