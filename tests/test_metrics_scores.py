"""A scored sample set (benchmark.metrics.scores): its columns on all samples are the metrics themselves, a bootstrap
index resamples them, one reference's shared pieces are computed once, and a new kind of metric plugs in at one
place."""
import numpy as np
import pytest

from benchmark.metrics import scores
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.prdc import prdc
from benchmark.metrics.reference import ReferenceStats, save_arrays
from benchmark.metrics.registry import METRICS, Metric


def reference(rng, dim=5):
    real = rng.normal(0, 1, (400, dim))
    mu, sigma = gaussian_stats(real)
    return ReferenceStats(mu, sigma, real[:200].astype(np.float32), 400, {})


def test_columns_are_the_metrics_and_an_index_resamples_them():
    rng = np.random.default_rng(0)
    ref = scores.Reference(reference(rng))
    fake = (rng.normal(0, 1, (60, 5)) + 0.5).astype(np.float32)
    scored = scores.ScoredSet({"effnet": fake}, {"effnet": ref})
    values = scored(["fd_effnet", "prdc_effnet"])
    assert values["fd_effnet"] == pytest.approx(frechet_distance(*gaussian_stats(fake), ref.stats.mu, ref.stats.sigma),
                                                rel=1e-9)
    expected = prdc(ref.stats.prdc_features, fake, k=5, device="cpu")
    assert {k: values[f"{k}_effnet"] for k in expected} == pytest.approx(expected)
    index = rng.integers(0, 60, 60)
    again = scores.ScoredSet({"effnet": fake[index]}, {"effnet": scores.Reference(ref.stats)})
    assert scored(["fd_effnet"], index)["fd_effnet"] == pytest.approx(again(["fd_effnet"])["fd_effnet"], rel=1e-6)
    assert set(ref.shared) == {"root", "real_radii"}  # computed once, for every set against this reference


def test_from_an_evaluation_result_and_its_cached_files(tmp_path):
    rng = np.random.default_rng(1)
    stats = reference(rng)
    save_arrays(tmp_path / "ref.npz", mu=stats.mu, sigma=stats.sigma, prdc_features=stats.prdc_features,
                n_images=np.int64(400), protocol=np.array("{}"))
    fake = rng.normal(0, 1, (30, 5)).astype(np.float32)
    save_arrays(tmp_path / "features-x.npz", features=fake, key=np.array("{}"))
    result = {"features": {"effnet": "features-x.npz"}, "reference": {"effnet": "ref.npz"}}
    scored = scores.ScoredSet.from_result(result, tmp_path, scores.References(tmp_path))
    assert scored(["fd_effnet"])["fd_effnet"] == pytest.approx(frechet_distance(*gaussian_stats(fake), stats.mu,
                                                                                stats.sigma), rel=1e-9)
    assert scored.result == result


def test_a_new_kind_of_metric_plugs_in_at_one_place(monkeypatch):
    monkeypatch.setitem(METRICS, "mean_norm", Metric("mean_norm", "effnet", "mean_norm", ("mean_norm",), "test"))

    def mean_norm(metric, scored):
        features = scored.features(metric.space)
        return lambda index: {"mean_norm": float(np.linalg.norm(features if index is None else features[index],
                                                                axis=1).mean())}

    monkeypatch.setitem(scores.RESAMPLERS, "mean_norm", mean_norm)
    fake = np.ones((4, 3), dtype=np.float32)
    scored = scores.ScoredSet({"effnet": fake}, {"effnet": None})
    assert scored(["mean_norm"])["mean_norm"] == pytest.approx(np.sqrt(3))
