"""Bootstrap intervals: the fast resampled Frechet distance and PRDC equal the direct computations, the intervals
cover the sample-size-matched truth at about their nominal rate, pairing by sample index works, bad input fails in
one line."""
import mpmath
import numpy as np
import pytest
import torch

from benchmark.metrics import prdc
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.intervals import (FrechetResampler, Interval, PRDCResampler, bootstrap,
                                         fd_interval, paired_fd_difference, paired_prdc_difference, prdc_interval)


def random_reference(rng, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


def random_features(rng, n, d):
    """float32 features with an offset mean and correlated dimensions, as a feature network gives them."""
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5 + rng.normal(size=d)).astype(np.float32)


def direct_fd(features, mu, sigma):
    return frechet_distance(*gaussian_stats(features), mu, sigma)


# The direct formula takes square roots of the rounding-level eigenvalues of a covariance with fewer distinct samples
# than dimensions, which costs it ~1e-8 relative accuracy there; the 40-digit test below shows the resampler is the
# accurate one in that case.
@pytest.mark.parametrize("n, d, rel", [
    (300, 24, 1e-9),  # n > D, every resample has more distinct rows than D: D x D route
    (120, 100, 1e-7),  # n > D but resamples hold fewer distinct rows than D: Gram route computing the Gram matrix
    (50, 80, 1e-7),  # n < D: Gram route indexing the stored Gram matrix
])
def test_resampled_fd_equals_direct_computation(n, d, rel):
    rng = np.random.default_rng(n)
    mu, sigma = random_reference(rng, d)
    x = random_features(rng, n, d)
    resampler = FrechetResampler(x, mu, sigma)
    assert resampler() == pytest.approx(direct_fd(x, mu, sigma), rel=1e-9 if n > d else rel)
    for size in (n, n, n // 3):  # resamples with repeats, one of another size
        idx = rng.integers(0, n, size=size)
        assert resampler(idx) == pytest.approx(direct_fd(x[idx], mu, sigma), rel=rel)


@pytest.mark.parametrize("n, d", [(16, 24), (30, 24)])  # stored Gram matrix; Gram matrix of the distinct rows
def test_resampled_fd_with_fewer_distinct_samples_than_dimensions_is_accurate_to_1e9(n, d):
    # reference value in 40-digit arithmetic: the eigenvalues of the n x n matrix Xc Sigma_r Xc^T / (n - 1)
    rng = np.random.default_rng(n)
    mu, sigma = random_reference(rng, d)
    x = random_features(rng, n, d)
    idx = rng.integers(0, n, size=n)
    assert len(np.unique(idx)) < d
    mpmath.mp.dps = 40
    rows = mpmath.matrix(x[idx].astype(np.float64).tolist())
    mean = [mpmath.fsum(rows[i, j] for i in range(n)) / n for j in range(d)]
    centred = mpmath.matrix([[rows[i, j] - mean[j] for j in range(d)] for i in range(n)])
    inner = centred * mpmath.matrix(sigma.tolist()) * centred.T / (n - 1)
    root_trace = mpmath.fsum(mpmath.sqrt(max(e, 0)) for e in mpmath.eigsy(inner, eigvals_only=True))
    exact = (mpmath.fsum((mean[j] - mu[j]) ** 2 for j in range(d)) + mpmath.fsum(centred[i, j] ** 2 for i in range(n)
             for j in range(d)) / (n - 1) + mpmath.fsum(sigma[j, j] for j in range(d)) - 2 * root_trace)
    assert FrechetResampler(x, mu, sigma)(idx) == pytest.approx(float(exact), rel=1e-9)


def test_bootstrap_of_a_mean_matches_normal_theory_and_is_deterministic():
    sample = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    mean = lambda indices: float(sample.mean() if indices is None else sample[indices[0]].mean())
    interval = bootstrap(mean, [len(sample)], resamples=400, seed=1)
    assert interval.value == sample.mean() and interval.low < interval.value < interval.high
    half_width = 1.96 * sample.std(ddof=1) / np.sqrt(len(sample))
    assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert bootstrap(mean, [len(sample)], resamples=400, seed=1) == interval
    assert bootstrap(mean, [len(sample)], resamples=400, seed=2) != interval
    assert interval.as_dict() == {"value": interval.value, "low": interval.low, "high": interval.high,
                                  "level": 0.95, "resamples": 400}


def test_bootstrap_draws_one_index_array_per_group():
    seen = []

    def statistic(indices):
        seen.append(indices)
        return 0.0 if indices is None else float(sum(len(i) for i in indices))

    interval = bootstrap(statistic, [3, 5], resamples=4, seed=0)
    assert seen[0] is None and len(seen) == 5
    for three, five in seen[1:]:
        assert len(three) == 3 and len(five) == 5 and three.max() < 3 and five.max() < 5
    # a constant statistic: every replicate equals the mean, so the centred interval collapses onto the value
    assert (interval.value, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_interval_excludes_zero():
    assert Interval(1.0, 0.5, 1.5).excludes_zero and Interval(-1.0, -1.5, -0.5).excludes_zero
    assert not Interval(0.1, -0.1, 0.3).excludes_zero


# Gaussians with known statistics: the reference is the exact population N(0, I); samples are shifted and scaled
DIM = 8
SHIFT, SCALE = np.full(DIM, 0.15), np.linspace(0.8, 1.4, DIM)


def shifted_gaussian(rng, n, shift=SHIFT):
    return rng.normal(size=(n, DIM)) * SCALE + shift


def test_fd_interval_covers_the_sample_size_matched_truth_at_the_nominal_rate():
    n, reference = 200, (np.zeros(DIM), np.eye(DIM))
    truth_rng = np.random.default_rng(0)  # E[FD of n samples] by Monte Carlo
    truth = np.mean([direct_fd(shifted_gaussian(truth_rng, n), *reference) for _ in range(2000)])
    covered = []
    for rep in range(80):
        interval = fd_interval([shifted_gaussian(np.random.default_rng(100 + rep), n)], *reference, resamples=80,
                               seed=rep, level=0.9)
        covered.append(interval.low <= truth <= interval.high)
    assert 0.8 <= np.mean(covered) <= 0.98, f"90% intervals covered E[FD] in {np.mean(covered):.1%} of draws"


def test_a_method_against_itself_under_another_seed_covers_zero_at_the_nominal_rate():
    reference = (np.zeros(DIM), np.eye(DIM))
    covered = []
    for rep in range(50):
        rng = np.random.default_rng(1000 + rep)
        a, b = shifted_gaussian(rng, 100), shifted_gaussian(rng, 100)  # the same method, independent noise
        out = paired_fd_difference([a], [b], *reference, resamples=80, seed=rep, level=0.9)
        covered.append(not out["difference"].excludes_zero)
    assert 0.76 <= np.mean(covered) <= 1.0, f"90% intervals covered 0 in {np.mean(covered):.1%} of draws"
    rng = np.random.default_rng(7)  # several seeds of different sizes
    a, b = ([shifted_gaussian(rng, 100), shifted_gaussian(rng, 60)] for _ in range(2))
    assert not paired_fd_difference(a, b, *reference, resamples=100, seed=0)["difference"].excludes_zero


def test_a_clearly_better_method_gets_a_difference_excluding_zero():
    rng = np.random.default_rng(3)
    reference = (np.zeros(DIM), np.eye(DIM))
    noise = [rng.normal(size=(150, DIM)) for _ in range(2)]  # shared by both methods per seed, as in sampling
    better = [z * SCALE + 0.05 for z in noise]
    baseline = [z * SCALE + 0.4 for z in noise]
    out = paired_fd_difference(better, baseline, *reference, resamples=100, seed=0)
    fd_better = np.mean([direct_fd(x, *reference) for x in better])
    fd_baseline = np.mean([direct_fd(x, *reference) for x in baseline])
    assert out["difference"].value == pytest.approx(fd_better - fd_baseline, rel=1e-9)
    assert out["relative_pct"].value == pytest.approx((fd_baseline - fd_better) / fd_baseline * 100, rel=1e-9)
    assert out["difference"].high < 0 and out["relative_pct"].low > 0
    # the same resamples as a method's own interval: same seed and sizes draw the same indices
    assert out["a"] == fd_interval(better, *reference, resamples=100, seed=0)


def test_pairing_removes_the_shared_noise_from_a_difference():
    rng = np.random.default_rng(4)
    reference = (np.zeros(DIM), np.eye(DIM))
    a = shifted_gaussian(rng, 200)
    b = a + 0.05 * rng.normal(size=a.shape) + 0.02  # nearly the same samples: what paired methods produce
    paired = paired_fd_difference([a], [b], *reference, resamples=100, seed=0)["difference"]
    fd_a, fd_b = FrechetResampler(a, *reference), FrechetResampler(b, *reference)
    unpaired = bootstrap(lambda i: fd_a() - fd_b() if i is None else fd_a(i[0]) - fd_b(i[1]), [200, 200],
                         resamples=100, seed=0)
    assert paired.value == pytest.approx(unpaired.value)
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low)


def brute_force_resampled_prdc(real, fake, idx, k):
    """PRDC of fake[idx] with every radius taken from the full real and fake sets."""
    dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    real_radii = np.sort(dist(real, real), axis=1)[:, k]
    fake_radii = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)[:, idx]
    return {
        "precision": (d < real_radii[:, None]).any(0).mean(),
        "recall": (d < fake_radii[idx][None, :]).any(1).mean(),
        "density": (d < real_radii[:, None]).sum(0).mean() / k,
        "coverage": (d < real_radii[:, None]).any(1).mean(),
    }


@pytest.mark.parametrize("block", [32, 2048])  # several row blocks; one
def test_prdc_resampler_equals_prdc_and_the_definitions_on_a_resample(block):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(90, 6)), rng.normal(size=(70, 6)) * 1.3 + 0.4
    resampler = PRDCResampler(real, fake, k=5, block=block)
    assert resampler() == prdc(real, fake, k=5, block=block)  # exactly
    idx = rng.integers(0, 70, size=70)
    assert resampler(idx) == pytest.approx(brute_force_resampled_prdc(real, fake, idx, 5), abs=1e-12)


def test_prdc_intervals_contain_the_estimate_and_average_the_seeds():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(120, 5))
    fakes = [rng.normal(size=(100, 5)) * 1.2 + 0.3, rng.normal(size=(80, 5)) * 1.2 + 0.3]
    intervals = prdc_interval(real, fakes, resamples=50, seed=0)
    per_seed = [prdc(real, f) for f in fakes]
    for key, interval in intervals.items():
        assert interval.value == pytest.approx(np.mean([p[key] for p in per_seed]), abs=1e-15)
        assert interval.low <= interval.value <= interval.high and interval.low < interval.high


def test_paired_prdc_difference_of_a_set_with_itself_is_exactly_zero():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    out = paired_prdc_difference(real, [fake], [fake.copy()], resamples=30, seed=0)
    assert set(out) == {"precision", "recall", "density", "coverage"}
    assert all((i.value, i.low, i.high) == (0.0, 0.0, 0.0) for i in out.values())
    shifted = paired_prdc_difference(real, [fake], [fake + 3.0], resamples=30, seed=0)  # B far from the reals
    assert shifted["precision"].low > 0 and shifted["coverage"].low > 0


REFERENCE = (np.zeros(3), np.eye(3))


@pytest.mark.parametrize("call, message", [
    (lambda: paired_fd_difference([np.ones((5, 3))], [np.ones((6, 3))], *REFERENCE), "equal sample counts"),
    (lambda: paired_fd_difference([np.ones((5, 3))], [], *REFERENCE), "features_b_per_seed is empty"),
    (lambda: paired_fd_difference([np.ones((5, 3))] * 2, [np.ones((5, 3))], *REFERENCE), "same seeds"),
    (lambda: paired_prdc_difference(np.ones((9, 3)), [np.ones((7, 3))], [np.ones((8, 3))]), "equal sample counts"),
    (lambda: fd_interval([], *REFERENCE), "features_per_seed is empty"),
    (lambda: fd_interval(np.ones((5, 3)), *REFERENCE), "one \\(n, D\\) feature array per seed"),
    (lambda: prdc_interval(np.ones((9, 3)), []), "fake_per_seed is empty"),
    (lambda: fd_interval([np.ones((5, 3))], *REFERENCE, resamples=0), "resamples must be .* >= 1"),
    (lambda: bootstrap(lambda i: 0.0, [4], level=95), "level must lie strictly between 0 and 1"),
    (lambda: bootstrap(lambda i: 0.0, []), "at least one group"),
    (lambda: fd_interval([np.ones((5, 4))], *REFERENCE), "reference statistics must be"),
    (lambda: FrechetResampler(np.ones((5, 3)), *REFERENCE)(np.array([0, 7])), "must lie in \\[0, 5\\)"),
    (lambda: FrechetResampler(np.ones((5, 3)), *REFERENCE)(np.array([0, -1])), "must lie in \\[0, 5\\)"),
    (lambda: PRDCResampler(np.ones((9, 3)), np.ones((7, 3)), real_radii=torch.ones(4)), "one radius per real point"),
])
def test_bad_input_fails_with_one_line_naming_the_fix(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
