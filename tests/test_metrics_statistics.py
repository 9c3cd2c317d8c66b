"""Feature statistics as a torchmetrics Metric: the same numbers as the two-pass fit, in one process and sharded over
two gloo processes (what a multi-GPU evaluation does)."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmark.metrics.features import FeatureNetwork, feature_statistics, state_dict_sha256
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.statistics import FeatureStatistics


def features(n=600, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, (n, d)) @ rng.normal(0, 1, (d, d))).astype(np.float32)


def feed(metric, x, rows):
    for start in range(0, len(rows), 37):
        batch = rows[start:start + 37]
        metric.update(torch.from_numpy(x[batch]), torch.as_tensor(batch))


@pytest.mark.parametrize("keep", [True, False])
def test_one_process_matches_the_two_pass_fit(keep):
    x = features()
    metric = FeatureStatistics(x.shape[1], keep_features=keep)
    feed(metric, x, list(range(len(x))))
    out = metric.compute()
    mu, sigma = gaussian_stats(x)
    ref_mu, ref_sigma = gaussian_stats(features(seed=1))
    if keep:  # bit for bit what earlier releases computed, rows back in order
        assert np.array_equal(out["mu"], mu) and np.array_equal(out["sigma"], sigma)
        assert np.array_equal(out["features"], x)
    np.testing.assert_allclose(out["mu"], mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out["sigma"], sigma, rtol=1e-6, atol=1e-9)
    fd = frechet_distance(out["mu"], out["sigma"], ref_mu, ref_sigma)
    assert fd == pytest.approx(frechet_distance(mu, sigma, ref_mu, ref_sigma), rel=1e-6)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 8 * 8, 16)

    def forward(self, x):
        return self.proj(x.flatten(1))


def tiny_network():
    module = Linear()
    return FeatureNetwork("linear", 16, module, lambda image: torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1),
                          state_dict_sha256(module))


def images():
    return list(np.random.default_rng(2).integers(0, 256, (53, 8, 8, 3), dtype=np.uint8))


def _worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        x = features()
        sums = FeatureStatistics(x.shape[1], keep_features=False)
        kept = FeatureStatistics(x.shape[1], keep_features=True)
        mine = list(range(rank, len(x), world))  # the shard of this rank, as the harness shards images
        feed(sums, x, mine)
        feed(kept, x, mine)
        result = {"sums": sums.compute(), "kept": kept.compute(),
                  "network": feature_statistics(tiny_network(), images(), batch_size=1, device="cpu", progress=False)}
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_gloo_processes_reduce_to_the_whole_set(tmp_path):
    out = tmp_path / "stats"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    x = features()
    mu, sigma = gaussian_stats(x)
    # one image per batch: the features themselves do not depend on how images are batched across ranks
    single = feature_statistics(tiny_network(), images(), batch_size=1, device="cpu", progress=False)
    ref_mu, ref_sigma = gaussian_stats(features(d=16, seed=1))
    for rank in (0, 1):  # every rank ends with the statistics of the whole set
        result = torch.load(f"{out}.{rank}", weights_only=False)
        assert result["sums"]["n"] == result["kept"]["n"] == len(x)
        np.testing.assert_allclose(result["sums"]["sigma"], sigma, rtol=1e-6, atol=1e-9)
        assert np.array_equal(result["kept"]["features"], x) and np.array_equal(result["kept"]["sigma"], sigma)
        net = result["network"]
        assert np.array_equal(net["features"], single["features"]) and np.array_equal(net["sigma"], single["sigma"])
        assert frechet_distance(net["mu"], net["sigma"], ref_mu, ref_sigma) == \
            pytest.approx(frechet_distance(single["mu"], single["sigma"], ref_mu, ref_sigma), rel=1e-6)
