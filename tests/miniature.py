"""Miniature copies of each official dataset layout, a few tiny images per class: for tests and smoke runs on
machines that hold none of the real datasets.

    base = write_miniature("cub200", tmp_path)        # -> tmp_path/CUB_200_2011 with its five list files
    ds = get_dataset("cub200", "train", root=tmp_path)

Each writer lays files out exactly as the official archive unpacks (list files, .mat annotations, CSV metadata), with
made-up class names in the dataset's naming style. Image i of class k is filled with ``class_color(k)``, so a test
can check that an image landed under the right label. Images are 48x36 by default: not square, so the centre crop
does something.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def class_color(k: int) -> tuple[int, int, int]:
    """A distinct RGB colour per class, far from its neighbours (JPEG shifts colours a few levels)."""
    return ((37 * k + 40) % 256, (91 * k + 120) % 256, (53 * k + 200) % 256)


def write_image(path: Path, k: int, size: tuple[int, int] = (48, 36)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, class_color(k))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95)
    else:
        image.save(path)


def _write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _food101(root, classes, n_train, n_test):
    base = root / "food-101"
    names = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"][:classes]
    split_lines = {"train": [], "test": []}
    for k, name in enumerate(names):
        for i in range(n_train + n_test):
            image_id = 1000 + 17 * i + k
            write_image(base / "images" / name / f"{image_id}.jpg", k)
            split_lines["train" if i < n_train else "test"].append(f"{name}/{image_id}")
    _write_lines(base / "meta" / "classes.txt", names)
    _write_lines(base / "meta" / "labels.txt", [n.replace("_", " ").capitalize() for n in names])
    for split, lines in split_lines.items():
        _write_lines(base / "meta" / f"{split}.txt", lines)
    return base


def _cub200(root, classes, n_train, n_test):
    base = root / "CUB_200_2011"
    names = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet"]
    images, labels, split = [], [], []
    for k, name in enumerate(names[:classes]):
        folder = f"{k + 1:03d}.{name}"
        for i in range(n_train + n_test):
            rel = f"{folder}/{name}_{i:04d}_{100 + k}.jpg"
            write_image(base / "images" / rel, k)
            image_id = len(images) + 1
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {k + 1}")
            split.append(f"{image_id} {int(i < n_train)}")
    _write_lines(base / "classes.txt", [f"{k + 1} {k + 1:03d}.{n}" for k, n in enumerate(names[:classes])])
    _write_lines(base / "images.txt", images)
    _write_lines(base / "image_class_labels.txt", labels)
    _write_lines(base / "train_test_split.txt", split)
    return base


def _sun397(root, classes, n_train, n_test):
    keys = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop", "/c/canyon", "/d/dam"][:classes]
    lists = {"Training_01.txt": [], "Testing_01.txt": []}
    for k, key in enumerate(keys):
        for i in range(n_train + n_test):
            rel = f"{key}/sun_{k:02d}{i:04d}abcdefghij.jpg"
            write_image(root / "SUN397" / rel.lstrip("/"), k)
            lists["Training_01.txt" if i < n_train else "Testing_01.txt"].append(rel)
    _write_lines(root / "SUN397" / "ClassName.txt", keys)
    _write_lines(root / "Partitions" / "ClassName.txt", keys)
    for name, lines in lists.items():
        _write_lines(root / "Partitions" / name, lines)
    return root


def _cars_records(fnames, labels, with_class=True, relative=None, test_flags=None):
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O")]
    fields += [("class", "O")] if with_class else []
    fields += [("relative_im_path", "O"), ("test", "O")] if relative else [("fname", "O")]
    records = np.zeros((1, len(fnames)), dtype=fields)
    for i, (fname, label) in enumerate(zip(fnames, labels)):
        for box in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"):
            records[0, i][box] = np.array([[5]], dtype=np.uint16)
        if with_class:
            records[0, i]["class"] = np.array([[label + 1]], dtype=np.uint8)  # 1-based, as in the devkit
        if relative:
            records[0, i]["relative_im_path"] = np.array([fname])
            records[0, i]["test"] = np.array([[test_flags[i]]], dtype=np.uint8)
        else:
            records[0, i]["fname"] = np.array([fname])
    return records


def _stanford_cars(root, classes, n_train, n_test, variant="torchvision"):
    """``variant``: "torchvision" (= the official archives unpacked side by side), "kaggle" (car_devkit/devkit/,
    cars_train/cars_train/) or "all_in_one" (cars_annos.mat + car_ims/)."""
    from scipy.io import savemat

    base = root / ("stanford-cars" if variant == "kaggle" else "stanford_cars")
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
             "Acura TSX Sedan 2012"][:classes]
    class_names = np.array([names], dtype=object)
    per_split = {"train": [], "test": []}
    for k in range(classes):
        for i in range(n_train + n_test):
            per_split["train" if i < n_train else "test"].append(k)
    if variant == "all_in_one":
        fnames, labels, flags = [], [], []
        for split, ks in per_split.items():
            for k in ks:
                fnames.append(f"car_ims/{len(fnames) + 1:06d}.jpg")
                labels.append(k)
                flags.append(int(split == "test"))
                write_image(base / fnames[-1], k)
        savemat(base / "cars_annos.mat", {"annotations": _cars_records(fnames, labels, relative=True,
                                                                        test_flags=flags),
                                          "class_names": class_names})
        return base
    devkit = base / ("car_devkit/devkit" if variant == "kaggle" else "devkit")
    devkit.mkdir(parents=True, exist_ok=True)
    savemat(devkit / "cars_meta.mat", {"class_names": class_names})
    for split, ks in per_split.items():
        order = np.random.default_rng(len(ks)).permutation(len(ks))  # the devkit lists cars in no class order
        fnames = [f"{j + 1:05d}.jpg" for j in range(len(ks))]
        labels = [ks[j] for j in order]
        folder = base / f"cars_{split}" / (f"cars_{split}" if variant == "kaggle" else "")
        for fname, k in zip(fnames, labels):
            write_image(folder / fname, k)
        if split == "train":
            savemat(devkit / "cars_train_annos.mat", {"annotations": _cars_records(fnames, labels)})
        else:
            savemat(devkit / "cars_test_annos.mat", {"annotations": _cars_records(fnames, labels, with_class=False)})
            savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _cars_records(fnames, labels)})
    return base


def _caltech101(root, classes, n_train, n_test):
    base = root / "caltech101"
    names = ["Faces", "Leopards", "accordion", "airplanes", "anchor"][:classes]
    for k, name in enumerate(names):
        for i in range(n_train + n_test):
            write_image(base / "101_ObjectCategories" / name / f"image_{i + 1:04d}.jpg", k)
    for i in range(3):  # the clutter class every loader must drop
        write_image(base / "101_ObjectCategories" / "BACKGROUND_Google" / f"image_{i + 1:04d}.jpg", 99)
    return base


def _artbench10(root, classes, n_train, n_test):
    base = root / "artbench-10-imagefolder-split"
    styles = ["art_nouveau", "baroque", "expressionism", "impressionism", "post_impressionism"][:classes]
    for k, style in enumerate(styles):
        for i in range(n_train + n_test):
            split = "train" if i < n_train else "test"
            write_image(base / split / style / f"{style}-artist-{i:03d}.jpg", k)
    return base


def _df20mini(root, classes, n_train, n_test):
    species = ["Amanita muscaria", "Boletus edulis", "Mycena galericulata", "Russula ochroleuca",
               "Clitocybe nebularis"][:classes]
    columns = ["gbifID", "eventDate", "kingdom", "genus", "species", "scientificName", "Substrate", "Habitat",
               "image_path", "class_id", "ObservationID"]
    tables = {"train": [], "test": []}
    for k, name in enumerate(species):
        for i in range(n_train + n_test):
            image = f"{2237851000 + 10 * k + i}-{75000 + i}.JPG"
            write_image(root / "DF20M" / image, k)
            row = [2237851000 + k, "2019-10-05", "Fungi", name.split()[0], name, f"{name} (L.) Lam., 1783",
                   "soil", "Mixed woodland (with coniferous and deciduous trees)", image, 3 * k + 1, 100 + i]
            tables["train" if i < n_train else "test"].append(row)
    # a row without a species determination, as the real metadata has: it must be ignored
    write_image(root / "DF20M" / "2237859999-1.JPG", 99)
    tables["train"].append([2237859999, "2019-10-06", "Fungi", "", "", "", "wood", "", "2237859999-1.JPG", "", 1])
    for split, name in (("train", "DF20M-train_metadata_PROD.csv"), ("test", "DF20M-public_test_metadata_PROD.csv")):
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(tables[split])
    return root


def _folder(root, classes, n_train, n_test, split_dirs=True):
    names = ["cats", "dogs", "fish", "owls", "yaks"][:classes]
    for k, name in enumerate(names):
        for i in range(n_train + n_test):
            split = ("train" if i < n_train else "test") if split_dirs else ""
            write_image(root / split / name / f"{i:03d}.png", k)
    return root


WRITERS: dict[str, Callable] = {
    "food101": _food101, "cub200": _cub200, "sun397": _sun397, "stanford_cars": _stanford_cars,
    "caltech101": _caltech101, "artbench10": _artbench10, "df20mini": _df20mini, "folder": _folder,
}


def write_miniature(name: str, root, classes: int = 3, n_train: int = 3, n_test: int = 2, **variant) -> Path:
    """Write a miniature ``name`` dataset under ``root`` (classes <= 5; ``n_train``/``n_test`` images per class)
    and return its base folder. Caltech-101 has no official split: there ``n_train + n_test`` images per class
    are written and the loader's split rule decides."""
    if name not in WRITERS:
        raise ValueError(f"no miniature writer for {name!r}; have {', '.join(WRITERS)}")
    if not 1 <= classes <= 5:
        raise ValueError("classes must be in 1..5")
    return WRITERS[name](Path(root), classes, n_train, n_test, **variant)
