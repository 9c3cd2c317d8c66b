"""What ``dogbench prepare DATASET`` does: fetch a dataset where a public source exists, check what is on disk (image counts
per split against the official ones, class counts, files the lists name but the disk lacks), or print exactly what
to place where.

The official counts are checked here and not in ``get_dataset``, so that small or partial copies (the miniature
trees of the tests, a subset for a quick run) still load.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from benchmark.errors import UserError
from benchmark.data.downloads import NetworkError
from benchmark.data.registry import DatasetSpec, get_dataset

# Caltech-101 split by the train.txt/test.txt lists of github.com/MachineLearning2020/Homework2-Caltech101
CALTECH101_LIST_COUNTS = {"train": 5784, "test": 2893, "all": 8677}


def download(spec: DatasetSpec, target: Path) -> None:
    """Fetch ``spec``'s archives into ``target`` unless the dataset is already there; one-line errors."""
    if spec.locate(target) is not None:
        print(f"{spec.title} is already under {target}; checking it")
        return
    if spec.download is None:
        raise UserError(f"{spec.title} has no download here ({spec.source}); place the files as: {spec.layout} "
                        f"under {target}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe_file = target / ".dogbench-write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {target} ({e.strerror}); pass --root PATH to a writable folder") from e
    print(f"downloading {spec.title} into {target} (from {spec.source})")
    try:
        spec.download(target)
    except NetworkError as e:
        raise UserError(f"{e}; place the files as: {spec.layout} under {target} (source: {spec.source})") from e


def placement_instructions(spec: DatasetSpec, root: Path) -> str:
    """What to fetch and where to put it, when the dataset is not under ``root``."""
    if spec.path is not None:
        return spec.missing_message(root)
    if spec.npz:
        return (f"{spec.title} is not under {root}: expected the file {root / spec.npz}\n"
                f"It is part of {spec.source}.")
    looked = ", ".join(str(p) for p in spec.candidates(root))
    target = root if root.name == spec.name else root / spec.name
    lines = [f"{spec.title} is not under {root} (looked in: {looked}).",
             f"Get:    {spec.source}",
             f"Place:  {spec.layout}",
             f"        under {target} (or any folder; then pass it as --root)",
             f"Check:  dogbench prepare {spec.name} --root {target}"]
    if spec.download is not None:
        lines.append(f"Or fetch it (needs internet): dogbench prepare {spec.name} --root {target} --download")
    return "\n".join(lines)


def expected_counts(spec: DatasetSpec, base: Path) -> dict:
    if spec.name == "caltech101" and (base / "train.txt").exists():
        return CALTECH101_LIST_COUNTS
    return spec.expected


def verify(spec: DatasetSpec, root: Path, check_images: bool = False) -> tuple[bool, list[str]]:
    """Check the dataset under ``root`` split by split. Returns (all good, report lines). Raises UserError when
    the layout itself is incomplete (a list file or folder missing)."""
    found = spec.locate(root)
    lines, problems = [f"{spec.title} at {found}"], []
    splits = ("train", "test") if spec.npz else spec.splits_in(found)
    expected = spec.expected if spec.npz else expected_counts(spec, found)
    if "all" in expected and len(splits) == 2:
        splits = splits + ("all",)
    for split in splits:
        ds = get_dataset(spec, split, root=root)
        present = int((ds.class_counts() > 0).sum())
        line = f"  {split:<5} {len(ds):>7} images, {present}/{ds.num_classes} classes"
        want = expected.get(split)
        if want is not None:
            line += f", expected {want}"
            if len(ds) != want:
                problems.append(f"{split}: {len(ds)} images where the official distribution has {want}")
        missing = _missing_files(ds) if split != "all" else []
        if missing:
            line += f", {len(missing)} missing on disk"
            problems.append(f"{split}: {len(missing)} listed files are not on disk (e.g. {missing[0]})")
        if check_images and split != "all":
            try:
                bad = ds.check_images(progress=True)
                line += f", {bad} unreadable"
            except UserError as e:
                problems.append(f"{split}: {e}")
        lines.append(line)
        if spec.num_classes is not None and ds.num_classes != spec.num_classes and split == splits[0]:
            problems.append(f"{ds.num_classes} classes where {spec.title} has {spec.num_classes}")
    if problems:
        lines += [f"problem: {p}" for p in problems]
        lines.append(f"{spec.title} is incomplete or not the official distribution: see above")
    else:
        lines.append(f"ok: get_dataset({spec.name!r}, root={str(root)!r}) reads it")
    return not problems, lines


def _missing_files(ds) -> list[str]:
    files: Optional[list] = getattr(ds, "files", None)
    if files is None:  # an .npz-backed set has no per-image files
        return []
    return [f for f in files if not os.path.exists(ds.root / f)]
