"""Fetching the official archives of the datasets that still have a public source.

Each ``download_<name>(target)`` unpacks into ``target`` so that the registry finds the dataset there (the archive's
own top folder is one of the places it looks). Before fetching, the host is probed with a short timeout, so that on
a machine without internet ``dogbench prepare --download`` fails in well under a second instead of hanging.
"""
from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Optional


from torchvision.datasets.utils import download_and_extract_archive, extract_archive

from benchmark.io import NetworkError, probe

# what a failed transfer raises (urllib wraps most in URLError; a dropped connection mid-file does not)
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror, http.client.HTTPException)


def download_and_extract(url: str, target: Path, extract_to: Path, md5: Optional[str]) -> None:
    """torchvision's downloader (progress bar, md5 check, tar/zip/gz extraction)."""
    download_and_extract_archive(url, download_root=str(target), extract_root=str(extract_to), md5=md5)


def extract(archive: Path, to: Path) -> None:
    extract_archive(str(archive), str(to))


def fetch(url: str, target: Path, md5: Optional[str] = None, extract_to: Optional[Path] = None) -> Path:
    """Download ``url`` into ``target`` (kept there, so an interrupted run can resume by rerunning: a complete file
    with the right md5 is not fetched again) and extract it into ``extract_to`` (default ``target``)."""
    target.mkdir(parents=True, exist_ok=True)
    probe(url)
    try:
        download_and_extract(url, target, extract_to or target, md5)
    except NETWORK_ERRORS as e:
        raise NetworkError(f"downloading {url} failed ({e})") from e
    return target / Path(urllib.parse.urlsplit(url).path).name


FOOD101_URL = "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"
FOOD101_MD5 = "85eeb15f3717b99a5da872d97d918f87"
SUN397_URL = "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz"
SUN397_MD5 = "8ca2778205c41d23104230ba66911c7a"
SUN397_PARTITIONS_URL = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"
CALTECH101_URL = "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip"
CALTECH101_MD5 = "3138e1922a9193bfa496528edbbc45d0"
CUB200_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
ARTBENCH10_URL = "https://artbench.eecs.berkeley.edu/files/artbench-10-imagefolder-split.tar"
DF20M_IMAGES_URL = "http://ptak.felk.cvut.cz/plants/DanishFungiDataset/DF20M-images.tar.gz"
DF20M_METADATA_URL = "http://ptak.felk.cvut.cz/plants/DanishFungiDataset/DF20M-metadata.zip"


def download_food101(target: Path) -> None:
    fetch(FOOD101_URL, target, md5=FOOD101_MD5)                     # -> food-101/


def download_sun397(target: Path) -> None:
    fetch(SUN397_PARTITIONS_URL, target, extract_to=target / "Partitions")  # small: fail early if it is gone
    fetch(SUN397_URL, target, md5=SUN397_MD5)                       # -> SUN397/ (37 GB)


def download_caltech101(target: Path) -> None:
    # the zip holds caltech-101/101_ObjectCategories.tar.gz (and annotations we do not use)
    base = target / "caltech101"
    fetch(CALTECH101_URL, target, md5=CALTECH101_MD5, extract_to=base)
    extract(base / "caltech-101" / "101_ObjectCategories.tar.gz", base)  # -> caltech101/101_ObjectCategories/


def download_cub200(target: Path) -> None:
    fetch(CUB200_URL, target)                                       # -> CUB_200_2011/


def download_artbench10(target: Path) -> None:
    fetch(ARTBENCH10_URL, target)                                   # -> artbench-10-imagefolder-split/


def download_df20mini(target: Path) -> None:
    fetch(DF20M_METADATA_URL, target)                               # -> DF20M-*_metadata_PROD.csv
    fetch(DF20M_IMAGES_URL, target)                                 # -> DF20M/
