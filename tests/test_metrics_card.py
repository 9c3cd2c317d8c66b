"""The metric card's statistics against hand-computed or independent values: KID (torchmetrics' poly_mmd at equal
set sizes), class KID, Vendi, the copy rate, CMMD; their resamples; and the card's dispatch through the bootstrap."""
import numpy as np
import pytest
import torch
from torchmetrics.image.kid import poly_mmd

from benchmark.metrics.card import SampleSetCard, SpaceInputs
from benchmark.metrics.diversity import VendiResampler, vendi_score
from benchmark.metrics.intervals import bootstrap, bootstrap_many
from benchmark.metrics.kernels import CMMDResampler, ClassKIDResampler, KIDResampler, polynomial_kernel, rbf_kernel
from benchmark.metrics.memorization import (COPY_QUANTILE, CopyResampler, closest_pairs, copy_threshold,
                                            held_out_split, nearest)
from benchmark.metrics.reference import ReferenceStats
from benchmark.metrics.splits import SplitFeatures
from benchmark.metrics.frechet import gaussian_stats


def gaussian(n, dim=6, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


# ---- KID -----------------------------------------------------------------------------------------------------------


def test_kid_equals_torchmetrics_poly_mmd_at_equal_sizes():
    fake, real = gaussian(40, seed=1), gaussian(40, shift=0.3, seed=2)
    ours = KIDResampler(fake, real)()
    reference = float(poly_mmd(torch.as_tensor(real), torch.as_tensor(fake)))  # the independent implementation
    assert ours == pytest.approx(reference, rel=1e-10)


def test_kid_with_unequal_sizes_is_the_unbiased_formula_by_hand():
    fake, real = gaussian(7, seed=3), gaussian(11, shift=0.5, seed=4)
    k = lambda a, b: (a @ b / a.shape[0] + 1) ** 3  # noqa: E731  (x.y / D + 1)^3
    n, m = len(fake), len(real)
    within = sum(k(fake[i], fake[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    reals = sum(k(real[a], real[b]) for a in range(m) for b in range(m) if a != b) / (m * (m - 1))
    cross = sum(k(fake[i], real[a]) for i in range(n) for a in range(m)) / (n * m)
    assert KIDResampler(fake, real)() == pytest.approx(within + reals - 2 * cross, rel=1e-12)


def test_kid_of_two_identical_sets_is_zero_within_its_interval():
    real = gaussian(60, seed=5)
    kid = KIDResampler(real + 1e-9, real)  # the same images, up to feature rounding
    interval = bootstrap(lambda idx: kid(None if idx is None else idx[0]), [60], resamples=200)
    assert interval.value == pytest.approx(0.0, abs=1e-9) and interval.low < 0 < interval.high
    # a sample that is not a real image is compared with every real (the coincidence is only that)
    independent = KIDResampler(gaussian(60, seed=55), real)
    assert (independent._cross_count == 60).all() and (kid._cross_count == 59).all()
    near = bootstrap(lambda idx: independent(None if idx is None else idx[0]), [60], resamples=200)
    assert near.low < 0 < near.high  # two samples of one distribution: 0 within the interval too
    shifted = KIDResampler(real + 1.0, real)  # a different distribution: far from 0, its interval excludes it
    far = bootstrap(lambda idx: shifted(None if idx is None else idx[0]), [60], resamples=200)
    assert far.low > 0 and far.value > 20 * abs(interval.value)


def test_a_kid_resample_pairs_only_different_samples():
    fake, real = gaussian(5, seed=6), gaussian(9, seed=7)
    kid = KIDResampler(fake, real)
    idx = np.array([0, 0, 2, 3, 3, 3])  # sample 0 twice, 2 once, 3 three times
    c = np.bincount(idx, minlength=5).astype(float)
    kff, kfr = polynomial_kernel(fake, fake), polynomial_kernel(fake, real)
    pairs = sum(c[j] * c[l] * kff[j, l] for j in range(5) for l in range(5) if j != l) / \
        sum(c[j] * c[l] for j in range(5) for l in range(5) if j != l)
    expected = pairs + kid.real_term - 2 * (c @ kfr.mean(1)) / c.sum()
    assert kid(idx) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(kid(np.array([4, 4])))  # one distinct sample: no pair to average (the bootstrap raises)


def test_class_kid_finds_the_collapsed_class():
    rng = np.random.default_rng(8)
    centres = {c: rng.normal(size=6) * 4 for c in range(3)}
    real = np.concatenate([centres[c] + rng.normal(size=(30, 6)) for c in range(3)])
    real_labels = np.repeat(np.arange(3), 30)
    good = [centres[c] + rng.normal(size=(8, 6)) for c in (0, 1)]
    collapsed = centres[2] + 3.0 + rng.normal(size=(1, 6)) * 0.01 + np.zeros((8, 6))  # class 2: one point, off
    fake, labels = np.concatenate(good + [collapsed]), np.repeat(np.arange(3), 8)
    score = ClassKIDResampler(fake, labels, real, real_labels)
    by_hand = [KIDResampler(fake[labels == c], real[real_labels == c])() for c in range(3)]
    assert score() == pytest.approx(np.mean(by_hand), rel=1e-12)
    worst = score.worst(2)
    assert worst[0]["class"] == 2 and worst[0]["samples"] == 8 and worst[0]["kid"] == pytest.approx(by_hand[2])
    pooled = KIDResampler(fake, real)()
    assert score() > pooled  # the per-class mean sees what the pooled KID averages away


def test_class_kid_scores_classes_with_two_samples_and_drops_them_in_a_resample():
    fake, real = gaussian(5, seed=9), gaussian(12, seed=10)
    labels, real_labels = np.array([0, 0, 1, 2, 2]), np.array([0] * 4 + [1] * 4 + [2] * 4)
    score = ClassKIDResampler(fake, labels, real, real_labels)
    assert score.classes == [0, 2] and score.skipped == 1  # class 1 has one sample
    only_class_0 = np.array([0, 1, 2, 2, 3])  # class 2: one distinct sample drawn twice -> dropped
    assert score(only_class_0) == pytest.approx(KIDResampler(fake[:2], real[:4])(), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ClassKIDResampler(fake, np.arange(5), real, real_labels)


# ---- Vendi ---------------------------------------------------------------------------------------------------------


def test_vendi_of_identical_and_orthogonal_samples():
    assert vendi_score(np.tile([[0.3, -1.0, 2.0]], (7, 1))) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(np.eye(5) * 3.0) == pytest.approx(5.0, rel=1e-12)
    wide = np.zeros((4, 50))  # n <= D and n > D take different eigenproblems
    wide[np.arange(4), np.arange(4)] = 1.0
    assert vendi_score(wide) == pytest.approx(4.0) and vendi_score(np.eye(3)[[0, 1, 2, 0, 1, 2]]) == pytest.approx(3.0)


def test_vendi_of_two_samples_by_hand_and_of_a_resample():
    a, b = np.array([1.0, 0.0]), np.array([0.6, 0.8])  # cosine similarity 0.6
    lam = np.array([1.6, 0.4]) / 2  # eigenvalues of [[1, .6], [.6, 1]] / 2
    assert vendi_score(np.stack([a, b])) == pytest.approx(np.exp(-(lam * np.log(lam)).sum()), rel=1e-12)
    x = gaussian(6, dim=3, seed=11)
    resampler = VendiResampler(x)
    idx = np.array([0, 0, 1, 4, 4, 4])
    assert resampler(idx) == pytest.approx(vendi_score(x[idx]), rel=1e-9)  # the multiset it names
    assert resampler() == pytest.approx(vendi_score(x))
    with pytest.raises(ValueError, match="all-zero"):
        VendiResampler(np.zeros((3, 4)))


# ---- copy rate -----------------------------------------------------------------------------------------------------


def test_copies_of_training_images_have_copy_rate_one_and_new_images_about_the_quantile():
    train, held_out, new = gaussian(300, seed=12), gaussian(400, seed=13), gaussian(2000, seed=14)
    tau = copy_threshold(nearest(held_out, train)[0][:, 0])
    copies = train[np.random.default_rng(15).choice(300, 50)] + 1e-6  # copies, up to feature rounding
    assert CopyResampler(copies, train, tau)() == 1.0
    assert CopyResampler(held_out, train, tau)() == pytest.approx(COPY_QUANTILE, abs=0.005)  # by construction
    rate = CopyResampler(new, train, tau)()
    assert abs(rate - COPY_QUANTILE) < 0.025  # new images of the same distribution: about the quantile
    half = CopyResampler(np.concatenate([copies[:25], new[:25]]), train, tau)
    assert half.is_copy[:25].all() and half(np.arange(25)) == 1.0  # a resample counts its samples' flags
    with pytest.raises(ValueError, match="threshold is 0"):
        copy_threshold(nearest(train, train)[0][:, 0])  # "held-out" images that are the train images
    assert held_out_split("train") == "test" and held_out_split("all") is None


def test_nearest_and_closest_pairs():
    train = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    fake = np.array([[9.0, 0.0], [0.2, 0.1], [5.0, 5.0]])
    dist, index = nearest(fake, train, 2)
    assert index[:, 0].tolist() == [1, 0, 0] and dist[1, 0] == pytest.approx(np.hypot(0.2, 0.1))
    pairs = closest_pairs(fake, train, k=2)
    assert [p["sample"] for p in pairs] == [1, 0, 2] and pairs[0]["neighbours"] == [0, 1]
    assert pairs[0]["distances"][0] <= pairs[1]["distances"][0] <= pairs[2]["distances"][0]


# ---- CMMD ----------------------------------------------------------------------------------------------------------


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cmmd_is_the_papers_formula():
    fake, real = unit(gaussian(9, dim=5, seed=16)), unit(gaussian(13, dim=5, shift=0.4, seed=17))
    g = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 200.0)  # noqa: E731  sigma = 10
    expected = 1000 * (g(fake, fake).mean() + g(real, real).mean() - 2 * g(fake, real).mean())
    assert CMMDResampler(fake, real)() == pytest.approx(expected, rel=1e-9)
    assert CMMDResampler(real, real)() == pytest.approx(0.0, abs=1e-9)  # every pair: identical sets give 0
    assert np.allclose(rbf_kernel(fake, fake).diagonal(), 1.0)
    idx = np.array([1, 1, 4])
    assert CMMDResampler(fake, real)(idx) == pytest.approx(CMMDResampler(fake[idx], real)(), rel=1e-9)


# ---- the card ------------------------------------------------------------------------------------------------------


def space_inputs(real, train, held_out, labelled, labels):
    mu, sigma = gaussian_stats(real)
    return SpaceInputs(reference=ReferenceStats(mu, sigma, real.astype(np.float32), len(real), {}),
                       train=SplitFeatures(train, np.zeros(len(train), dtype=np.int64), np.arange(len(train)), {}),
                       held_out=SplitFeatures(held_out, np.zeros(len(held_out), dtype=np.int64),
                                              np.arange(len(held_out)), {}),
                       classes=SplitFeatures(labelled, labels, np.arange(len(labelled)), {}))


def test_the_card_dispatches_every_kind_and_bootstraps_them_paired():
    real, train, held_out = gaussian(80, seed=20), gaussian(60, seed=21), gaussian(60, seed=22)
    real_labels = np.arange(80) % 4
    inputs = {"effnet": space_inputs(real, train, held_out, real, real_labels)}
    metrics = ["fd_effnet", "prdc_effnet", "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"]
    a, b = gaussian(30, seed=23), gaussian(30, shift=0.5, seed=24)
    labels = np.arange(30) % 4
    card_a = SampleSetCard(metrics, {"effnet": a}, inputs, labels)
    card_b = SampleSetCard(metrics, {"effnet": b}, inputs, labels)
    values = card_a()
    assert set(values) == {"fd_effnet", "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet",
                           "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"}
    assert values["kid_effnet"] == pytest.approx(KIDResampler(a, real)())
    assert values["vendi_effnet"] == pytest.approx(vendi_score(a))
    assert inputs["effnet"].memo("kid") is not None  # the real-real kernel mean is kept for the next set
    # paired: the same indices for both sets, one bootstrap
    diff = bootstrap_many(lambda idx: {"kid": card_b(None if idx is None else idx[0])["kid_effnet"]
                                       - card_a(None if idx is None else idx[0])["kid_effnet"]}, [30], resamples=50)
    assert diff["kid"].value > 0 and diff["kid"].low > 0  # b is shifted away from the reals
    intervals = card_a.intervals(resamples=20)
    assert set(intervals) == set(values) and all(i.low <= i.high for i in intervals.values())
    with pytest.raises(ValueError, match="class label"):
        SampleSetCard(["class_kid_effnet"], {"effnet": a}, inputs)()
    with pytest.raises(ValueError, match="train and held_out"):
        SampleSetCard(["copy_effnet"], {"effnet": a}, {"effnet": SpaceInputs()})()


def test_protocol_lines_say_which_split_is_which():
    from benchmark.metrics.card import protocol_lines
    lines = protocol_lines(["fd_effnet", "kid_effnet", "copy_effnet"], "train")
    assert len(lines) == 3 and lines[0].startswith("kid_effnet: KID") and "held out = the test split" in lines[2]
    assert protocol_lines(["fd_effnet"]) == []


def test_above_a_thousand_samples_the_pair_means_come_from_blocks(monkeypatch):
    from benchmark.metrics import kernels
    fake, real = gaussian(30, seed=30), gaussian(20, shift=0.2, seed=31)
    monkeypatch.setattr(kernels, "PAIR_BLOCK", 7)  # blocks of 7, 7, 7, 7, 2 samples
    k = polynomial_kernel(fake, fake)
    same_block = (np.arange(30)[:, None] // 7 == np.arange(30)[None, :] // 7) & ~np.eye(30, dtype=bool)
    blocked = KIDResampler(fake, real)
    full = k[~np.eye(30, dtype=bool)].mean()
    assert blocked() - KIDResampler(fake, real, real_term=blocked.real_term)() == 0  # deterministic
    expected = k[same_block].mean() + blocked.real_term - 2 * polynomial_kernel(fake, real).mean()
    assert blocked() == pytest.approx(expected, rel=1e-12) and k[same_block].mean() != pytest.approx(full)
    unit_fake, unit_real = unit(fake), unit(real)
    g = rbf_kernel(unit_fake, unit_fake)
    v_expected = (g[same_block].mean() * (30 * 30 - 30) + 30) / 900  # self-pairs at their exact weight
    cross = rbf_kernel(unit_fake, unit_real).mean()
    expected = 1000 * (v_expected + rbf_kernel(unit_real, unit_real).mean() - 2 * cross)
    assert CMMDResampler(unit_fake, unit_real)() == pytest.approx(expected, rel=1e-9)
