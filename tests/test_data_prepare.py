"""`dogbench prepare`: verification against official counts, placement instructions, downloads (never over the
network here: the downloader and the socket are replaced)."""
import dataclasses
import os
import socket
import urllib.error

import pytest

from benchmark.cli import main
from benchmark.data import DATASETS, downloads
from benchmark.data.prepare import verify
from benchmark.io import REPO_ROOT
from conftest import run_if
from miniature import write_miniature


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails as it would offline, and is recorded."""
    attempts = []

    def offline(address, *args, **kwargs):
        attempts.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(downloads.socket, "create_connection", offline)
    return attempts


def run(capsys, *argv):
    code = main(["prepare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_counts_checked_against_the_official_ones(tmp_path, capsys):
    write_miniature("cub200", tmp_path)
    code, out, _ = run(capsys, "cub200", "--root", str(tmp_path))
    assert code == 1
    assert "train       9 images, 3/3 classes, expected 5994" in out
    assert "problem: train: 9 images where the official distribution has 5994" in out
    assert "problem: 3 classes where CUB-200-2011 has 200" in out


def test_a_complete_copy_passes(tmp_path, capsys, monkeypatch):
    write_miniature("cub200", tmp_path, classes=2, n_train=2, n_test=1)
    small = dataclasses.replace(DATASETS["cub200"], num_classes=2, expected={"train": 4, "test": 2})
    monkeypatch.setitem(DATASETS, "cub200", small)
    code, out, _ = run(capsys, "cub200", "--root", str(tmp_path))
    assert code == 0 and "problem" not in out and out.rstrip().endswith("reads it")


def test_files_missing_from_disk_are_reported(tmp_path):
    base = write_miniature("food101", tmp_path)
    os.remove(base / "images" / "baklava" / "1002.jpg")
    ok, lines = verify(DATASETS["food101"], tmp_path)
    assert not ok
    assert any("1 listed files are not on disk (e.g. images/baklava/1002.jpg)" in line for line in lines)


def test_check_images_counts_unreadable_ones(tmp_path):
    base = write_miniature("artbench10", tmp_path)
    (base / "train" / "baroque" / "baroque-artist-000.jpg").write_bytes(b"broken")
    ok, lines = verify(DATASETS["artbench10"], tmp_path, check_images=True)
    assert not ok and any("unreadable" in line and "train" in line for line in lines)


def test_folder_has_no_official_counts(tmp_path, capsys):
    write_miniature("folder", tmp_path, classes=2)
    code, out, _ = run(capsys, "folder", "--root", str(tmp_path))
    assert code == 0 and "train       6 images, 2/2 classes" in out


def test_missing_dataset_prints_what_to_place_where(tmp_path, capsys):
    code, out, _ = run(capsys, "sun397", "--root", str(tmp_path))
    assert code == 1
    assert "Partitions/{ClassName,Training_01,Testing_01}.txt" in out and "SUN397.tar.gz from http" in out
    assert f"under {tmp_path / 'sun397'}" in out and f"dogbench prepare sun397 --root {tmp_path / 'sun397'}" in out


def test_download_offline_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, no_network):
    called = []
    monkeypatch.setattr(downloads, "download_and_extract", lambda *a, **k: called.append(a))
    code, out, err = run(capsys, "food101", "--root", str(tmp_path), "--download")
    assert code == 1 and not called and no_network == [("data.vision.ee.ethz.ch", 80)]
    assert err.count("\n") == 1
    assert "cannot reach the download host data.vision.ee.ethz.ch (offline?" in err
    assert "place the files as: food-101/ with images/<class>/<id>.jpg" in err


def test_download_failing_mid_transfer_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(downloads, "probe", lambda url: None)

    def broken(url, *args):
        raise urllib.error.URLError(ConnectionResetError(104, "Connection reset by peer"))

    monkeypatch.setattr(downloads, "download_and_extract", broken)
    code, _, err = run(capsys, "cub200", "--root", str(tmp_path), "--download")
    assert code == 1 and err.count("\n") == 1
    assert "downloading https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz failed" in err
    assert "place the files as: CUB_200_2011/" in err


def test_download_then_verify(tmp_path, capsys, monkeypatch):
    """The archive 'arrives' (the miniature stands in for it) and is then checked like any copy."""
    monkeypatch.setattr(downloads, "probe", lambda url: None)
    fetched = []

    def fake(url, target, extract_to, md5):
        fetched.append(url)
        write_miniature("artbench10", extract_to)

    monkeypatch.setattr(downloads, "download_and_extract", fake)
    code, out, _ = run(capsys, "artbench10", "--root", str(tmp_path), "--download")
    assert fetched == [downloads.ARTBENCH10_URL]
    assert code == 1 and "train       9 images, 3/3 classes, expected 50000" in out  # a miniature, not the real one
    code, out, _ = run(capsys, "artbench10", "--root", str(tmp_path), "--download")
    assert fetched == [downloads.ARTBENCH10_URL] and "already under" in out  # not fetched twice


def test_default_download_target_is_under_the_data_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DOGBENCH_DATA", str(tmp_path))
    monkeypatch.setattr(downloads, "probe", lambda url: None)
    monkeypatch.setattr(downloads, "download_and_extract",
                        lambda url, target, extract_to, md5: write_miniature("food101", extract_to))
    run(capsys, "food101", "--download")
    assert (tmp_path / "food101" / "food-101" / "meta" / "classes.txt").is_file()


def test_dataset_without_public_download(tmp_path, capsys):
    code, _, err = run(capsys, "stanford_cars", "--root", str(tmp_path), "--download")
    assert code == 1 and err.count("\n") == 1
    assert "Stanford Cars has no download here" in err and "cars_test_annos_withlabels.mat" in err


def test_incomplete_layout_is_one_line(tmp_path, capsys):
    base = write_miniature("cub200", tmp_path)
    os.remove(base / "train_test_split.txt")
    code, _, err = run(capsys, "cub200", "--root", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "missing train_test_split.txt" in err


@run_if(shared_data="cub100")
def test_shared_sets_verify(capsys):
    code, out, _ = run(capsys, "cub100-32", "--data-root", str(REPO_ROOT.parent / "shared" / "data"))
    assert code == 0 and "train    2999 images, 100/100 classes, expected 2999" in out


def test_shared_set_missing(tmp_path, capsys):
    code, out, _ = run(capsys, "cifar10-32", "--root", str(tmp_path))
    assert code == 1 and str(tmp_path / "cifar10" / "cifar10_32_jpeg.npz") in out
    code, _, err = run(capsys, "cifar10-32", "--root", str(tmp_path), "--download")
    assert code == 1 and "no download here" in err


def test_a_set_that_ships_with_the_package_is_checked_where_run_reads_it(tmp_path, capsys):
    """The data root lacks caltech101-32, so `dogbench run` reads the packaged copy: prepare checks that copy."""
    code, out, _ = run(capsys, "caltech101-32", "--root", str(tmp_path))
    assert code == 0 and "the copy that ships with the package is used" in out
    assert "train    5784 images, 101/101 classes, expected 5784" in out
