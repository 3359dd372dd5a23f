"""Sample-quality metrics on feature vectors: FID, KID and nearest-neighbour memorization.

All functions take plain arrays of features (one row per sample, e.g. Inception pool
features) and compute in float64 with numpy / scipy / scikit-learn.

* :func:`frechet_distance` is the Fréchet (2-Wasserstein) distance between two
  Gaussians, ``d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` — the FID of Heusel et
  al. (2017), eq. 39 of Cerizza et al. (2023) — equal to the reference FID code's (TTUR /
  pytorch-fid) without its general matrix square root: with ``Σi = Fi Fiᵀ``,
  ``Tr((Σ1 Σ2)^{1/2})`` is the sum of the singular values of ``F1ᵀ F2``, and ``Fi`` is the
  centred features themselves when a set has no more samples than dimensions (a
  Cholesky factor of ``Σi`` otherwise). :func:`fid_from_features` takes features or
  statistics on either side.
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

# Negative eigenvalues (or a factorization's remainder) beyond _PSD_TOLERANCE × the largest
# magnitude are not rounding: the matrices are no covariances (statistics stored in float32,
# as TTUR's are, stay far within it).
_PSD_TOLERANCE = 1e-4
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


def _covariance_factor(sigma, name):
    """A thin factor ``F`` (``d × r``) of a covariance: ``F Fᵀ = Σ``, r its numerical rank.

    LAPACK's pivoted Cholesky factorization (``dpstrf``): as cheap as a plain Cholesky
    for a positive definite ``Σ``, and it stops at the rank of a singular one (a set of
    fewer samples than dimensions) after ``O(d² r)`` work. Whatever it leaves is checked
    to be rounding: a positive semi-definite matrix leaves nothing larger.

    Args:
        sigma: a ``d × d`` float64 array (its symmetric part is used).
        name: the argument's name, for the message.

    Returns:
        A float64 ``d × r`` array.

    Raises:
        ValueError: ``Σ − F Fᵀ`` has an entry above 1e-4 × the largest of ``Σ``: it is no
            covariance.
    """
    sigma = (sigma + sigma.T) / 2.0
    d = sigma.shape[0]
    triangle, pivots, rank, _ = linalg.lapack.dpstrf(sigma, lower=1)  # Pᵀ Σ P = L Lᵀ
    factor = np.empty((d, rank))
    factor[pivots - 1] = np.tril(triangle)[:, :rank]
    if rank < d:
        remainder = float(np.max(np.abs(sigma - factor @ factor.T)))
        scale = float(np.max(np.abs(sigma)))
        if remainder > _PSD_TOLERANCE * scale:
            raise ValueError(
                f"Expected `{name}` to be a covariance (positive semi-definite up to rounding). Received: a "
                f"matrix whose pivoted Cholesky factorization stops at rank {rank} of {d}, leaving entries up to "
                f"{remainder:.3g} (its largest entry: {scale:.3g}); it has negative eigenvalues"
            )
    return factor


def _check_psd(values, what):
    """Raises ValueError when the ascending eigenvalues ``values`` of ``what`` are negative beyond rounding."""
    scale = float(np.max(np.abs(values)))
    if values[0] < -_PSD_TOLERANCE * scale:
        raise ValueError(
            f"Expected covariances (positive semi-definite up to rounding: eigenvalues >= -{_PSD_TOLERANCE:g} × the "
            f"largest magnitude), whose product's square root is real. Received: {what} with eigenvalues from "
            f"{values[0]:.3g} to {values[-1]:.3g}"
        )


class _Gaussian:
    """A Gaussian as the Fréchet distance uses it: its mean, its covariance's trace, and the
    covariance either as a thin factor or as a matrix.

    Attributes:
        mu: the mean, float64 ``[d]``.
        trace: ``Tr(Σ)``.
        factor: ``F`` with ``F Fᵀ = Σ`` (``d × r``), or None: the centred features of a set
            of no more samples than dimensions, or :func:`_covariance_factor` of ``sigma``.
        sigma: ``Σ`` (``d × d``), or None when ``factor`` stands for it.
        name: what it was made of, for messages.
    """

    def __init__(self, mu, trace, factor=None, sigma=None, name="sigma"):
        self.mu, self.trace, self.factor, self.sigma, self.name = mu, trace, factor, sigma, name

    @classmethod
    def of_features(cls, features, name="features"):
        """The Gaussian :func:`feature_statistics` fits to a checked float64 ``[n, d]`` array (n ≥ 2)."""
        n, d = features.shape
        mu = np.mean(features, axis=0)
        if n <= d:
            factor = (features - mu).T / np.sqrt(n - 1)
            return cls(mu, float(np.sum(factor * factor)), factor=factor, name=name)
        sigma = np.cov(features, rowvar=False)
        return cls(mu, float(np.trace(sigma)), sigma=sigma, name=name)

    @classmethod
    def of_statistics(cls, mu, sigma, name="sigma"):
        """The Gaussian of checked float64 statistics."""
        return cls(mu, float(np.trace(sigma)), sigma=sigma, name=name)

    def factored(self):
        """This Gaussian with a factor (:func:`_covariance_factor` of its covariance)."""
        if self.factor is not None:
            return self
        return _Gaussian(self.mu, self.trace, factor=_covariance_factor(self.sigma, self.name), name=self.name)

    def distance(self, other):
        """The squared Fréchet distance to ``other``."""
        return _frechet(self.mu, self.trace, other.mu, other.trace, _trace_sqrt(self, other))


def _trace_sqrt(a, b):
    """``Tr((Σa Σb)^{1/2})`` of two :class:`_Gaussian`, from one symmetric eigenvalue problem.

    With ``Σa = F Fᵀ``, ``Σa Σb`` has the nonzero eigenvalues of the symmetric positive
    semi-definite ``Fᵀ Σb F`` (``AB`` and ``BA`` share them), and the trace of the principal
    square root is the sum of their square roots. When ``Σb = G Gᵀ`` too, ``Fᵀ Σb F`` is the
    Gram matrix of ``C = Fᵀ G``, and the smaller of ``C Cᵀ`` and ``Cᵀ C`` is used (the sum is
    ``C``'s nuclear norm): for sets of n ≤ d samples, an n × n problem, however large d.

    Returns:
        The trace, a Python float (not finite when the inputs are not).

    Raises:
        ValueError: the product has a negative eigenvalue beyond rounding (no covariances).
    """
    if a.factor is None and b.factor is None:
        a = a.factored()
    if a.factor is not None and b.factor is not None:
        cross = a.factor.T @ b.factor
        gram = cross @ cross.T if cross.shape[0] <= cross.shape[1] else cross.T @ cross
    else:
        factor, sigma = (a.factor, b.sigma) if a.factor is not None else (b.factor, a.sigma)
        gram = factor.T @ sigma @ factor
    if gram.size == 0:
        return 0.0
    values = np.linalg.eigvalsh(gram)
    _check_psd(values, f"the product of `{a.name}` and `{b.name}`")
    return float(np.sum(np.sqrt(np.clip(values, 0.0, None))))


def _frechet(mu1, trace1, mu2, trace2, trace_sqrt):
    """``||μ1 − μ2||² + Tr Σ1 + Tr Σ2 − 2 Tr((Σ1 Σ2)^{1/2})`` as a Python float, rounding below 0 returned as 0."""
    diff = mu1 - mu2
    return max(float(diff @ diff + trace1 + trace2 - 2.0 * trace_sqrt), 0.0)


def _is_statistics(value):
    """Whether ``value`` is a ``(mu, sigma)`` pair rather than rows of features."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and np.ndim(value[1]) == 2


def _gaussian(value, name, like=None):
    """The :class:`_Gaussian` of ``[n, dim]`` features (n ≥ 2) or of a ``(mu, sigma)`` pair.

    Args:
        value: features or statistics.
        name: the argument's name, for messages.
        like: ``(other_name, dim)``: the dimension ``value`` must have, and whose it is.

    Returns:
        A ``_Gaussian``.
    """
    if _is_statistics(value):
        mu = _float_array(value[0], f"{name}[0] (mu)", ndim=1)
        sigma = _float_array(value[1], f"{name}[1] (sigma)", ndim=2)
        dim = mu.shape[0] if like is None else like[1]
        if mu.shape != (dim,) or sigma.shape != (dim, dim):
            of = f"the feature dimension of `{like[0]}`" if like else "one dimension"
            raise ValueError(
                f"Expected `{name}` statistics of {of}: mu ({dim},) and sigma ({dim}, {dim}). "
                f"Received: mu.shape={mu.shape}, sigma.shape={sigma.shape}"
            )
        return _Gaussian.of_statistics(mu, sigma, f"{name}[1] (sigma)")
    features = _features(value, name, min_rows=2)
    if like is not None and features.shape[1] != like[1]:
        raise ValueError(
            f"Expected `{name}` to have the feature dimension of `{like[0]}` ({like[1]}). "
            f"Received: {name}.shape={features.shape}"
        )
    return _Gaussian.of_features(features, name)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Computes ``||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` (the FID of Heusel et al.,
    2017; eq. 39 of Cerizza et al., 2023) in float64: the value of the reference FID code
    (TTUR / pytorch-fid), whose ``scipy.linalg.sqrtm`` of ``Σ1 Σ2`` is replaced by the
    exact ``Tr((Σ1 Σ2)^{1/2})``: a pivoted Cholesky factor ``L`` of ``Σ1`` (``d × rank``),
    then the eigenvalues of the symmetric ``Lᵀ Σ2 L``. As in the reference
    code, when that fails (LAPACK does not converge, or the result is not finite),
    ``eps · I`` is added to both covariances in the square-root term and it is taken again.

    Args:
        mu1: mean of the first Gaussian, a 1-D array of length ``d``.
        sigma1: covariance of the first Gaussian, a ``d × d`` array.
        mu2: mean of the second Gaussian, a 1-D array of length ``d``.
        sigma2: covariance of the second Gaussian, a ``d × d`` array.
        eps: diagonal offset added to both covariances when the first square root fails;
            a finite number ≥ 0.

    Returns:
        The squared Fréchet distance as a Python float (≥ 0; tiny negative values from
        rounding are returned as 0).

    Raises:
        ValueError: on badly shaped or non-finite inputs, or when the matrices are no
            covariances: ``Σ1``'s factorization leaves more than rounding, or ``Σ1 Σ2`` has
            an eigenvalue below −1e-4 × its largest magnitude (its square root would be
            complex).
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

    def trace_sqrt(offset):
        """Tr((Σ1 Σ2)^{1/2}) with ``offset`` added to both covariances; NaN where LAPACK fails."""
        try:
            return _trace_sqrt(
                _Gaussian.of_statistics(mu1, sigma1 + offset, "sigma1"), _Gaussian.of_statistics(mu2, sigma2 + offset, "sigma2")
            )
        except np.linalg.LinAlgError:
            return np.nan

    value = trace_sqrt(0.0)
    if not np.isfinite(value):
        value = trace_sqrt(np.eye(d) * eps)
        if not np.isfinite(value):
            raise ValueError(
                "Expected the product of the covariances to have a finite square root, "
                f"even after adding eps * I. Received: eps={eps!r}"
            )
    return _frechet(mu1, np.trace(sigma1), mu2, np.trace(sigma2), value)


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
    """Fréchet Inception Distance between two sets, each given by its features or its statistics.

    Args:
        feats_a: ``[n_a, dim]`` features of the first set (``n_a ≥ 2``), or its ``(mu, sigma)``
            statistics (:func:`feature_statistics`; pytorch-fid's precomputed ``.npz``).
        feats_b: the second set, likewise, of the same dimension.

    Returns:
        The FID as a Python float: :func:`frechet_distance` of the Gaussians fitted by
        :func:`feature_statistics`. A set of no more samples than dimensions enters through
        its centred features, so that no ``dim × dim`` matrix of it is factored.
    """
    a = _gaussian(feats_a, "feats_a")
    return a.distance(_gaussian(feats_b, "feats_b", like=("feats_a", a.mu.shape[0])))


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
    reference = _gaussian(reference, "reference", like=("features", features.shape[1])).factored()  # once
    rng = np.random.default_rng(_seed(seed))
    sizes = np.unique(np.linspace(min_size, n, num_points).astype(int))
    if len(sizes) < 2:
        raise ValueError(f"Expected at least 2 distinct subset sizes from min_size={min_size} to {n}")
    fids = np.array([_Gaussian.of_features(features[rng.permutation(n)[:size]]).distance(reference) for size in sizes])
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
    fixed = _is_statistics(reference)
    target = _gaussian(reference, "reference", like=("features", features.shape[1])).factored()  # once
    raw = _Gaussian.of_features(features).distance(target)
    if not fixed:
        reference = np.asarray(reference, dtype=np.float64)  # checked by _gaussian
    values = np.empty(num_rounds)
    for i in range(num_rounds):
        if not fixed:
            target = _Gaussian.of_features(reference[rng.integers(0, len(reference), len(reference))])
        values[i] = _Gaussian.of_features(features[rng.integers(0, len(features), len(features))]).distance(target)
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
