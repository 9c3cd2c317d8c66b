"""PRDC (Naeem et al. 2020) on point sets whose answers are known, and against a direct full-matrix implementation."""
import numpy as np
import pytest

from benchmark.metrics import prdc
from benchmark.metrics.prdc import knn_radii, subsample


def brute_force_prdc(real, fake, k):
    """The definitions written out on full distance matrices (the way dgm-eval computes them)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dist(real, real), axis=1)[:, k]  # k-th neighbour other than itself
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    return {
        "precision": (d < r_real[:, None]).any(0).mean(),
        "recall": (d < r_fake[None, :]).any(1).mean(),
        "density": (d < r_real[:, None]).sum(0).mean() / k,
        "coverage": (d.min(1) < r_real).mean(),
    }


def integer_points(rng, n, d, offset=0):
    """Integer coordinates: every squared distance is an exact integer in float64, so a fake that is a copy of a real
    point sits exactly on (not a rounding error inside) the balls it bounds, and "<" behaves as defined."""
    x = rng.integers(-1000, 1000, size=(n, d)).astype(np.float64) + offset
    # general position: no two distances from a point tie, so each ball holds exactly its centre + k-1 neighbours
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    assert all(len(np.unique(row)) == n for row in d2)
    return x


def test_identical_sets_score_one_everywhere():
    # every fake is a real centre (precision, coverage), every real a fake centre (recall), and real ball i holds
    # exactly k points (itself + k-1 nearer neighbours; the k-th lies on its boundary), so density = k*n/(k*n) = 1
    x = integer_points(np.random.default_rng(0), 60, 8)
    result = prdc(x, x.copy(), k=5)
    assert result == pytest.approx({"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})


def test_fakes_covering_one_of_two_real_modes():
    rng = np.random.default_rng(1)
    mode_a = integer_points(rng, 40, 4)
    mode_b = integer_points(rng, 40, 4, offset=100_000)
    real = np.concatenate([mode_a, mode_b])
    fake = mode_a.copy()  # perfect fidelity, half the diversity
    result = prdc(real, fake, k=5)
    assert result == pytest.approx({"precision": 1.0, "recall": 0.5, "density": 1.0, "coverage": 0.5})


def test_disjoint_sets_score_zero():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(30, 3))
    fake = rng.normal(size=(25, 3)) + 50.0
    assert prdc(real, fake, k=5) == pytest.approx({"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0})


def test_one_dimensional_grid_by_hand():
    # reals at 0, 1, ..., 9 with k=1: every radius is 1 (nearest other point); strict "<" keeps only exact hits
    real = np.arange(10, dtype=float)[:, None]
    fake = np.array([[0.5], [3.0], [20.0]])
    # 0.5 lies inside the balls of 0 and 1; 3.0 inside the ball of 3 only (2 and 4 are at distance 1, not < 1)
    result = prdc(real, fake, k=1)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["density"] == pytest.approx((2 + 1 + 0) / 3)
    assert result["coverage"] == pytest.approx(3 / 10)  # reals 0, 1, 3
    # fake radii (k=1): 0.5 -> 2.5, 3.0 -> 2.5, 20 -> 17; recall counts reals within them
    covered = {i for i in range(10) if abs(i - 0.5) < 2.5 or abs(i - 3.0) < 2.5 or abs(i - 20.0) < 17}
    assert result["recall"] == pytest.approx(len(covered) / 10)


@pytest.mark.parametrize("block", [7, 4096])
def test_blocked_computation_matches_brute_force(block):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(90, 6))
    fake = rng.normal(size=(70, 6)) * 1.3 + 0.4
    ours = prdc(real, fake, k=5, block=block)
    ref = brute_force_prdc(real, fake, 5)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1


def test_knn_radius_is_kth_other_neighbour():
    import torch

    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert knn_radii(x, 1, block=2).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, 2, block=3).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError):
        knn_radii(x, 4, block=2)


def test_subsample_is_seeded_and_bounded():
    x = np.arange(100)[:, None]
    a, b = subsample(x, 10), subsample(x, 10)
    assert len(a) == 10 and (a == b).all() and (np.diff(a[:, 0]) > 0).all()
    assert subsample(x, 1000) is x


def test_copies_of_real_points_score_the_same_whatever_the_rounding():
    """The real-data control: fakes that are real points of the reference sit exactly on the balls they bound, so
    feature rounding (another thread count, batch or device: 1e-6) used to flip density and coverage by several
    percent. A copy is scored as the real point it is: every rounding gives the exact-arithmetic answer."""
    from benchmark.metrics.intervals import PRDCResampler

    rng = np.random.default_rng(3)
    real = integer_points(rng, 120, 8)
    rows = rng.choice(120, 24, replace=False)
    exact = brute_force_prdc(real, real[rows], 5)  # integer coordinates: exact distances, ties as defined
    scale = np.abs(real).mean()
    for seed in range(4):
        noise = np.random.default_rng(seed).normal(size=(24, 8)) * 1e-6 * scale
        for got in (prdc(real, real[rows] + noise, k=5), PRDCResampler(real, real[rows] + noise)()):
            assert got == pytest.approx(exact, abs=1e-12)
    # a fake near, but not at, a real point is an ordinary fake
    off = real[rows] + 0.3 * np.random.default_rng(9).normal(size=(24, 8)) * np.abs(real).std()
    assert prdc(real, off, k=5) == pytest.approx(brute_force_prdc(real, off, 5), abs=1e-12)
