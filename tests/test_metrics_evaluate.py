"""Reference-statistics caching/invalidation and evaluate_samples / ``dogbench evaluate`` end to end, with a tiny
feature network passed through the same FeatureNetwork interface as the real ones."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from benchmark.cli import main
from benchmark.io import IntegrityError
from benchmark.metrics import FeatureNetwork, ResizePreprocess, evaluate_samples, reference_stats
from benchmark.metrics.features import state_dict_sha256
from benchmark.metrics.frechet import gaussian_stats


class CountingNet(nn.Module):
    """A fixed random conv net (8-d features) that counts the images it has seen."""

    def __init__(self, seed=0, dim=8):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, dim, 4, stride=4)
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def tiny_network(seed=0, name="tiny") -> FeatureNetwork:
    module = CountingNet(seed)
    return FeatureNetwork(name=name, dim=8, module=module, preprocess=ResizePreprocess(16),
                          weights_sha256=state_dict_sha256(module))


def make_images(n, seed, bright=0.0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, size=(n, 1, 1, 3)) * 160 + bright
    noise = rng.normal(0, 30, size=(n, 12, 12, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


class FakeDataset(torch.utils.data.Dataset):
    """Just the data contract: (PIL, label) items, name, split, resolution, fingerprint()."""

    def __init__(self, images, name="fake", split="all", version="v1"):
        self.images, self.name, self.split, self.version = images, name, split, version
        self.labels = np.zeros(len(images), dtype=np.int64)
        self.resolution, self.num_classes, self.class_names = 12, 1, ["x"]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), 0

    def fingerprint(self):
        return f"{self.version}-{len(self.images)}"


def test_reference_stats_are_cached_and_invalidated(tmp_path):
    ds = FakeDataset(make_images(40, 0))
    net = tiny_network()
    first = reference_stats(ds, net, cache_dir=tmp_path, batch_size=16, device="cpu", progress=False)
    assert net.module.seen == 40 and first.n_images == 40 and first.path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # atomic write left no temp file
    # the cached Gaussian is the Gaussian of the features
    feats = torch.stack([net.preprocess(ds[i][0]) for i in range(len(ds))])
    with torch.no_grad():
        mu, sigma = gaussian_stats(net.module(feats).numpy())
    np.testing.assert_allclose(first.mu, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.sigma, sigma, rtol=1e-4, atol=1e-7)

    seen = net.module.seen
    again = reference_stats(ds, net, cache_dir=tmp_path, batch_size=16, device="cpu", progress=False)
    assert net.module.seen == seen  # nothing recomputed
    np.testing.assert_array_equal(again.mu, first.mu)
    np.testing.assert_array_equal(again.prdc_features, first.prdc_features)

    # new data on disk (fingerprint), other weights, other preprocessing, other split, other subset -> recomputed
    changed = [
        (FakeDataset(ds.images, version="v2"), net, {}),
        (ds, tiny_network(seed=1), {}),
        (ds, FeatureNetwork("tiny", 8, net.module, ResizePreprocess(20), net.weights_sha256), {}),
        (FakeDataset(ds.images, split="train"), net, {}),
        (ds, net, {"max_images": 30}),
    ]
    paths = {first.path}
    for dataset, network, kw in changed:
        before = network.module.seen
        stats = reference_stats(dataset, network, cache_dir=tmp_path, batch_size=16, device="cpu", progress=False, **kw)
        assert network.module.seen - before == kw.get("max_images", 40)
        paths.add(stats.path)
    assert len(paths) == len(changed) + 1


def test_a_corrupt_cache_file_is_one_line_then_recomputed(tmp_path):
    ds = FakeDataset(make_images(20, 0))
    net = tiny_network()
    path = reference_stats(ds, net, cache_dir=tmp_path, device="cpu", progress=False).path
    good = path.read_bytes()
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mu"][0] += 1e-3  # a readable file whose values changed after it was written
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # a flipped byte (zip's CRC catches it)
    for broken in (b"not an npz", bytes(flipped), arrays):
        if isinstance(broken, dict):
            np.savez(path.with_suffix(""), **broken)  # np.savez adds .npz
        else:
            path.write_bytes(broken)
        with pytest.raises(IntegrityError, match=f"{path.name} is (corrupted|unreadable).*delete it"):
            reference_stats(ds, net, cache_dir=tmp_path, device="cpu", progress=False)
    path.unlink()
    stats = reference_stats(ds, net, cache_dir=tmp_path, device="cpu", progress=False)
    assert net.module.seen == 40 and stats.mu.shape == (8,)


def write_pngs(folder, images):
    (folder / "shard1").mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / ("shard1" if i % 2 else "") / f"{i:05d}.png")


def test_evaluate_samples_end_to_end(tmp_path):
    ref = FakeDataset(make_images(80, 0))
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_pngs(good, make_images(60, 1))             # same distribution as the reference
    write_pngs(bad, make_images(60, 2, bright=90))   # brighter: a different distribution
    nets = {"effnet": tiny_network(), "dinov2": tiny_network(seed=5, name="tiny_dino")}
    kw = dict(networks=nets, cache_dir=tmp_path / "cache", device="cpu", batch_size=25, progress=False)

    r_good = evaluate_samples(good, ref, "fd_effnet,prdc", **kw)
    r_bad = evaluate_samples(bad, ref, ["fd_effnet", "prdc"], **kw)
    assert set(r_good["metrics"]) == {"fd_effnet", "precision", "recall", "density", "coverage"}
    assert r_good["metrics"]["fd_effnet"] < 0.25 * r_bad["metrics"]["fd_effnet"]
    assert r_good["metrics"]["precision"] > r_bad["metrics"]["precision"]
    assert r_good["metrics"]["coverage"] > r_bad["metrics"]["coverage"]

    written = json.loads((good / "metrics.json").read_text())
    assert written["metrics"] == pytest.approx(r_good["metrics"])
    proto = written["protocol"]["fd_effnet"]
    assert proto["network"] == "tiny" and proto["weights_sha256"] == nets["effnet"].weights_sha256
    assert proto["n_samples"] == 60 and proto["n_reference"] == 80 and "bicubic" in proto["resize"]
    assert proto["reference"] == {"dataset": "fake", "split": "all", "fingerprint": "v1-80", "n_dataset": 80}
    assert written["protocol"]["prdc"]["k"] == 5 and written["protocol"]["prdc"]["network"] == "tiny_dino"

    # a later run of another metric keeps the earlier ones; changed samples drop them
    seen = nets["effnet"].module.seen
    evaluate_samples(good, ref, "prdc", **kw)
    assert nets["effnet"].module.seen == seen
    assert set(json.loads((good / "metrics.json").read_text())["metrics"]) == set(r_good["metrics"])
    Image.fromarray(make_images(1, 9)[0]).save(good / "99999.png")
    evaluate_samples(good, ref, "prdc", **kw)
    assert "fd_effnet" not in json.loads((good / "metrics.json").read_text())["metrics"]


def test_evaluate_samples_from_memory_writes_nothing(tmp_path):
    ref = FakeDataset(make_images(30, 0))
    result = evaluate_samples(make_images(20, 1), ref, "fd_effnet", networks={"effnet": tiny_network()},
                              cache_dir=tmp_path, device="cpu", progress=False)
    assert result["n_samples"] == 20 and result["metrics"]["fd_effnet"] > 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]


def test_cli_missing_weights_is_one_line(tmp_path, monkeypatch, capsys):
    write_pngs(tmp_path / "samples", make_images(4, 0))
    write_pngs(tmp_path / "reference", make_images(10, 0))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code = main(["evaluate", "--samples", str(tmp_path / "samples"), "--reference", str(tmp_path / "reference"),
                 "--metrics", "fid,prdc"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "pt_inception-2015-12-05-6726825d.pth" in err and str(tmp_path / "hub" / "checkpoints") in err
    assert not (tmp_path / "samples" / "metrics.json").exists()


def test_cli_rejects_unknown_metrics_and_empty_dirs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--samples", str(tmp_path / "empty"), "--dataset", "x", "--metrics", "fid"]) == 1
    assert "no images (png, jpg, webp)" in capsys.readouterr().err
    assert main(["evaluate", "--samples", str(tmp_path), "--dataset", "x", "--metrics", "fid,is"]) == 1
    assert "--metrics: unknown metric 'is'" in capsys.readouterr().err


def test_feature_networks_load_once_per_process_and_again_for_other_weights(tmp_path, monkeypatch):
    from benchmark.metrics import evaluate
    loads = []
    monkeypatch.setattr(evaluate, "_load_network", lambda space, *args: loads.append(args) or object())
    first = tmp_path / "a.pth"
    first.write_bytes(b"1")
    assert evaluate.build_network("inception", inception_weights=first) is evaluate.build_network(
        "inception", inception_weights=first)
    assert len(loads) == 1
    first.write_bytes(b"22")  # replaced in place: loaded again
    evaluate.build_network("inception", inception_weights=first)
    assert len(loads) == 2
    assert evaluate.build_network("effnet", resolution=32) is not evaluate.build_network("effnet", resolution=64)
    assert len(loads) == 4
