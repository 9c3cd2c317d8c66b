"""Each official layout read from a miniature copy written in that layout (tests/miniature.py)."""
import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmark.errors import UserError
from benchmark.data import DATASETS, dataset_names, get_dataset, train_transform
from miniature import class_color, write_image, write_miniature

PAPER_SETS = ["food101", "sun397", "df20mini", "caltech101", "cub200", "artbench10", "stanford_cars"]


def label_matches_pixels(ds, i):
    image, label = ds[i]
    assert image.mode == "RGB"
    centre = np.asarray(image)[image.height // 2, image.width // 2].astype(int)
    return np.abs(centre - np.array(class_color(label))).max() <= 8


def test_registry_holds_the_seven_paper_sets_with_their_class_counts():
    assert dataset_names("paper") == PAPER_SETS
    assert {n: DATASETS[n].num_classes for n in PAPER_SETS} == {
        "food101": 101, "sun397": 397, "df20mini": 182, "caltech101": 101, "cub200": 200, "artbench10": 10,
        "stanford_cars": 196}
    assert dataset_names("shared") == ["cifar10-32", "caltech101-32", "cub100-32"]
    assert "folder" in dataset_names()
    for spec in DATASETS.values():
        assert "\n" not in spec.layout and spec.layout


@pytest.mark.parametrize("name", PAPER_SETS + ["folder"])
def test_miniature_layout_loads_with_right_labels(name, tmp_path):
    write_miniature(name, tmp_path, classes=3, n_train=3, n_test=2)
    train = get_dataset(name, "train", root=tmp_path)
    test = get_dataset(name, "test", root=tmp_path)
    everything = get_dataset(name, "all", root=tmp_path)
    assert train.num_classes == test.num_classes == 3
    assert train.class_names == test.class_names == everything.class_names
    if name == "caltech101":  # no official split: every third image of a class is a test image (5 -> 4 + 1)
        assert (len(train), len(test)) == (12, 3)
    else:
        assert (len(train), len(test)) == (9, 6)
        assert train.class_counts().tolist() == [3, 3, 3]
    assert len(everything) == len(train) + len(test)
    assert set(train.files).isdisjoint(test.files)
    assert sorted(everything.files) == sorted(train.files + test.files)
    assert train.labels.dtype == np.int64 and (train.name, train.split, train.resolution) == (name, "train", 256)
    for ds in (train, test):
        assert all(label_matches_pixels(ds, i) for i in range(len(ds)))


def test_food101_reads_meta_lists(tmp_path):
    base = write_miniature("food101", tmp_path)
    ds = get_dataset("food101", "test", root=tmp_path)
    assert ds.root == base and ds.class_names == ["apple_pie", "baby_back_ribs", "baklava"]
    first = (base / "meta" / "test.txt").read_text().split()[0]
    assert ds.files[0] == f"images/{first}.jpg"


def test_cub_uses_split_file_and_strips_number_prefix(tmp_path):
    base = write_miniature("cub200", tmp_path, classes=2, n_train=2, n_test=1)
    # flip one image to test in train_test_split.txt: the loader must follow the file, not the folder
    lines = (base / "train_test_split.txt").read_text().splitlines()
    lines[0] = "1 0"
    (base / "train_test_split.txt").write_text("\n".join(lines) + "\n")
    train, test = get_dataset("cub200", "train", root=tmp_path), get_dataset("cub200", "test", root=tmp_path)
    assert (len(train), len(test)) == (3, 3)
    assert train.class_names == ["Black_footed_Albatross", "Laysan_Albatross"]
    assert test.files[0] == "images/001.Black_footed_Albatross/Black_footed_Albatross_0000_100.jpg"


def test_sun397_partition_and_nested_class_names(tmp_path):
    write_miniature("sun397", tmp_path, classes=3)
    ds = get_dataset("sun397", "train", root=tmp_path)
    assert ds.class_names == ["abbey", "apartment_building/outdoor", "bakery/shop"]
    assert ds.files[3].startswith("SUN397/a/apartment_building/outdoor/sun_")
    with pytest.raises(UserError, match="Training_02.txt"):
        get_dataset("sun397", "train", root=tmp_path, partition=2)


@pytest.mark.parametrize("variant", ["torchvision", "kaggle", "all_in_one"])
def test_stanford_cars_layouts(variant, tmp_path):
    write_miniature("stanford_cars", tmp_path, classes=3, n_train=3, n_test=2, variant=variant)
    train, test = get_dataset("stanford_cars", "train", root=tmp_path), get_dataset("stanford_cars", "test",
                                                                                    root=tmp_path)
    assert (len(train), len(test)) == (9, 6)
    assert train.class_names[0] == "AM General Hummer SUV 2000"
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(label_matches_pixels(test, i) for i in range(len(test)))


def test_stanford_cars_without_test_labels_names_the_file(tmp_path):
    base = write_miniature("stanford_cars", tmp_path)
    os.remove(base / "cars_test_annos_withlabels.mat")
    get_dataset("stanford_cars", "train", root=tmp_path)  # train needs only the devkit
    with pytest.raises(UserError, match="cars_test_annos_withlabels.mat"):
        get_dataset("stanford_cars", "test", root=tmp_path)


def test_caltech101_drops_background_and_honours_split_lists(tmp_path):
    base = write_miniature("caltech101", tmp_path, classes=2, n_train=4, n_test=2)  # 6 images per class
    ds = get_dataset("caltech101", "all", root=tmp_path)
    assert "BACKGROUND_Google" not in ds.class_names and len(ds) == 12
    test = get_dataset("caltech101", "test", root=tmp_path)
    assert [f.rsplit("/", 1)[1] for f in test.files] == ["image_0003.jpg", "image_0006.jpg"] * 2
    # the Homework2-Caltech101 lists (what the shared caltech101-32 set uses) win when present
    (base / "train.txt").write_text("Faces/image_0001.jpg\nBACKGROUND_Google/image_0001.jpg\nLeopards/image_0002.jpg\n")
    (base / "test.txt").write_text("101_ObjectCategories/Faces/image_0004.jpg\n")
    train, test = get_dataset("caltech101", "train", root=tmp_path), get_dataset("caltech101", "test", root=tmp_path)
    assert train.files == ["101_ObjectCategories/Faces/image_0001.jpg", "101_ObjectCategories/Leopards/image_0002.jpg"]
    assert train.labels.tolist() == [0, 1] and test.files == ["101_ObjectCategories/Faces/image_0004.jpg"]


def test_df20mini_columns_and_unlabelled_rows(tmp_path):
    write_miniature("df20mini", tmp_path, classes=3, n_train=2, n_test=1)
    ds = get_dataset("df20mini", "train", root=tmp_path)
    assert len(ds) == 6  # the row without a species is ignored
    assert ds.class_names == ["Amanita muscaria", "Boletus edulis", "Mycena galericulata"]
    assert ds.files[0].startswith("DF20M/") and ds.files[0].endswith(".JPG")
    by_name = get_dataset("df20mini", "train", root=tmp_path, label_column="scientificName",
                          name_column="scientificName")
    assert by_name.class_names[0] == "Amanita muscaria (L.) Lam., 1783"
    with pytest.raises(UserError, match="no spore_colour column"):
        get_dataset("df20mini", "train", root=tmp_path, label_column="spore_colour")


def test_df20mini_label_set_is_shared_by_the_splits(tmp_path):
    write_miniature("df20mini", tmp_path, classes=3, n_train=2, n_test=1)
    path = tmp_path / "DF20M-public_test_metadata_PROD.csv"
    rows = list(csv.reader(open(path)))
    (tmp_path / path.name).write_text("\n".join(",".join(f'"{c}"' for c in r) for r in rows[:1] + rows[2:]) + "\n")
    test = get_dataset("df20mini", "test", root=tmp_path)  # class 0 now has no test image
    assert test.class_names == get_dataset("df20mini", "train", root=tmp_path).class_names
    assert test.labels.tolist() == [1, 2]


def test_folder_without_split_subfolders(tmp_path):
    write_miniature("folder", tmp_path, classes=2, n_train=2, n_test=1, split_dirs=False)
    ds = get_dataset("folder", "train", root=tmp_path)
    assert len(ds) == 6 and ds.class_names == ["cats", "dogs"]
    assert len(get_dataset("folder", "all", root=tmp_path)) == 6
    with pytest.raises(UserError, match="no test/ folder"):
        get_dataset("folder", "test", root=tmp_path)


def test_root_may_be_data_root_dataset_folder_or_archive_folder(tmp_path):
    base = write_miniature("cub200", tmp_path / "cub200")  # <data root>/cub200/CUB_200_2011
    for root in (tmp_path, tmp_path / "cub200", base):
        assert get_dataset("cub200", "train", root=root).root == base


def test_root_defaults_to_dogbench_data(tmp_path, monkeypatch):
    write_miniature("artbench10", tmp_path / "artbench10")
    monkeypatch.setenv("DOGBENCH_DATA", str(tmp_path))
    assert len(get_dataset("artbench10", "test")) == 6


def test_transform_is_applied(tmp_path):
    write_miniature("artbench10", tmp_path)
    x, y = get_dataset("artbench10", "train", root=tmp_path, transform=train_transform(16))[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() <= x.max() <= 1 and y == 0


# --- errors: one line, naming the layout and the fix ---
def one_line(error):
    return "\n" not in str(error.value)


def test_missing_dataset_names_layout_and_prepare(tmp_path):
    with pytest.raises(UserError) as e:
        get_dataset("food101", "train", root=tmp_path)
    assert "meta/{classes,train,test}.txt" in str(e.value) and "dogbench prepare food101" in str(e.value)
    assert one_line(e)


def test_incomplete_dataset_names_the_missing_piece(tmp_path):
    base = write_miniature("food101", tmp_path)
    os.remove(base / "meta" / "test.txt")
    get_dataset("food101", "train", root=tmp_path)
    with pytest.raises(UserError, match=r"incomplete: missing test.txt .*dogbench prepare food101") as e:
        get_dataset("food101", "test", root=tmp_path)
    assert one_line(e)
    shutil.rmtree(base / "images")
    with pytest.raises(UserError, match="images/ folder"):
        get_dataset("food101", "train", root=tmp_path)


def test_unknown_name_or_split(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'imagenet'"):
        get_dataset("imagenet", root=tmp_path)
    with pytest.raises(UserError, match="unknown split 'val'"):
        get_dataset("folder", "val", root=tmp_path)


def test_empty_class_is_an_error(tmp_path):
    write_miniature("folder", tmp_path, classes=2)
    (tmp_path / "train" / "zebras").mkdir()
    with pytest.raises(UserError, match="zebras/ holds no images"):
        get_dataset("folder", "train", root=tmp_path)
    # a list-based layout whose training list lost a class
    base = write_miniature("food101", tmp_path / "food")
    lines = [l for l in (base / "meta" / "train.txt").read_text().splitlines() if not l.startswith("baklava/")]
    (base / "meta" / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="no train images .*'baklava'"):
        get_dataset("food101", "train", root=tmp_path / "food")


def make_folder_set(root, per_class=100, classes=2):
    for k in range(classes):
        for i in range(per_class):
            write_image(root / f"c{k}" / f"{i:03d}.png", k, size=(8, 8))
    return root


def test_unreadable_image_is_skipped_counted_and_warned_once(tmp_path):
    root = make_folder_set(tmp_path, per_class=100)  # 200 images: 2 unreadable are within the 1% allowed
    (root / "c1" / "007.png").write_bytes(b"not a png")
    ds = get_dataset("folder", "train", root=root)
    i = ds.files.index("c1/007.png")
    with pytest.warns(RuntimeWarning, match="unreadable image .*007.png"):
        image, label = ds[i]
    assert label == 1 and np.asarray(image)[0, 0].tolist() == list(class_color(1))  # a same-class stand-in
    assert ds.unreadable == {i}
    (root / "c0" / "050.png").write_bytes(b"")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert ds[ds.files.index("c0/050.png")][1] == 0
    assert len(ds.unreadable) == 2
    (root / "c0" / "051.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match=r"3 of 200 images are unreadable \(more than 1%"):
        ds[ds.files.index("c0/051.png")]


def test_check_images_drops_unreadable_ones(tmp_path):
    root = make_folder_set(tmp_path, per_class=100)
    (root / "c1" / "007.png").write_bytes(b"garbage")
    ds = get_dataset("folder", "train", root=root)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        assert ds.check_images(progress=False) == 1
    assert len(ds) == 199 and "c1/007.png" not in ds.files and ds.class_counts().tolist() == [100, 99]
    for i in range(3):
        (root / "c0" / f"00{i}.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="unreadable"):
        get_dataset("folder", "train", root=root).check_images(progress=False)


def test_fingerprint_tracks_files_not_location(tmp_path):
    write_miniature("cub200", tmp_path / "a")
    fp = get_dataset("cub200", "train", root=tmp_path / "a").fingerprint()
    assert fp == get_dataset("cub200", "train", root=tmp_path / "a").fingerprint()
    assert fp != get_dataset("cub200", "test", root=tmp_path / "a").fingerprint()
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy2)  # copy2 keeps mtimes
    assert get_dataset("cub200", "train", root=tmp_path / "b").fingerprint() == fp
    image = tmp_path / "b" / "CUB_200_2011" / get_dataset("cub200", "train", root=tmp_path / "b").files[0]
    Image.new("RGB", (50, 50), (1, 2, 3)).save(image, format="JPEG")
    assert get_dataset("cub200", "train", root=tmp_path / "b").fingerprint() != fp


def test_subset_keeps_attributes(tmp_path):
    write_miniature("artbench10", tmp_path)
    ds = get_dataset("artbench10", "train", root=tmp_path)
    part = ds.subset([0, 4, 8])
    assert len(part) == 3 and part.labels.tolist() == [0, 1, 2] and part.num_classes == 3
    assert part.files == [ds.files[i] for i in (0, 4, 8)] and len(ds) == 9
    assert part.fingerprint() != ds.fingerprint()
