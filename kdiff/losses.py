"""Training objectives of diffusion and score-based models, as pure functions.

Every loss has the form ``loss(model_fn, x0, …) -> scalar`` — the mean over the batch of
a per-example loss — and is built from TensorFlow ops only, so it runs eagerly and inside
``tf.function`` (including with an unknown batch size) and keeps the gradients with
respect to the variables ``model_fn`` reads.

Randomness (timesteps, noise levels, Gaussian noise, projections) is drawn with
TensorFlow's stateful ops when ``seed`` is None, and with stateless ops when ``seed`` is
an int or a shape-[2] integer tensor: the same seed gives the same loss, eager or
compiled. Each random quantity uses its own seed derived with ``_random.fold_in``
(index 0: timesteps / labels, 1: Gaussian noise, 2: projections), so ``simple`` and
``hybrid`` draw the same ``t`` and ``noise`` for the same seed.

Equation numbers refer to the survey of Cerizza, Savazzi and Barbera, "Diffusion Models" (Università di Milano-Bicocca, 2023):

* ``simple`` — eq. 24, L_simple = E_{t,x0,ε} ‖ε − ε_θ(x_t, t)‖² (Ho et al. 2020).
* ``hybrid`` — eq. 25, L_hybrid = L_simple + λ L_vlb with the learned variance of eq. 20
  (Nichol & Dhariwal 2021, Improved DDPM).
* ``dsm`` — eqs. 32–33 with λ(σ) = σ² (Song & Ermon 2019, NCSN).
* ``sliced_score_matching`` — eq. 42 (Song et al. 2019, sliced score matching).
* ``sde_dsm`` — eq. 36 (Song et al. 2021, score SDE).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from kdiff import checks, _ops, _random
from kdiff.schedules import Schedule
from kdiff.sde import SDE

__all__ = [
    "simple",
    "hybrid",
    "dsm",
    "sliced_score_matching",
    "sde_dsm",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
]

_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- helpers


def _batch_size(x):
    return tf.shape(x)[0]


def _seeds(seed, count):
    """``count`` independent seed pairs derived from ``seed``, or Nones when it is None."""
    if seed is None:
        return [None] * count
    base = _random.seed_pair(seed)
    return [_random.fold_in(base, i) for i in range(count)]


def _uniform_ints(n, maxval, seed):
    """``n`` integers uniform in [0, maxval), int32, stateless when ``seed`` is given."""
    if seed is None:
        return tf.random.uniform([n], minval=0, maxval=maxval, dtype=tf.int32)
    return tf.random.stateless_uniform([n], seed=seed, minval=0, maxval=maxval, dtype=tf.int32)


def _uniform_floats(n, minval, maxval, seed, dtype):
    if seed is None:
        return tf.random.uniform([n], minval=minval, maxval=maxval, dtype=dtype)
    return tf.random.stateless_uniform([n], seed=seed, minval=minval, maxval=maxval, dtype=dtype)


def _check_batch_vector(value, x0, name):
    """Raises ValueError unless ``value`` (a tensor) has shape [batch] matching ``x0``."""
    shape = value.shape
    if shape.rank is not None and shape.rank != 1:
        raise ValueError(
            f"Expected `{name}` of shape [batch]={[x0.shape[0]]}. "
            f"Received: {name}.shape={shape.as_list()}"
        )
    if shape.rank == 1 and shape[0] is not None and x0.shape[0] is not None:
        if shape[0] != x0.shape[0]:
            raise ValueError(
                f"Expected `{name}` of shape [batch]={[x0.shape[0]]}. "
                f"Received: {name}.shape={shape.as_list()}"
            )


def _int_vector(value, x0, name, high):
    """Converts timesteps / labels to an int32 [batch] tensor and checks values in [0, high)."""
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_integer:
        raise ValueError(
            f"Expected `{name}` to be an integer tensor. Received: {name}.dtype={value.dtype.name}"
        )
    _check_batch_vector(value, x0, name)
    values = tf.get_static_value(value)  # None for a traced tensor, not checkable here.
    if values is not None:
        values = np.asarray(values)
        if values.size and (values.min() < 0 or values.max() >= high):
            raise ValueError(
                f"Expected `{name}` in [0, {high - 1}]. "
                f"Received: min={values.min()}, max={values.max()}"
            )
    return tf.cast(value, tf.int32)


def _float_vector(value, x0, name):
    value = tf.convert_to_tensor(value)
    if not (value.dtype.is_floating or value.dtype.is_integer):
        raise ValueError(
            f"Expected `{name}` to be a float tensor. Received: {name}.dtype={value.dtype.name}"
        )
    _check_batch_vector(value, x0, name)
    return tf.cast(value, x0.dtype)


def _noise(noise, x0, seed):
    """The given ``noise`` checked against ``x0``, or standard normal noise shaped like it."""
    if noise is None:
        return _random.normal(tf.shape(x0), seed, dtype=x0.dtype)
    noise = tf.convert_to_tensor(noise)
    if not (noise.dtype.is_floating or noise.dtype.is_integer):
        raise ValueError(
            f"Expected `noise` to be a float tensor. Received: noise.dtype={noise.dtype.name}"
        )
    noise = tf.cast(noise, x0.dtype)
    checks.same_shape(noise, x0, "noise", "x0")
    return noise


def _check_callable(fn, name):
    if not callable(fn):
        raise ValueError(f"Expected `{name}` to be callable. Received: {name}={fn!r}")


# ----------------------------------------------------------------- public helpers


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats.

    The closed form of the Gaussian KL divergence used in the L_{t−1} terms of eq. 16
    (``normal_kl`` of the DDPM / Improved DDPM reference code). Arguments broadcast.

    Args:
        mean1, logvar1: mean and log-variance of the first Gaussian.
        mean2, logvar2: mean and log-variance of the second Gaussian.

    Returns:
        ½ (−1 + logvar2 − logvar1 + e^{logvar1 − logvar2} + (mean1 − mean2)² e^{−logvar2}).
    """
    mean1 = tf.convert_to_tensor(mean1)
    dtype = mean1.dtype
    logvar1 = tf.cast(logvar1, dtype)
    mean2 = tf.cast(mean2, dtype)
    logvar2 = tf.cast(logvar2, dtype)
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + tf.exp(logvar1 - logvar2)
        + tf.square(mean1 - mean2) * tf.exp(-logvar2)
    )


def _approx_standard_normal_cdf(x):
    """The tanh approximation of Φ used by the Improved DDPM (and PixelCNN++) code."""
    return 0.5 * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of data discretized to 256 bins in [−1, 1] under a Gaussian, elementwise.

    The decoder term L_0 of eq. 16 as written in the Improved DDPM code
    (``discretized_gaussian_log_likelihood``): the mass of N(means, e^{2·log_scales}) in
    the bin [x − 1/255, x + 1/255], with the first bin extended to −∞ (x < −0.999) and the
    last to +∞ (x > 0.999), using the tanh approximation of the normal CDF and clamping
    probabilities at 1e-12. Summed over all 256 bin centres the probabilities add up to 1.

    Args:
        x: data rescaled to [−1, 1] (bin centres −1, −1 + 2/255, …, 1).
        means: the Gaussian means, broadcastable against ``x``.
        log_scales: log standard deviations, broadcastable against ``x``.

    Returns:
        log-probabilities in nats, shaped like the broadcast of the arguments.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype if x.dtype.is_floating else tf.float32
    x = tf.cast(x, dtype)
    means = tf.cast(means, dtype)
    log_scales = tf.cast(log_scales, dtype)
    centered_x = x - means
    inv_stdv = tf.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    floor = tf.constant(1e-12, dtype)
    log_cdf_plus = tf.math.log(tf.maximum(cdf_plus, floor))
    log_one_minus_cdf_min = tf.math.log(tf.maximum(1.0 - cdf_min, floor))
    log_cdf_delta = tf.math.log(tf.maximum(cdf_plus - cdf_min, floor))
    x = tf.broadcast_to(x, tf.shape(log_cdf_delta))
    return tf.where(
        x < -0.999,
        log_cdf_plus,
        tf.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta),
    )


# ------------------------------------------------------------------------ DDPM losses


def _timesteps_and_noise(x0, schedule, t, noise, seed):
    t_seed, noise_seed = _seeds(seed, 2)
    if t is None:
        t = _uniform_ints(_batch_size(x0), schedule.T, t_seed)
    else:
        t = _int_vector(t, x0, "t", schedule.T)
    return t, _noise(noise, x0, noise_seed)


def simple(eps_fn, x0, schedule, *, t=None, noise=None, seed=None):
    """Ho et al.'s L_simple (eq. 24): E_{t, x0, ε} ‖ε − ε_θ(x_t, t)‖².

    x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε (eq. 6); the squared error is averaged over the data
    dimensions (``mean_flat`` of the reference code), then over the batch.

    Args:
        eps_fn: ``eps_fn(x_t, t) -> ε̂`` shaped like ``x_t``, with ``t`` an int32 tensor
            of shape [batch].
        x0: clean data, a float tensor [batch, ...].
        schedule: a ``kdiff.schedules.Schedule``.
        t: optional int timesteps of shape [batch] in [0, T); uniform when None.
        noise: optional standard normal noise shaped like ``x0``; drawn when None.
        seed: None (stateful random ops), an int, or a shape-[2] int tensor (stateless).

    Returns:
        The scalar loss, in ``x0``'s dtype.
    """
    _check_callable(eps_fn, "eps_fn")
    x0 = checks.float_tensor(x0, "x0")
    Schedule.check(schedule)
    t, noise = _timesteps_and_noise(x0, schedule, t, noise, seed)
    x_t = schedule.q_sample(x0, t, noise)
    eps = checks.model_output(eps_fn(x_t, t), x0, "eps_fn")
    return tf.reduce_mean(_ops.mean_flat(tf.square(noise - eps)))


def hybrid(model_fn, x0, schedule, *, lambda_vlb=0.001, t=None, noise=None, seed=None):
    """Improved DDPM's L_hybrid (eq. 25): L_simple + λ L_vlb with a learned variance.

    The model predicts ε and an interpolation value v; with frac = (v + 1)/2 the reverse
    variance is log Σ_θ = frac · log β_t + (1 − frac) · log β̃_t (eq. 20, β̃ clipped at
    t = 0). The VLB term of the sampled t is KL(q(x_{t−1} | x_t, x0) ‖ N(μ_θ, Σ_θ)) for
    t > 0 and the discretized Gaussian negative log-likelihood of x0 for t = 0, each
    averaged over the data dimensions and in bits. μ_θ uses stop_gradient(ε̂), so the VLB
    term trains only v. As in the reference code's "rescaled MSE", L_vlb = T · L_t, so the
    per-example loss is ``mse + lambda_vlb * T * L_t``; lambda_vlb = 0 gives ``simple``.

    Args:
        model_fn: ``model_fn(x_t, t)`` returning ``[eps, v]`` (each shaped like ``x_t``)
            or one tensor with twice ``x_t``'s channels, ε first (split on the last axis);
            ``t`` is int32 [batch].
        x0: clean data in [−1, 1], a float tensor [batch, ...].
        schedule: a ``kdiff.schedules.Schedule``.
        lambda_vlb: λ ≥ 0, the weight of L_vlb (0.001 in Improved DDPM).
        t: optional int timesteps [batch] in [0, T); uniform when None.
        noise: optional standard normal noise shaped like ``x0``.
        seed: None, an int, or a shape-[2] int tensor (see ``simple``).

    Returns:
        The scalar loss, in ``x0``'s dtype.
    """
    _check_callable(model_fn, "model_fn")
    x0 = checks.float_tensor(x0, "x0")
    Schedule.check(schedule)
    lambda_vlb = checks.non_negative(lambda_vlb, "lambda_vlb")
    t, noise = _timesteps_and_noise(x0, schedule, t, noise, seed)
    x_t = schedule.q_sample(x0, t, noise)
    eps, v = checks.split_eps_v(model_fn(x_t, t), x0, "model_fn")
    mse = _ops.mean_flat(tf.square(noise - eps))

    # μ_θ from the frozen ε̂ (eqs. 9 and 29); the VLB term only trains the variance.
    x0_pred = schedule.predict_x0(x_t, t, tf.stop_gradient(eps))
    model_mean, _, _ = schedule.q_posterior(x0_pred, x_t, t)
    min_log = _ops.gather_per_example(schedule.posterior_log_variance_clipped, t, x0)
    max_log = _ops.gather_per_example(np.log(schedule.betas), t, x0)
    frac = (v + 1.0) / 2.0
    model_log_variance = frac * max_log + (1.0 - frac) * min_log

    true_mean, _, true_log_variance = schedule.q_posterior(x0, x_t, t)
    kl = _ops.mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance))
    decoder_nll = -_ops.mean_flat(
        discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance)
    )
    vlb = tf.where(tf.equal(t, 0), decoder_nll, kl) / _LOG2
    return tf.reduce_mean(mse + (lambda_vlb * schedule.T) * vlb)


# ----------------------------------------------------------------------- NCSN losses


def dsm(score_fn, x0, sigmas, *, labels=None, noise=None, seed=None):
    """NCSN's denoising score matching over a σ ladder (eqs. 32–33, λ(σ) = σ²).

    x̃ = x0 + σ z; the per-example loss λ(σ) · ½ ‖s_θ(x̃, σ) + (x̃ − x0)/σ²‖² is computed
    as ½ Σ_dims (σ s_θ + z)² (``anneal_dsm_score_estimation`` of the NCSN code, summed
    over the data dimensions), then averaged over the batch — an unbiased estimate of
    eq. 33 when the labels are uniform.

    Args:
        score_fn: ``score_fn(x̃, sigma) -> s`` shaped like ``x̃``, with ``sigma`` a float
            tensor of shape [batch] (the noise level of each example).
        x0: clean data, a float tensor [batch, ...].
        sigmas: the noise levels σ_1 > … > σ_L, a 1-D descending sequence.
        labels: optional int indices into ``sigmas``, shape [batch]; uniform when None.
        noise: optional standard normal z shaped like ``x0``.
        seed: None, an int, or a shape-[2] int tensor (see ``simple``).

    Returns:
        The scalar loss, in ``x0``'s dtype.
    """
    _check_callable(score_fn, "score_fn")
    x0 = checks.float_tensor(x0, "x0")
    sigmas = checks.descending_sigmas(sigmas)
    label_seed, noise_seed = _seeds(seed, 2)
    if labels is None:
        labels = _uniform_ints(_batch_size(x0), sigmas.size, label_seed)
    else:
        labels = _int_vector(labels, x0, "labels", sigmas.size)
    z = _noise(noise, x0, noise_seed)
    sigma = tf.gather(tf.constant(sigmas, dtype=x0.dtype), labels)
    sigma_view = _ops.batch_view(sigma, x0)
    perturbed = x0 + sigma_view * z
    score = checks.model_output(score_fn(perturbed, sigma), x0, "score_fn")
    return tf.reduce_mean(0.5 * _ops.sum_flat(tf.square(sigma_view * score + z)))


def sliced_score_matching(
    score_fn, x0, *, sigmas=None, n_projections=1, labels=None, seed=None
):
    """Sliced score matching (eq. 42): E_v E_x[vᵀ ∇_x s_θ(x) v + ½‖s_θ(x)‖²].

    The variance-reduced form (Song et al. 2019, SSM-VR): v ~ N(0, I); ½‖s‖² is
    computed exactly and vᵀ(∇s)v as vᵀ ∇_x(vᵀ s) with an inner ``tf.GradientTape``,
    which an outer tape differentiates again, so gradients reach the model's variables. Without ``sigmas`` the score is fitted to the clean data
    (``score_fn(x, zeros)``); with ``sigmas`` each example is perturbed by a random level
    σ and its loss weighted by σ², as NCSN's ``anneal_sliced_score_estimation_vr``.
    Per-example terms are summed over the data dimensions and averaged over the batch and
    the projections.

    Args:
        score_fn: ``score_fn(x, sigma) -> s`` shaped like ``x``, ``sigma`` float [batch].
        x0: data, a float tensor [batch, ...].
        sigmas: optional descending noise levels; None fits the unperturbed data.
        n_projections: number of random projections v per example (≥ 1).
        labels: optional int indices into ``sigmas``, shape [batch]; needs ``sigmas``.
        seed: None, an int, or a shape-[2] int tensor (see ``simple``).

    Returns:
        The scalar loss, in ``x0``'s dtype.
    """
    _check_callable(score_fn, "score_fn")
    x0 = checks.float_tensor(x0, "x0")
    n_projections = checks.positive_int(n_projections, "n_projections")
    label_seed, noise_seed, projection_seed = _seeds(seed, 3)
    batch = _batch_size(x0)
    if sigmas is None:
        if labels is not None:
            raise ValueError(
                "Expected `labels` only together with `sigmas`. "
                f"Received: sigmas=None, labels={labels!r}"
            )
        x = x0
        sigma = tf.zeros([batch], dtype=x0.dtype)
        weight = tf.ones([batch], dtype=x0.dtype)
    else:
        sigmas = checks.descending_sigmas(sigmas)
        if labels is None:
            labels = _uniform_ints(batch, sigmas.size, label_seed)
        else:
            labels = _int_vector(labels, x0, "labels", sigmas.size)
        sigma = tf.gather(tf.constant(sigmas, dtype=x0.dtype), labels)
        x = x0 + _ops.batch_view(sigma, x0) * _random.normal(tf.shape(x0), noise_seed, x0.dtype)
        weight = tf.square(sigma)

    if n_projections > 1:
        x = tf.concat([x] * n_projections, axis=0)
        sigma = tf.concat([sigma] * n_projections, axis=0)
    v = _random.normal(tf.shape(x), projection_seed, dtype=x0.dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = checks.model_output(score_fn(x, sigma), x, "score_fn")
        projected = tf.reduce_sum(score * v)
    grad_v = tape.gradient(projected, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    per_copy = 0.5 * _ops.sum_flat(tf.square(score)) + _ops.sum_flat(v * grad_v)
    per_example = tf.reduce_mean(tf.reshape(per_copy, [n_projections, batch]), axis=0)
    return tf.reduce_mean(per_example * weight)


# ------------------------------------------------------------------ score-SDE loss


def sde_dsm(score_fn, x0, sde, *, eps=1e-5, likelihood_weighting=False, t=None, noise=None,
            seed=None):
    """Denoising score matching through an SDE's perturbation kernel (eq. 36).

    t ~ U(eps, T); x_t = mean + std · z with (mean, std) = ``sde.marginal_prob(x0, t)``;
    the target is ∇ log p_0t(x_t | x0) = −z/std. With the default weighting λ(t) = std²
    the per-example loss is ½ Σ_dims (s·std + z)²; with ``likelihood_weighting``,
    λ(t) = g(t)² gives ½ Σ_dims (s + z/std)² · g(t)² (Song et al. 2021, "Maximum
    likelihood training"). Summed over the data dimensions, averaged over the batch,
    as ``get_sde_loss_fn`` of the score_sde code.

    Args:
        score_fn: ``score_fn(x_t, t) -> s`` shaped like ``x_t``, ``t`` a float [batch].
        x0: clean data, a float tensor [batch, ...].
        sde: a ``kdiff.sde.SDE`` (VPSDE, SubVPSDE or VESDE).
        eps: smallest time drawn, 0 < eps < sde.T (avoids std → 0).
        likelihood_weighting: use λ(t) = g(t)² instead of std².
        t: optional float times of shape [batch]; U(eps, T) when None.
        noise: optional standard normal z shaped like ``x0``.
        seed: None, an int, or a shape-[2] int tensor (see ``simple``).

    Returns:
        The scalar loss, in ``x0``'s dtype.
    """
    _check_callable(score_fn, "score_fn")
    x0 = checks.float_tensor(x0, "x0")
    SDE.check(sde)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < sde.T:
        raise ValueError(f"Expected `eps` in (0, {sde.T}). Received: eps={eps!r}")
    t_seed, noise_seed = _seeds(seed, 2)
    if t is None:
        t = _uniform_floats(_batch_size(x0), float(eps), float(sde.T), t_seed, x0.dtype)
    else:
        t = _float_vector(t, x0, "t")
    z = _noise(noise, x0, noise_seed)
    mean, std = sde.marginal_prob(x0, t)
    std_view = _ops.batch_view(std, x0)
    perturbed = mean + std_view * z
    score = checks.model_output(score_fn(perturbed, t), x0, "score_fn")
    if not likelihood_weighting:
        losses = 0.5 * _ops.sum_flat(tf.square(score * std_view + z))
    else:
        _, diffusion = sde.sde(tf.zeros_like(x0), t)
        losses = 0.5 * _ops.sum_flat(tf.square(score + z / std_view)) * tf.square(
            tf.cast(diffusion, x0.dtype)
        )
    return tf.reduce_mean(losses)
