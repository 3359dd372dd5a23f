"""Tests for kdiff.metrics: FID, KID and nearest-neighbour memorization."""

import numpy as np
import pytest

from kdiff import metrics
from kdiff.metrics import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    median_nn_distance,
    memorization_ratio,
    nearest_neighbors,
)


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _frechet_by_eigh(mu1, s1, mu2, s2):
    """Independent reference: Tr((Σ1 Σ2)^½) = Σ √eig(Σ1^½ Σ2 Σ1^½), via symmetric eigh only."""
    h = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(h @ s2 @ h)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(eig, 0, None)).sum()


# --- frechet_distance ---------------------------------------------------------------------


def test_frechet_diagonal_matches_closed_form():
    mu1 = np.array([0.0, 1.0, -2.0, 0.5])
    mu2 = np.array([1.0, -1.0, 0.0, 0.5])
    v1 = np.array([1.0, 4.0, 0.25, 2.0])
    v2 = np.array([9.0, 1.0, 0.25, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2.0 * np.sqrt(v1 * v2))
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert isinstance(got, float)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_commuting_non_diagonal_matches_closed_form():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = rng.uniform(0.1, 3.0, size=6)
    b = rng.uniform(0.1, 3.0, size=6)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2.0 * np.sqrt(a * b))
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-9)


def test_frechet_general_matches_eigh_reference():
    rng = np.random.default_rng(1)
    d = 10
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, scale=2.0)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = _frechet_by_eigh(mu1, s1, mu2, s2)
    assert expected > 0
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-8)


def test_frechet_zero_for_identical_and_symmetric():
    rng = np.random.default_rng(2)
    d = 8
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    forward = frechet_distance(mu1, s1, mu2, s2)
    backward = frechet_distance(mu2, s2, mu1, s1)
    assert forward > 0.1
    np.testing.assert_allclose(forward, backward, rtol=1e-9)


def test_frechet_accepts_lists_and_float32():
    mu = np.zeros(3, np.float32)
    sigma = np.eye(3, dtype=np.float32)
    assert frechet_distance(mu, sigma, [1.0, 0.0, 0.0], np.eye(3).tolist()) == pytest.approx(1.0)


def test_frechet_finite_for_singular_covariances():
    # Fewer samples than dimensions: both covariances are rank-deficient.
    rng = np.random.default_rng(3)
    d = 32
    mu1, s1 = feature_statistics(rng.normal(size=(6, d)))
    mu2, s2 = feature_statistics(rng.normal(size=(9, d)) + 0.5)
    assert np.linalg.matrix_rank(s1) < d and np.linalg.matrix_rank(s2) < d
    got = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, _frechet_by_eigh(mu1, s1, mu2, s2), rtol=1e-3)
    # Fully degenerate case: sqrtm(0) is fine, distance is the mean term only.
    zeros = np.zeros((d, d))
    assert frechet_distance(mu1, zeros, mu2, zeros) == pytest.approx(np.sum((mu1 - mu2) ** 2))


def test_frechet_retries_with_eps_offset_when_the_root_is_not_finite(monkeypatch):
    import kdiff.metrics as metrics

    calls = []
    real_trace_sqrt = metrics._trace_sqrt

    def flaky_trace_sqrt(a, b):
        calls.append((a.sigma, b.sigma))
        if len(calls) == 1:
            return np.nan
        return real_trace_sqrt(a, b)

    monkeypatch.setattr(metrics, "_trace_sqrt", flaky_trace_sqrt)
    rng = np.random.default_rng(12)
    s1, s2 = _random_spd(rng, 3), _random_spd(rng, 3)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    eps = 0.25
    got = frechet_distance(mu1, s1, mu2, s2, eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1][0], s1 + eps * np.eye(3))
    np.testing.assert_allclose(calls[1][1], s2 + eps * np.eye(3))
    # The offset enters only the square-root term, as in the reference FID code.
    offset = np.eye(3) * eps
    h = _psd_sqrt(s1 + offset)
    tr_sqrt = np.sqrt(np.linalg.eigvalsh(h @ (s2 + offset) @ h)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_frechet_rejects_matrices_that_are_no_covariances():
    # sqrtm(I @ -I) = i·I: not a covariance product, must not be silently made real.
    with pytest.raises(ValueError, match=r"product of `sigma1` and `sigma2` with eigenvalues from -1"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))
    with pytest.raises(ValueError, match=r"Expected `sigma1` to be a covariance.*stops at rank 0 of 2"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))
    indefinite = np.diag([1.0, 0.0, -0.5])  # singular and indefinite: the remainder is not rounding
    with pytest.raises(ValueError, match=r"Expected `sigma1` to be a covariance.*rank 1 of 3"):
        frechet_distance(np.zeros(3), indefinite, np.zeros(3), np.eye(3))
    # Rounding is not refused: float32 statistics of a singular covariance, as TTUR stores them.
    mu, sigma = feature_statistics(np.random.default_rng(4).normal(size=(5, 16)))
    rounded = sigma.astype(np.float32)
    assert np.linalg.eigvalsh(rounded.astype(np.float64))[0] < 0
    np.testing.assert_allclose(frechet_distance(mu, rounded, mu + 1, sigma), 16.0, rtol=1e-5)


@pytest.mark.parametrize(
    "args, name",
    [
        ((np.zeros((2, 1)), np.eye(2), np.zeros(2), np.eye(2)), "mu1"),
        ((0.0, np.eye(1), np.zeros(1), np.eye(1)), "mu1"),
        ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(2)), "mu2"),
        ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "sigma1"),
        ((np.zeros(2), np.eye(2), np.zeros(2), np.ones(2)), "sigma2"),
        ((np.zeros(2), np.eye(2), np.zeros(2), np.ones((2, 3))), "sigma2"),
        ((np.array([0.0, np.nan]), np.eye(2), np.zeros(2), np.eye(2)), "mu1"),
        ((np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.inf)), "sigma2"),
        ((np.zeros(2), np.array([["a", "b"], ["c", "d"]]), np.zeros(2), np.eye(2)), "sigma1"),
    ],
)
def test_frechet_bad_inputs(args, name):
    with pytest.raises(ValueError, match=rf"Expected `{name}`.*Received"):
        frechet_distance(*args)


def test_frechet_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), np.eye(1), eps=-1.0)


# --- feature_statistics / fid_from_features -----------------------------------------------


def test_feature_statistics_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    # One feature column still gives a 1 × 1 covariance.
    _, sigma1 = feature_statistics(x[:, :1])
    assert sigma1.shape == (1, 1)


@pytest.mark.parametrize(
    "features",
    [np.zeros((1, 3)), np.zeros(5), np.zeros((2, 3, 4)), np.array([[0.0, 1.0], [np.nan, 2.0]])],
)
def test_feature_statistics_bad_inputs(features):
    with pytest.raises(ValueError, match="Expected `features`"):
        feature_statistics(features)


def test_fid_from_features_approaches_analytic_value():
    rng = np.random.default_rng(5)
    d, n = 4, 40_000
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, scale=1.5)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    expected = _frechet_by_eigh(mu1, s1, mu2, s2)
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    got = fid_from_features(a, b)
    assert abs(got - expected) < 0.02 * expected + 0.01, (got, expected)
    # Two samples of the same distribution: close to 0 (only the O(d/n) estimation bias).
    assert fid_from_features(a, rng.multivariate_normal(mu1, s1, size=n)) < 0.01


def test_fid_from_features_bad_inputs():
    with pytest.raises(ValueError, match="feats_b"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="feats_a"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


# --- kernel_inception_distance ------------------------------------------------------------


def _direct_unbiased_mmd2(x, y):
    """Unbiased MMD² written out with explicit i ≠ j loops."""
    d = x.shape[1]

    def k(u, v):
        return (u @ v / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2.0 * kxy


def test_kid_single_full_subset_equals_direct_mmd2():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(12, 3))
    y = rng.normal(size=(12, 3)) + 0.7
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=100, seed=3)
    np.testing.assert_allclose(mean, _direct_unbiased_mmd2(x, y), rtol=1e-10)
    assert std is None  # one subset: no spread to speak of, not a spread of 0
    # Unequal sizes: the U-statistic of all rows, written out by hand.
    value, _ = metrics.mmd2_with_jackknife(x, y[:7])
    np.testing.assert_allclose(value, _direct_unbiased_mmd2(x, y[:7]), rtol=1e-10)


def test_kid_spread_is_undefined_when_every_subset_is_the_whole_of_both_sets():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 0.4
    whole = metrics.kid_estimate(x, y, num_subsets=20, subset_size=1000, seed=0)
    # Every subset is all 60 rows of both sets (in another order, which MMD² ignores).
    assert whole["subset_size"] == 60 and not whole["subsets_vary"] and whole["subset_std"] is None
    np.testing.assert_allclose(whole["kid"], _direct_unbiased_mmd2(x, y), rtol=1e-9)
    assert whole["standard_error"] == pytest.approx(metrics.mmd2_with_jackknife(x, y)[1], rel=1e-9)
    assert kernel_inception_distance(x, y, num_subsets=20, subset_size=1000)[1] is None
    # A larger reference: the subsets vary on its side, so the spread is defined.
    varied = metrics.kid_estimate(np.concatenate([x, x + 0.01]), y, num_subsets=20, subset_size=1000, seed=0)
    assert varied["subsets_vary"] and varied["subset_std"] > 0
    # Smaller subsets vary on both sides.
    half = metrics.kid_estimate(x, y, num_subsets=20, subset_size=30, seed=0)
    assert half["subsets_vary"] and half["subset_std"] > 0 and half["subset_size"] == 30
    # Two rows per subset: no jackknife (it deletes a row and needs two left).
    assert metrics.kid_estimate(x[:2], y[:2])["standard_error"] is None


def test_kid_jackknife_equals_delete_one_recomputation():
    """The closed-form delete-one estimates against recomputing MMD² without each row."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3)) + 0.5
    value, error = metrics.mmd2_with_jackknife(x, y)
    without_x = np.array([_direct_unbiased_mmd2(np.delete(x, i, 0), y) for i in range(9)])
    without_y = np.array([_direct_unbiased_mmd2(x, np.delete(y, j, 0)) for j in range(7)])
    variance = 8 / 9 * np.sum((without_x - without_x.mean()) ** 2) + 6 / 7 * np.sum(
        (without_y - without_y.mean()) ** 2
    )
    assert error == pytest.approx(np.sqrt(variance), rel=1e-9)
    with pytest.raises(ValueError, match="at least 3 rows"):
        metrics.mmd2_with_jackknife(x[:2], y)


@pytest.mark.parametrize("m, d, shift", [(50, 4, 0.3), (100, 16, 0.2)])
def test_kid_standard_error_matches_the_spread_over_fresh_draws(m, d, shift):
    """The jackknife standard error against the real spread of MMD² over 200 fresh pairs of
    sets: close, and not below it (the jackknife variance is conservative)."""
    rng = np.random.default_rng(11)
    values, errors = [], []
    for _ in range(200):
        value, error = metrics.mmd2_with_jackknife(rng.normal(size=(m, d)), rng.normal(size=(m, d)) + shift)
        values.append(value)
        errors.append(error)
    ratio = np.mean(errors) / np.std(values)
    assert 0.9 < ratio < 1.5, ratio


def test_kid_same_distribution_near_zero_and_shift_positive():
    rng = np.random.default_rng(7)
    d = 16
    a = rng.normal(size=(1000, d))
    b = rng.normal(size=(1000, d))
    mean, std = kernel_inception_distance(a, b, num_subsets=30, subset_size=300, seed=0)
    assert std > 0
    assert abs(mean) < 2 * std
    shifted_mean, shifted_std = kernel_inception_distance(
        a, b + 0.5, num_subsets=30, subset_size=300, seed=0
    )
    assert shifted_mean > 10 * shifted_std
    assert shifted_mean > 20 * abs(mean)


def test_kid_is_seeded_and_clips_subset_size():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(40, 4)), rng.normal(size=(25, 4)) + 0.3
    first = kernel_inception_distance(a, b, num_subsets=5, subset_size=1000, seed=11)
    assert first == kernel_inception_distance(a, b, num_subsets=5, subset_size=1000, seed=11)
    assert np.all(np.isfinite(first))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(feats_a=np.zeros((1, 3)), feats_b=np.zeros((5, 3))), "feats_a"),
        (dict(feats_a=np.zeros((5, 3)), feats_b=np.zeros((5, 2))), "feats_b"),
        (dict(feats_a=np.zeros((5, 3)), feats_b=np.zeros((5, 3)), num_subsets=0), "num_subsets"),
        (dict(feats_a=np.zeros((5, 3)), feats_b=np.zeros((5, 3)), subset_size=1), "subset_size"),
        (dict(feats_a=np.zeros((5, 3)), feats_b=np.zeros((5, 3)), seed=1.5), "seed"),
    ],
)
def test_kid_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kernel_inception_distance(**kwargs)


# --- nearest_neighbors / memorization_ratio -----------------------------------------------


def test_nearest_neighbors_matches_brute_force():
    rng = np.random.default_rng(9)
    query, ref = rng.normal(size=(30, 6)), rng.normal(size=(80, 6))
    distances, indices = nearest_neighbors(query, ref, k=4)
    assert distances.shape == indices.shape == (30, 4)
    full = np.sqrt(((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    expected_idx = np.argsort(full, axis=1)[:, :4]
    np.testing.assert_array_equal(indices, expected_idx)
    np.testing.assert_allclose(distances, np.take_along_axis(full, expected_idx, 1), rtol=1e-10)


def test_nearest_neighbors_bad_inputs():
    ref = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"Expected `k` in \[1, 3\]. Received: k=4"):
        nearest_neighbors(np.zeros((2, 2)), ref, k=4)
    with pytest.raises(ValueError, match="`k`"):
        nearest_neighbors(np.zeros((2, 2)), ref, k=0)
    with pytest.raises(ValueError, match="query_feats"):
        nearest_neighbors(np.zeros((2, 5)), ref, k=1)
    with pytest.raises(ValueError, match="reference_feats"):
        nearest_neighbors(np.zeros((2, 2)), np.zeros(2), k=1)


def test_memorization_ratio_copies_and_independent_draws():
    rng = np.random.default_rng(10)
    train = rng.normal(size=(1000, 8))
    copies = train[rng.choice(1000, 200, replace=False)]
    assert memorization_ratio(copies, train) == 1.0
    # Copies perturbed by noise much smaller than typical neighbour gaps still count.
    assert memorization_ratio(copies + 1e-3 * rng.normal(size=copies.shape), train) == 1.0
    fresh = memorization_ratio(rng.normal(size=(1000, 8)), train)
    assert 0.4 < fresh < 0.6
    # Queries far from the data are never memorized.
    assert memorization_ratio(rng.normal(size=(50, 8)) + 100.0, train) == 0.0


def test_memorization_ratio_excludes_self_matches_with_duplicates():
    # Duplicated training points: the neighbour "other than itself" is the twin, at 0,
    # which must not crash and must not be taken as the point matching itself.
    rng = np.random.default_rng(11)
    base = rng.normal(size=(50, 3))
    train = np.concatenate([base, base[:10]])
    ratio = memorization_ratio(base[:5], train)
    assert 0.0 <= ratio <= 1.0


def test_memorization_ratio_bad_inputs():
    with pytest.raises(ValueError, match="train_feats"):
        memorization_ratio(np.zeros((3, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="query_feats"):
        memorization_ratio(np.zeros((3, 4)), np.zeros((5, 2)))


# --- median_nn_distance: the memorization threshold ----------------------------------------


def test_median_nn_distance_hand_computed():
    # Points 0, 1, 3, 7 on a line: nearest other point at 1, 1, 2, 4 → median 1.5.
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert median_nn_distance(points) == pytest.approx(1.5)
    # In 2-D: (0,0), (3,4), (3,0): nearest others at 3, 4, 3 → median 3.
    assert median_nn_distance([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]]) == pytest.approx(3.0)
    # An exact duplicate is another point at distance 0 (not the point itself): 0, 0, 5 → 0.
    assert median_nn_distance([[0.0], [0.0], [5.0]]) == 0.0


def test_memorization_ratio_uses_the_median_threshold():
    train = np.array([[0.0], [1.0], [3.0], [7.0]])  # threshold 1.5
    queries = np.array([[0.2], [2.0], [5.0], [7.1]])  # nearest training points at 0.2, 1, 2, 0.1
    assert memorization_ratio(queries, train) == pytest.approx(3 / 4)
    # A given threshold replaces the median: strictly closer than 1.0 → 0.2 and 0.1 only.
    assert memorization_ratio(queries, train, threshold=1.0) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match=r"Expected `threshold` >= 0. Received: threshold=-1"):
        memorization_ratio(queries, train, threshold=-1)


def test_median_nn_distance_bad_inputs():
    with pytest.raises(ValueError, match=r"Expected `features` to have at least 2 rows"):
        median_nn_distance(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="features"):
        median_nn_distance(np.zeros(4))


# ---------------------------------------------------------------- FID∞ and the bootstrap


def _gaussian_pair(d, seed=0):
    """Two Gaussians whose Fréchet distance is small beside FID's finite-N bias."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    sigma1 = a @ a.T / d + 0.1 * np.eye(d)
    return rng.normal(size=d) * 0.1, sigma1, np.zeros(d), 1.2 * sigma1


@pytest.mark.parametrize("n_a, n_b", [(60, 80), (6, 5), (60, 5), (5, 60)])
def test_features_and_statistics_give_the_same_fid_on_either_side(n_a, n_b):
    """Sets of fewer samples than dimensions (24) enter by their centred features, the others
    by their covariance's factor: every mix equals frechet_distance and the eigh reference
    (to 1e-6: of a singular covariance, the reference's eigh leaves rounding-level
    eigenvalues whose square roots, about 1e-8 each, it adds up)."""
    mu1, sigma1, mu2, sigma2 = _gaussian_pair(24)
    rng = np.random.default_rng(1)
    a, b = rng.multivariate_normal(mu1, sigma1, size=n_a), rng.multivariate_normal(mu2, sigma2, size=n_b)
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    want = _frechet_by_eigh(*stats_a, *stats_b)
    assert want > 1.0
    for x, y in ((a, b), (stats_a, b), (a, stats_b), (stats_a, stats_b), (list(stats_a), b)):
        assert fid_from_features(x, y) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(*stats_a, *stats_b) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match=r"feats_b.*feature dimension of `feats_a` \(24\)"):
        fid_from_features(a, b[:, :4])
    with pytest.raises(ValueError, match=r"feats_b.*statistics of the feature dimension of `feats_a`"):
        fid_from_features(a, (stats_b[0][:4], stats_b[1][:4, :4]))


def test_two_feature_rows_in_a_list_are_features_not_statistics():
    rows = [[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]]
    assert fid_from_features(rows, np.asarray(rows)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("d, n", [(32, 300), (64, 500)])
def test_fid_infinity_is_closer_to_the_true_distance_than_raw_fid(d, n):
    """Gaussian features with a known Fréchet distance: the extrapolation removes the 1/N bias."""
    mu1, sigma1, mu2, sigma2 = _gaussian_pair(d)
    true = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)
    for seed in range(5):
        x = np.random.default_rng(100 + seed).multivariate_normal(mu1, sigma1, size=n)
        out = metrics.fid_infinity(x, (mu2, sigma2), seed=seed)
        raw = out["fids"][-1]
        assert out["sizes"][-1] == n and raw == pytest.approx(fid_from_features(x, (mu2, sigma2)))
        assert raw > true  # FID's bias at finite N is upwards
        assert abs(out["fid_infinity"] - true) < abs(raw - true)
        assert out["slope"] > 0


def test_fid_infinity_is_supported_from_ten_samples_per_dimension():
    """Below 10 × dim the fit's small subsets have near-singular covariances and FID∞
    overshoots (here below zero); from 10 × dim it is within a tenth of the truth."""
    assert metrics.fid_infinity_min_samples(64) == 640 and metrics.fid_infinity_min_samples(2048) == 20480
    mu1, sigma1, mu2, sigma2 = _gaussian_pair(64)
    true = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)
    errors = {}
    for n in (100, 640):
        outs = [
            metrics.fid_infinity(np.random.default_rng(100 + seed).multivariate_normal(mu1, sigma1, size=n),
                                 (mu2, sigma2), seed=seed)
            for seed in range(6)
        ]
        assert all(out["supported"] == (n >= 640) for out in outs)
        errors[n] = np.mean([out["fid_infinity"] for out in outs]) - true
    assert errors[100] < -true  # the extrapolation lands below zero
    assert abs(errors[640]) < 0.15 * true
    with pytest.raises(ValueError, match="dim"):
        metrics.fid_infinity_min_samples(0)


def test_fid_infinity_takes_reference_features_or_statistics_and_checks_them():
    mu1, sigma1, mu2, sigma2 = _gaussian_pair(8)
    rng = np.random.default_rng(0)
    x, ref = rng.multivariate_normal(mu1, sigma1, size=100), rng.multivariate_normal(mu2, sigma2, size=300)
    from_features = metrics.fid_infinity(x, ref, seed=3)
    from_stats = metrics.fid_infinity(x, metrics.feature_statistics(ref), seed=3)
    assert from_features["fid_infinity"] == pytest.approx(from_stats["fid_infinity"], rel=1e-9)
    assert metrics.fid_infinity(x, ref, seed=3) == from_features  # the same seed, the same subsets
    with pytest.raises(ValueError, match="feature dimension"):
        metrics.fid_infinity(x, ref[:, :4])
    with pytest.raises(ValueError, match="mu"):
        metrics.fid_infinity(x, (mu2[:3], sigma2))
    with pytest.raises(ValueError, match="min_size"):
        metrics.fid_infinity(x, ref, min_size=100)
    with pytest.raises(ValueError, match="at least 4 rows"):
        metrics.fid_infinity(x[:3], ref)


def test_fid_bootstrap_interval_holds_the_raw_fid_and_narrows_with_more_samples():
    mu1, sigma1, mu2, sigma2 = _gaussian_pair(16)
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        x = rng.multivariate_normal(mu1, sigma1, size=n)
        out = metrics.fid_bootstrap(x, (mu2, sigma2), num_rounds=60, seed=1)
        assert out["fid"] == pytest.approx(metrics.frechet_distance(*metrics.feature_statistics(x), mu2, sigma2))
        assert out["low"] <= out["fid"] <= out["high"]
        assert out == metrics.fid_bootstrap(x, (mu2, sigma2), num_rounds=60, seed=1)
        widths.append(out["high"] - out["low"])
    assert widths[1] < widths[0] / 2  # about 1/sqrt(N): a quarter at 16× the samples
    ref = rng.multivariate_normal(mu2, sigma2, size=200)
    both = metrics.fid_bootstrap(x, ref, num_rounds=30, seed=1)  # the reference resampled too
    assert both["std"] > metrics.fid_bootstrap(x, metrics.feature_statistics(ref), num_rounds=30, seed=1)["std"]
    with pytest.raises(ValueError, match="confidence"):
        metrics.fid_bootstrap(x, ref, confidence=1.5)
