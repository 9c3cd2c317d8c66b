"""frechet_distance: float64, equal to the scipy sqrtm formula on well-conditioned inputs, exact on known cases,
finite and real on near-singular covariances."""
import numpy as np
import pytest
import scipy.linalg

from benchmark.metrics import frechet_distance, frechet_distance_from_features, gaussian_stats


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


@pytest.mark.parametrize("d", [2, 16, 64])
def test_matches_scipy_on_random_gaussians(d):
    rng = np.random.default_rng(d)
    for _ in range(3):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
        ours, ref = frechet_distance(mu1, s1, mu2, s2), scipy_frechet(mu1, s1, mu2, s2)
        assert ours == pytest.approx(ref, rel=1e-6)
        assert isinstance(ours, float)


def test_matches_scipy_on_sample_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32))
    y = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.5 + 0.3
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    np.testing.assert_allclose(s1, np.cov(x, rowvar=False), rtol=1e-12)
    assert frechet_distance_from_features(x, y) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_zero_for_identical_sets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 24)) @ rng.normal(size=(24, 24))
    mu, s = gaussian_stats(x)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8 * np.trace(s))
    assert frechet_distance_from_features(x, x.copy()) == pytest.approx(0.0, abs=1e-8 * np.trace(s))


def test_known_mean_shift_is_squared_norm():
    rng = np.random.default_rng(2)
    s = random_spd(rng, 10)
    mu = rng.normal(size=10)
    shift = np.arange(10) / 3.0
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_diagonal_covariances_have_the_closed_form():
    a, b = np.array([4.0, 1.0, 0.25, 9.0]), np.array([1.0, 1.0, 1.0, 0.0])  # b singular
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, 0.0, 2.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_near_singular_covariances_stay_finite_and_real():
    # fewer samples than dimensions: rank-deficient covariances, where sqrtm(S1 S2) is ill-posed
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.1
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0 and isinstance(value, float)
    # the same set against itself is still ~0 despite rank 19 of 64
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))
    # and the mean shift of a singular Gaussian is still exact
    assert frechet_distance(mu1, s1, mu1 + 1.0, s1) == pytest.approx(64.0, rel=1e-7)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
