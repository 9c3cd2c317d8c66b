"""The real-data control under 1 and 2 processes (gloo on CPU), each computing its reference from scratch: the same
card, PRDC included. torchrun runs one thread per process, so the features differ from a 2-thread process's in the
last bits; the control's images are images of the reference, whose PRDC memberships used to turn on those bits
(density 1.18 vs 1.28 in the default experiment)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.metrics.effnet import effnet_network

METRICS = ["fd_effnet", "prdc_effnet", "kid_effnet", "vendi_effnet", "class_kid_effnet", "copy_effnet"]


def write_dataset(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            tint = rng.uniform(40, 220, size=3)
            for i in range(n):
                image = np.clip(tint + rng.normal(0, 45, size=(24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")


def control(data, cache):
    from benchmark.metrics.evaluate import evaluate_samples, real_control_images
    images, _ = real_control_images("folder", 24, seed=0, ref_split="all", data_root=data)
    return evaluate_samples(images, "folder", METRICS, data_root=data, cache_dir=cache, device="cpu",
                            batch_size=16, networks={"effnet": effnet_network(128)}, progress=False)["metrics"]


def _rank(rank, init_file, data, cache, out):
    import torch.distributed as dist
    torch.set_num_threads(1)  # what torchrun sets (OMP_NUM_THREADS=1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        values = control(data, cache)
        if rank == 0:
            out.write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # EfficientNet-Lite0 on ~100 images, three times, two of them in spawned processes
def test_the_real_control_is_the_same_under_one_and_two_processes(tmp_path):
    import torch.multiprocessing as mp
    write_dataset(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = control(tmp_path / "data", tmp_path / "cache-one")
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_rank, args=(tmp_path / "init", tmp_path / "data", tmp_path / "cache-two", tmp_path / "two.json"),
             nprocs=2)
    two = json.loads((tmp_path / "two.json").read_text())
    assert set(two) == set(one)
    for column in ("precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet", "copy_effnet"):
        assert two[column] == one[column], column  # counts: exactly the same
    # continuous in the features: equal up to their rounding (1e-6 relative; KID is a difference of O(1) kernel means)
    for column, tolerance in (("fd_effnet", dict(rel=1e-5)), ("vendi_effnet", dict(rel=1e-5)),
                              ("kid_effnet", dict(abs=1e-6)), ("class_kid_effnet", dict(abs=1e-6))):
        assert two[column] == pytest.approx(one[column], **tolerance), column
