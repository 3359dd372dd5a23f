"""Sample-quality metrics on feature vectors: FID, KID and nearest-neighbour memorization.

All functions take plain arrays of features (one row per sample, e.g. Inception pool
features) and compute in float64 with numpy / scipy / scikit-learn.

* :func:`frechet_distance` is the Fréchet (2-Wasserstein) distance between two
  Gaussians, ``d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` — the FID of Heusel et
  al. (2017), eq. 39 of Cerizza et al. (2023) — computed with the same safeguards as the
  reference FID code (TTUR / pytorch-fid).
* :func:`kernel_inception_distance` is KID (Bińkowski et al., 2018): the unbiased MMD²
  estimate with the kernel ``k(x, y) = (xᵀy / d + 1)³``, averaged over random subsets as
  in TF-GAN / torch-fidelity; :func:`kid_estimate` adds a jackknife standard error
  (:func:`mmd2_with_jackknife`) and says when the subsets cannot vary.
* :func:`fid_infinity` extrapolates FID to infinitely many samples (Chong & Forsyth,
  2020; trusted from :func:`fid_infinity_min_samples` up) and :func:`fid_bootstrap` gives
  its bootstrap confidence interval: FID at the small sample counts of the survey (about
  100) is biased and noisy, and these say how much.
* :func:`nearest_neighbors`, :func:`median_nn_distance` and :func:`memorization_ratio`
  look for generated samples that sit unusually close to training samples.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy import linalg

from kdiff.checks import int_in_range, non_negative, positive_int

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "fid_from_features",
    "kernel_inception_distance",
    "kid_estimate",
    "mmd2_with_jackknife",
    "fid_infinity",
    "fid_infinity_min_samples",
    "fid_bootstrap",
    "nearest_neighbors",
    "median_nn_distance",
    "memorization_ratio",
]

# Largest |imaginary part| on the diagonal of sqrtm(Σ1 Σ2) that is treated as rounding
# error (the value used by TTUR and pytorch-fid).
_IMAG_TOLERANCE = 1e-3
# FID∞'s smallest subset is N // _FID_INFINITY_SMALLEST_FRACTION of the N samples (Chong &
# Forsyth fit from a tenth of 50,000 up; a fifth keeps small N usable) ...
_FID_INFINITY_SMALLEST_FRACTION = 5
# ... and its fit is trusted when that subset has at least this many rows per feature
# dimension: Chong & Forsyth's smallest, 5,000 Inception features of 2,048 dimensions, is
# 2.4 per dimension; below about 1 the covariance is singular and FID is not c / N-like.
_FID_INFINITY_ROWS_PER_DIM = 2


def _float_array(x, name, ndim):
    """Returns ``x`` as a finite float64 array of rank ``ndim``, or raises ValueError."""
    array = np.asarray(x)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"Expected `{name}` to be numeric. Received: dtype={array.dtype}")
    if array.ndim != ndim:
        what = "a 1-D vector" if ndim == 1 else "a 2-D array"
        raise ValueError(f"Expected `{name}` to be {what}. Received: {name}.shape={array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"Expected `{name}` to contain only finite values. "
            f"Received: {name} with {int(np.sum(~np.isfinite(array)))} NaN/inf values"
        )
    return array


def _features(x, name, min_rows=1):
    """Returns ``x`` as a finite float64 ``[num_samples, dim]`` array with ≥ ``min_rows`` rows."""
    array = _float_array(x, name, ndim=2)
    if array.shape[0] < min_rows:
        raise ValueError(
            f"Expected `{name}` to have at least {min_rows} rows (samples). "
            f"Received: {name}.shape={array.shape}"
        )
    if array.shape[1] < 1:
        raise ValueError(
            f"Expected `{name}` to have at least 1 feature column. "
            f"Received: {name}.shape={array.shape}"
        )
    return array


def _same_dim(a, b, name_a, name_b):
    """Raises ValueError unless the feature arrays ``a`` and ``b`` have equal column counts."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Expected `{name_b}` to have the feature dimension of `{name_a}` ({a.shape[1]}). "
            f"Received: {name_b}.shape={b.shape}"
        )


def _seed(value):
    """Returns ``value`` unless it is neither None nor a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"Expected `seed` to be an integer or None. Received: seed={value!r}")
    if value < 0:
        raise ValueError(f"Expected `seed` >= 0. Received: seed={value!r}")
    return int(value)


def _sqrtm(matrix):
    """Matrix square root via scipy, with the singular-matrix warning silenced.

    The caller checks the result for non-finite values instead of relying on the warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return linalg.sqrtm(matrix)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Computes ``||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` (the FID of Heusel et al.,
    2017; eq. 39 of Cerizza et al., 2023) in float64. As in the reference FID code (TTUR /
    pytorch-fid), the square root is taken with ``scipy.linalg.sqrtm``; when it is not
    finite (e.g. for singular covariances), ``eps · I`` is added to both covariances and
    the root is taken again; a small imaginary part left by rounding is dropped.

    Args:
        mu1: mean of the first Gaussian, a 1-D array of length ``d``.
        sigma1: covariance of the first Gaussian, a ``d × d`` array.
        mu2: mean of the second Gaussian, a 1-D array of length ``d``.
        sigma2: covariance of the second Gaussian, a ``d × d`` array.
        eps: diagonal offset added to both covariances when the first square root is
            not finite; a finite number ≥ 0.

    Returns:
        The squared Fréchet distance as a Python float (≥ 0; tiny negative values from
        rounding are returned as 0).

    Raises:
        ValueError: on badly shaped or non-finite inputs, or when the square root keeps
            an imaginary part larger than 1e-3 on its diagonal (the covariances are then
            far from positive semi-definite).
    """
    eps = non_negative(eps, "eps")
    mu1 = _float_array(mu1, "mu1", ndim=1)
    mu2 = _float_array(mu2, "mu2", ndim=1)
    d = mu1.shape[0]
    if d < 1:
        raise ValueError(f"Expected `mu1` to be non-empty. Received: mu1.shape={mu1.shape}")
    if mu2.shape != (d,):
        raise ValueError(
            f"Expected `mu2` to have the length of `mu1` ({d}). Received: mu2.shape={mu2.shape}"
        )
    sigma1 = _float_array(sigma1, "sigma1", ndim=2)
    sigma2 = _float_array(sigma2, "sigma2", ndim=2)
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(
                f"Expected `{name}` of shape ({d}, {d}) to match the means. "
                f"Received: {name}.shape={sigma.shape}"
            )

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise ValueError(
                "Expected the product of the covariances to have a finite square root, "
                f"even after adding eps * I. Received: eps={eps!r}"
            )
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > _IMAG_TOLERANCE:
            raise ValueError(
                "Expected sqrtm(sigma1 @ sigma2) to be real up to rounding (|imag| <= "
                f"{_IMAG_TOLERANCE} on the diagonal); the covariances are likely not "
                f"positive semi-definite. Received: max |imag| = {imag:.3g}"
            )
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return max(float(value), 0.0)


def feature_statistics(features):
    """Mean and covariance of a set of feature vectors.

    Args:
        features: ``[num_samples, dim]`` array with ``num_samples ≥ 2`` and finite values.

    Returns:
        ``(mu, sigma)``: the float64 mean of shape ``[dim]`` and the unbiased covariance
        (``np.cov(..., rowvar=False)``) of shape ``[dim, dim]``.
    """
    features = _features(features, "features", min_rows=2)
    mu = np.mean(features, axis=0)
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return mu, sigma


def fid_from_features(feats_a, feats_b):
    """Fréchet Inception Distance between two sets of features.

    Args:
        feats_a: ``[n_a, dim]`` features of the first set (``n_a ≥ 2``).
        feats_b: ``[n_b, dim]`` features of the second set (``n_b ≥ 2``).

    Returns:
        The FID as a Python float: :func:`frechet_distance` of the Gaussians fitted by
        :func:`feature_statistics`.
    """
    feats_a = _features(feats_a, "feats_a", min_rows=2)
    feats_b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(feats_a, feats_b, "feats_a", "feats_b")
    mu_a, sigma_a = feature_statistics(feats_a)
    mu_b, sigma_b = feature_statistics(feats_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def _cubic_kernels(x, y):
    """The kernel matrices ``K_xx``, ``K_yy``, ``K_xy`` of ``k(u, v) = (uᵀv / d + 1)³``."""
    d = x.shape[1]
    return (x @ x.T / d + 1.0) ** 3, (y @ y.T / d + 1.0) ** 3, (x @ y.T / d + 1.0) ** 3


def _mmd2_terms(k_xx, k_yy, k_xy):
    """Off-diagonal row sums of ``K_xx`` and ``K_yy``, row and column sums of ``K_xy``."""
    r_x = k_xx.sum(axis=1) - np.diagonal(k_xx)
    r_y = k_yy.sum(axis=1) - np.diagonal(k_yy)
    return r_x, r_y, k_xy.sum(axis=1), k_xy.sum(axis=0)


def _unbiased_mmd2(k_xx, k_yy, k_xy):
    """Unbiased MMD² (a two-sample U-statistic) from the kernel matrices of ``x`` and ``y``."""
    m, n = k_xy.shape
    r_x, r_y, c_x, _ = _mmd2_terms(k_xx, k_yy, k_xy)
    return r_x.sum() / (m * (m - 1)) + r_y.sum() / (n * (n - 1)) - 2.0 * c_x.sum() / (m * n)


def _mmd2_jackknife_variance(k_xx, k_yy, k_xy):
    """The two-sample delete-one jackknife variance (Arvesen, 1969) of the unbiased MMD².

    ``(m−1)/m · Σ_i (θ₋ᵢ − θ̄₋)²`` over the rows of ``x`` plus the same over the rows of
    ``y``, where ``θ₋ᵢ`` is the estimate without row i; every ``θ₋ᵢ`` comes in closed form
    from the kernel matrices' row sums. Needs at least 3 rows on each side.
    """
    m, n = k_xy.shape
    r_x, r_y, c_x, c_y = _mmd2_terms(k_xx, k_yy, k_xy)
    a, b, c = r_x.sum(), r_y.sum(), c_x.sum()
    without_x = (a - 2.0 * r_x) / ((m - 1) * (m - 2)) + b / (n * (n - 1)) - 2.0 * (c - c_x) / ((m - 1) * n)
    without_y = a / (m * (m - 1)) + (b - 2.0 * r_y) / ((n - 1) * (n - 2)) - 2.0 * (c - c_y) / (m * (n - 1))
    return (m - 1) / m * np.sum((without_x - without_x.mean()) ** 2) + (n - 1) / n * np.sum(
        (without_y - without_y.mean()) ** 2
    )


def mmd2_with_jackknife(feats_a, feats_b):
    """The unbiased MMD² of KID's cubic kernel on all rows, and its jackknife standard error.

    Args:
        feats_a: ``[m, dim]`` features (``m ≥ 3``).
        feats_b: ``[n, dim]`` features (``n ≥ 3``); the sizes may differ.

    Returns:
        ``(mmd2, standard_error)`` as Python floats: the U-statistic and the square root of
        its two-sample delete-one jackknife variance (Arvesen, 1969), which estimates how
        much the value would move with fresh draws of both sets (conservatively: the
        jackknife variance is biased upwards, by the Efron–Stein inequality).
    """
    feats_a = _features(feats_a, "feats_a", min_rows=3)
    feats_b = _features(feats_b, "feats_b", min_rows=3)
    _same_dim(feats_a, feats_b, "feats_a", "feats_b")
    kernels = _cubic_kernels(feats_a, feats_b)
    return float(_unbiased_mmd2(*kernels)), float(np.sqrt(_mmd2_jackknife_variance(*kernels)))


def kid_estimate(feats_a, feats_b, num_subsets=100, subset_size=1000, seed=0):
    """KID with the field's subset protocol, and two honest measures of its spread.

    For each of ``num_subsets`` rounds, ``m`` rows are drawn without replacement from each
    set and the unbiased MMD² with the kernel ``k(x, y) = (xᵀy / d + 1)³`` is computed;
    ``m`` is ``subset_size`` clipped to the smaller set size. The KID is their mean, as in
    Bińkowski et al. (2018), TF-GAN, torch-fidelity and clean-fid (``subset_size=1000``,
    100 subsets), so values stay comparable with theirs.

    The spread those tools print, the standard deviation over subsets, is kept as
    ``subset_std`` but is None when the subsets cannot vary: when ``m`` equals both set
    sizes every subset is the whole of both sets (drawn in another order, which the
    U-statistic ignores), so the spread is undefined, not zero; and with one subset.
    When ``m`` equals only the samples' count (the usual case below 1,000 samples), the
    subsets vary on the reference side alone and ``subset_std`` says nothing about the
    samples' own noise. ``standard_error`` does: the square root of the mean, over
    subsets, of each subset estimate's two-sample jackknife variance
    (:func:`mmd2_with_jackknife`). The mean of the subsets varies less than one subset,
    so it is an upper bound (conservative); it needs ``m ≥ 3``.

    Args:
        feats_a: ``[n_a, dim]`` features of the first set (``n_a ≥ 2``).
        feats_b: ``[n_b, dim]`` features of the second set (``n_b ≥ 2``).
        num_subsets: number of random subsets, an integer ≥ 1.
        subset_size: rows per subset, an integer ≥ 2 (clipped to ``min(n_a, n_b)``).
        seed: seed of the subset sampler, a non-negative integer or None.

    Returns:
        A dict: ``kid`` (the mean over subsets), ``subset_std`` (``ddof=0``; None when the
        subsets cannot vary), ``standard_error`` (None when ``m < 3``), ``subset_size``
        (m), ``num_subsets`` and ``subsets_vary`` (bool), as Python values.
    """
    feats_a = _features(feats_a, "feats_a", min_rows=2)
    feats_b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(feats_a, feats_b, "feats_a", "feats_b")
    num_subsets = positive_int(num_subsets, "num_subsets")
    subset_size = int_in_range(subset_size, "subset_size", 2, None)
    rng = np.random.default_rng(_seed(seed))
    m = min(subset_size, feats_a.shape[0], feats_b.shape[0])
    estimates = np.empty(num_subsets, dtype=np.float64)
    variances = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = feats_a[rng.choice(feats_a.shape[0], m, replace=False)]
        y = feats_b[rng.choice(feats_b.shape[0], m, replace=False)]
        kernels = _cubic_kernels(x, y)
        estimates[i] = _unbiased_mmd2(*kernels)
        variances[i] = _mmd2_jackknife_variance(*kernels) if m >= 3 else np.nan
    vary = num_subsets > 1 and (m < feats_a.shape[0] or m < feats_b.shape[0])
    return {
        "kid": float(np.mean(estimates)),
        "subset_std": float(np.std(estimates)) if vary else None,
        "standard_error": float(np.sqrt(np.mean(variances))) if m >= 3 else None,
        "subset_size": int(m),
        "num_subsets": num_subsets,
        "subsets_vary": bool(vary),
    }


def kernel_inception_distance(feats_a, feats_b, num_subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance (Bińkowski et al., 2018) between two sets of features.

    The mean and the spread over subsets of :func:`kid_estimate` (which also gives a
    jackknife standard error): ``m`` rows drawn without replacement from each set per
    subset, ``m`` = ``subset_size`` clipped to the smaller set size, the unbiased MMD²
    estimate with the kernel ``k(x, y) = (xᵀy / d + 1)³`` (TF-GAN / torch-fidelity).
    Unlike FID, the estimate is unbiased, so it can be slightly negative when both sets
    come from the same distribution.

    Args:
        feats_a: ``[n_a, dim]`` features of the first set (``n_a ≥ 2``).
        feats_b: ``[n_b, dim]`` features of the second set.
        num_subsets: the subsets, as in :func:`kid_estimate`.
        subset_size: rows per subset, as in :func:`kid_estimate`.
        seed: seed of the subset sampler.

    Returns:
        ``(mean, std)``: the mean of the per-subset MMD² estimates and their standard
        deviation (``ddof=0``), as Python floats; ``std`` is None when the subsets cannot
        vary (one subset, or every subset is the whole of both sets).
    """
    estimate = kid_estimate(feats_a, feats_b, num_subsets=num_subsets, subset_size=subset_size, seed=seed)
    return estimate["kid"], estimate["subset_std"]


def _reference_statistics(reference, dim, name="reference"):
    """``(mu, sigma)`` of ``reference``: ``[n, dim]`` features or a ``(mu, sigma)`` pair."""
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        mu = _float_array(reference[0], f"{name}[0] (mu)", ndim=1)
        sigma = _float_array(reference[1], f"{name}[1] (sigma)", ndim=2)
        if mu.shape != (dim,) or sigma.shape != (dim, dim):
            raise ValueError(
                f"Expected `{name}` statistics of the features' dimension: mu ({dim},) and sigma "
                f"({dim}, {dim}). Received: mu.shape={mu.shape}, sigma.shape={sigma.shape}"
            )
        return mu, sigma
    features = _features(reference, name, min_rows=2)
    if features.shape[1] != dim:
        raise ValueError(
            f"Expected `{name}` to have the feature dimension of `features` ({dim}). "
            f"Received: {name}.shape={features.shape}"
        )
    return feature_statistics(features)


def _psd_sqrt(sigma):
    """The symmetric square root of a covariance (negative rounding eigenvalues → 0)."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


class _FrechetToReference:
    """Fréchet distances of many Gaussians to one fixed reference Gaussian, fast.

    ``Tr((Σ Σ_r)^{1/2})`` equals the sum of the square roots of the eigenvalues of the
    symmetric ``Σ_r^{1/2} Σ Σ_r^{1/2}``: one ``eigh`` of the reference, then one
    ``eigvalsh`` per distance instead of a general ``sqrtm`` (about 10× faster at 2048-d).
    Equal to :func:`frechet_distance` up to rounding (the tests compare them).
    """

    def __init__(self, mu, sigma):
        self.mu, self.sigma = mu, sigma
        self.root = _psd_sqrt(sigma)
        self.trace = float(np.trace(sigma))

    def __call__(self, features):
        mu, sigma = feature_statistics(features)
        inner = self.root @ sigma @ self.root
        values = np.linalg.eigvalsh((inner + inner.T) / 2.0)
        diff = mu - self.mu
        value = diff @ diff + np.trace(sigma) + self.trace - 2.0 * np.sum(np.sqrt(np.clip(values, 0.0, None)))
        return max(float(value), 0.0)


def fid_infinity_min_samples(dim):
    """The fewest samples whose FID∞ fit :func:`fid_infinity` trusts in a ``dim``-d feature space.

    The fit's smallest subset (a fifth of the samples) must hold at least 2 rows per
    feature dimension, about the ratio of Chong & Forsyth's (2020) smallest subset (5,000
    Inception features of 2,048 dimensions): 10 × ``dim`` samples — 640 for a 64-d
    classifier, 20,480 for Inception's 2,048-d pool features. Below it the small subsets'
    covariances are (near) singular, FID does not fall like c / N, and the intercept is
    an artefact of the fit.

    Args:
        dim: the feature dimension, an integer ≥ 1.

    Returns:
        The minimum sample count, an int.
    """
    return _FID_INFINITY_SMALLEST_FRACTION * _FID_INFINITY_ROWS_PER_DIM * positive_int(dim, "dim")


def fid_infinity(features, reference, num_points=15, min_size=None, seed=0):
    """FID extrapolated to infinitely many samples (Chong & Forsyth, CVPR 2020).

    FID is biased upwards at finite N, by about ``c / N``: FID of ``features``' random
    subsets of ``num_points`` sizes from ``min_size`` to N (all rows) against the fixed
    ``reference`` is fitted linearly in ``1 / N``, and the fit's intercept is FID∞ — the
    value an unlimited number of samples would give, comparable between runs with
    different sample counts.

    Args:
        features: ``[N, dim]`` features of the generated samples (N ≥ 4).
        reference: the reference set: ``[n, dim]`` features, or ``(mu, sigma)`` statistics
            (its own finite-size error is not extrapolated).
        num_points: subset sizes in the fit, an integer ≥ 2.
        min_size: the smallest subset, an integer in ``[2, N - 1]``; default N // 5
            (Chong & Forsyth fit from a tenth of 50,000 up; a fifth keeps small N usable).
        seed: seed of the subsets.

    Returns:
        A dict: ``fid_infinity`` (the intercept), ``slope`` (c, the bias at N = 1),
        ``sizes`` and ``fids`` (the points fitted; the last is all rows, the raw FID) and
        ``supported`` (N ≥ :func:`fid_infinity_min_samples` of the dimension: below it,
        report the value as unsupported, not as a number to compare).

    Raises:
        ValueError: on bad shapes, too few rows or arguments out of range.
    """
    features = _features(features, "features", min_rows=4)
    n = features.shape[0]
    num_points = int_in_range(num_points, "num_points", 2, None)
    min_size = max(2, n // _FID_INFINITY_SMALLEST_FRACTION) if min_size is None else int_in_range(min_size, "min_size", 2, n - 1)
    distance = _FrechetToReference(*_reference_statistics(reference, features.shape[1]))
    rng = np.random.default_rng(_seed(seed))
    sizes = np.unique(np.linspace(min_size, n, num_points).astype(int))
    if len(sizes) < 2:
        raise ValueError(f"Expected at least 2 distinct subset sizes from min_size={min_size} to {n}")
    fids = np.array([distance(features[rng.permutation(n)[:size]]) for size in sizes])
    slope, intercept = np.polyfit(1.0 / sizes, fids, 1)
    return {
        "fid_infinity": float(intercept),
        "slope": float(slope),
        "sizes": [int(size) for size in sizes],
        "fids": [float(value) for value in fids],
        "supported": n >= fid_infinity_min_samples(features.shape[1]),
    }


def fid_bootstrap(features, reference, num_rounds=100, confidence=0.95, seed=0):
    """A bootstrap confidence interval of FID: how much it moves with the samples drawn.

    Each round resamples ``features``' rows with replacement (and the reference's, when
    it is given as features) and computes FID. Resampling repeats rows, which raises FID
    on average (at small N the whole bootstrap distribution can lie above the raw FID
    ``F``), so the percentile interval ``[q_low, q_high]`` is moved by that shift, the
    resampled FIDs' mean minus F: ``[q_low − shift, q_high − shift]``, the spread of FID
    around its raw value. ``std`` is the resampled FIDs' standard deviation.

    Args:
        features: ``[N, dim]`` features of the generated samples (N ≥ 2).
        reference: ``[n, dim]`` features or ``(mu, sigma)`` statistics.
        num_rounds: bootstrap rounds, an integer ≥ 2.
        confidence: the interval's coverage, in (0, 1).
        seed: seed of the resampling.

    Returns:
        A dict: ``fid`` (raw), ``low`` and ``high`` (clipped at 0), ``std``,
        ``confidence``, ``num_rounds``.
    """
    features = _features(features, "features", min_rows=2)
    num_rounds = int_in_range(num_rounds, "num_rounds", 2, None)
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected `confidence` in (0, 1). Received: confidence={confidence!r}")
    rng = np.random.default_rng(_seed(seed))
    fixed = isinstance(reference, (tuple, list)) and len(reference) == 2
    ref_stats = _reference_statistics(reference, features.shape[1])
    raw = frechet_distance(*feature_statistics(features), *ref_stats)
    distance = _FrechetToReference(*ref_stats)
    if not fixed:
        reference = _features(reference, "reference", min_rows=2)
    values = np.empty(num_rounds)
    for i in range(num_rounds):
        if not fixed:
            distance = _FrechetToReference(*feature_statistics(reference[rng.integers(0, len(reference), len(reference))]))
        values[i] = distance(features[rng.integers(0, len(features), len(features))])
    tail = (1.0 - confidence) / 2.0
    shift = float(np.mean(values)) - raw
    q_low, q_high = np.quantile(values, [tail, 1.0 - tail]) - shift
    return {
        "fid": raw,
        "low": max(0.0, float(q_low)),
        "high": max(0.0, float(q_high)),
        "std": float(np.std(values, ddof=1)),
        "confidence": confidence,
        "num_rounds": num_rounds,
    }


def nearest_neighbors(query_feats, reference_feats, k=5):
    """The ``k`` nearest reference rows (Euclidean distance) of every query row.

    Args:
        query_feats: ``[n_query, dim]`` features to look up.
        reference_feats: ``[n_ref, dim]`` features to search in.
        k: number of neighbours, an integer in ``[1, n_ref]``.

    Returns:
        ``(distances, indices)``, both of shape ``[n_query, k]`` and sorted by increasing
        distance: float64 Euclidean distances and integer row indices into
        ``reference_feats``.
    """
    from sklearn.neighbors import NearestNeighbors  # imported here: only these two need it

    query_feats = _features(query_feats, "query_feats")
    reference_feats = _features(reference_feats, "reference_feats")
    _same_dim(reference_feats, query_feats, "reference_feats", "query_feats")
    k = int_in_range(k, "k", 1, reference_feats.shape[0])
    index = NearestNeighbors(n_neighbors=k, metric="euclidean").fit(reference_feats)
    distances, indices = index.kneighbors(query_feats, n_neighbors=k)
    return distances.astype(np.float64), indices


def median_nn_distance(features):
    """Median, over rows, of the distance from a row to its nearest *other* row.

    The typical spacing of a set of feature vectors: :func:`memorization_ratio` counts
    a generated sample as memorized when it sits closer to a training point than this.
    A row's match with itself is excluded; exact duplicates count as other rows at
    distance 0.

    Args:
        features: ``[n, dim]`` features with ``n ≥ 2``, e.g. of the training set.

    Returns:
        The median nearest-other-row Euclidean distance, a Python float ≥ 0.
    """
    features = _features(features, "features", min_rows=2)
    distances, indices = nearest_neighbors(features, features, k=2)
    # Use the first neighbour that is not the row itself (with duplicates, the row itself
    # need not come first).
    not_self = indices[:, 0] != np.arange(features.shape[0])
    return float(np.median(np.where(not_self, distances[:, 0], distances[:, 1])))


def memorization_ratio(query_feats, train_feats, threshold=None):
    """Share of queries that sit closer to the training set than training points do.

    A query counts as memorized when its nearest training neighbour is strictly closer
    than ``threshold``: by default :func:`median_nn_distance` of the training set, the
    median, over training points, of the distance from a training point to its nearest
    *other* training point (self-matches excluded; exact duplicates in the training set
    count as other points at distance 0).

    Args:
        query_feats: ``[n_query, dim]`` features, e.g. of generated samples.
        train_feats: ``[n_train, dim]`` features of the training set (``n_train ≥ 2``).
        threshold: the distance below which a query counts as memorized, a finite
            number ≥ 0, or None for ``median_nn_distance(train_feats)`` (pass it when
            scoring several query sets against one training set).

    Returns:
        The share in ``[0, 1]`` as a Python float. Copies of training points give 1.0
        (unless the median is 0); independent draws from the training distribution give
        about 0.5.
    """
    query_feats = _features(query_feats, "query_feats")
    train_feats = _features(train_feats, "train_feats", min_rows=2)
    _same_dim(train_feats, query_feats, "train_feats", "query_feats")
    threshold = median_nn_distance(train_feats) if threshold is None else non_negative(threshold, "threshold")

    dist_q, _ = nearest_neighbors(query_feats, train_feats, k=1)
    return float(np.mean(dist_q[:, 0] < threshold))
