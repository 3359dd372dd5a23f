"""Closed-form tests of kdiff.losses.

Gaussian data x0 ~ N(μ, s²I) has an exact noise prediction and an exact score at every
noise level, so each loss has a known value at its optimum (and at some wrong models).
"""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from kdiff import losses, schedules
from kdiff import sde as sde_lib

MU, S = 0.3, 0.5
BATCH, DIM = 2000, 10  # 20k scalar samples per loss


def gaussian_data(batch=BATCH, dim=DIM, s=S, mu=MU, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(mu + s * rng.standard_normal((batch, dim)), tf.float32)


def exact_eps_fn(schedule, mu=MU, s=S):
    """E[ε | x_t] for x0 ~ N(μ, s²): √(1−ᾱ)(x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ)."""
    abar_table = tf.constant(schedule.alphas_cumprod, tf.float32)

    def eps_fn(x, t):
        abar = tf.reshape(tf.gather(abar_table, t), [-1, 1])
        variance = abar * s**2 + 1.0 - abar
        return tf.sqrt(1.0 - abar) * (x - tf.sqrt(abar) * mu) / variance

    return eps_fn


# ----------------------------------------------------------------------------- simple


@pytest.mark.parametrize("step", [50, 300, 800])
def test_simple_at_the_optimum_equals_the_residual_variance(step):
    schedule = schedules.linear()
    x0 = gaussian_data()
    t = tf.fill([BATCH], step)
    loss = losses.simple(exact_eps_fn(schedule), x0, schedule, t=t, seed=1)
    abar = schedule.alphas_cumprod[step]
    expected = abar * S**2 / (abar * S**2 + 1.0 - abar)
    np.testing.assert_allclose(float(loss), expected, rtol=0.05)


def test_simple_is_zero_for_constant_data_and_one_for_a_zero_model():
    schedule = schedules.linear()
    x0 = tf.fill([BATCH, DIM], MU)
    t = tf.fill([BATCH], 300)
    exact = losses.simple(exact_eps_fn(schedule, s=0.0), x0, schedule, t=t, seed=2)
    assert abs(float(exact)) < 1e-6
    zeros = losses.simple(lambda x, t: tf.zeros_like(x), gaussian_data(), schedule, seed=2)
    np.testing.assert_allclose(float(zeros), 1.0, rtol=0.03)


def test_simple_draws_uniform_int32_timesteps():
    schedule = schedules.linear(T=100)
    seen = []

    def eps_fn(x, t):
        seen.append(t)
        return tf.zeros_like(x)

    losses.simple(eps_fn, gaussian_data(), schedule, seed=3)
    t = seen[0]
    assert t.dtype == tf.int32 and t.shape == [BATCH]
    t = t.numpy()
    assert t.min() == 0 and t.max() == 99
    np.testing.assert_allclose(t.mean(), 49.5, atol=2.5)


def test_simple_uses_the_given_noise():
    schedule = schedules.linear()
    x0 = gaussian_data(batch=4, dim=3)
    noise = tf.random.stateless_normal([4, 3], seed=[1, 2])
    # A model predicting 0 pays exactly mean(noise²).
    loss = losses.simple(lambda x, t: tf.zeros_like(x), x0, schedule, noise=noise, seed=0)
    np.testing.assert_allclose(float(loss), float(tf.reduce_mean(noise**2)), rtol=1e-6)


# ----------------------------------------------------------------------------- hybrid


def test_normal_kl_closed_form():
    assert float(tf.reduce_max(tf.abs(losses.normal_kl(0.7, -1.2, 0.7, -1.2)))) == 0.0
    x = np.linspace(-30.0, 30.0, 600001)
    for m1, lv1, m2, lv2 in [(0.0, 0.0, 1.0, 0.5), (-0.4, -2.0, 0.3, -1.0), (2.0, 1.0, 0.0, 0.0)]:
        p = scipy.stats.norm.pdf(x, m1, math.exp(lv1 / 2))
        q = scipy.stats.norm.pdf(x, m2, math.exp(lv2 / 2))
        mask = p > 0
        numeric = np.sum(p[mask] * np.log(p[mask] / q[mask])) * (x[1] - x[0])
        got = losses.normal_kl(
            tf.constant(m1, tf.float64), tf.constant(lv1, tf.float64), m2, lv2
        )
        np.testing.assert_allclose(float(got), numeric, rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_discretized_likelihood_sums_to_one_over_the_256_bins(dtype):
    centers = tf.constant(np.linspace(-1.0, 1.0, 256), dtype)
    for mean, scale in [(0.0, 0.3), (0.5, 0.01), (-0.93, 0.05), (1.2, 2.0), (-1.0, 1e-3)]:
        log_p = losses.discretized_gaussian_log_likelihood(
            centers, tf.fill([256], tf.constant(mean, dtype)), math.log(scale)
        )
        total = float(tf.reduce_sum(tf.exp(log_p)))
        np.testing.assert_allclose(total, 1.0, atol=1e-5 if dtype == tf.float32 else 1e-9)


def test_discretized_likelihood_matches_the_gaussian_bin_mass():
    centers = np.linspace(-1.0, 1.0, 256)
    mean, scale = 0.1, 0.2
    log_p = losses.discretized_gaussian_log_likelihood(
        tf.constant(centers),
        tf.constant(mean, tf.float64),
        tf.constant(math.log(scale), tf.float64),
    ).numpy()
    h = 1.0 / 255.0
    upper = np.where(centers > 0.999, np.inf, centers + h)
    lower = np.where(centers < -0.999, -np.inf, centers - h)
    mass = scipy.stats.norm.cdf(upper, mean, scale) - scipy.stats.norm.cdf(lower, mean, scale)
    # The tanh approximation of Φ (as in the reference code) is within ~2e-4 of Φ.
    np.testing.assert_allclose(np.exp(log_p), mass, atol=5e-5)
    np.testing.assert_allclose(np.exp(log_p[mass > 1e-3]), mass[mass > 1e-3], rtol=0.02)


def _true_noise_model(noise, v_value):
    def model_fn(x, t):
        return [noise, tf.fill(tf.shape(x), v_value)]

    return model_fn


@pytest.mark.parametrize("step", [1, 3, 10, 500])
def test_hybrid_vlb_term_in_closed_form(step):
    schedule = schedules.linear()
    x0 = tf.clip_by_value(gaussian_data(batch=8, dim=6), -1.0, 1.0)
    noise = tf.random.stateless_normal(x0.shape, seed=[3, 4])
    t = tf.fill([8], step)
    # Exact ε and Σ_θ = β̃_t (v = −1): μ_θ = μ̃_t, so the KL and the whole loss vanish.
    loss = losses.hybrid(_true_noise_model(noise, -1.0), x0, schedule, t=t, noise=noise)
    assert abs(float(loss)) < 1e-5
    # Σ_θ = β_t (v = +1): KL = ½(log β − log β̃ + β̃/β − 1) per dimension, in bits, × λT.
    loss = losses.hybrid(_true_noise_model(noise, 1.0), x0, schedule, t=t, noise=noise)
    beta, beta_tilde = schedule.betas[step], schedule.posterior_variance[step]
    kl = 0.5 * (math.log(beta) - math.log(beta_tilde) + beta_tilde / beta - 1.0) / math.log(2)
    np.testing.assert_allclose(float(loss), 0.001 * schedule.T * kl, rtol=1e-3, atol=2e-8)


def test_hybrid_decoder_term_at_t0():
    schedule = schedules.linear()
    rng = np.random.default_rng(5)
    bins = rng.integers(0, 256, size=(16, 5))
    bins[0, :2] = [0, 255]  # the edge bins
    x0 = tf.constant(bins / 127.5 - 1.0, tf.float32)
    noise = tf.random.stateless_normal(x0.shape, seed=[5, 6])
    t = tf.zeros([16], tf.int32)
    loss = losses.hybrid(
        _true_noise_model(noise, 1.0), x0, schedule, lambda_vlb=1.0, t=t, noise=noise
    )
    # μ_θ = x0 exactly and σ_θ = √β_0 = 0.01: the NLL of each bin under N(x0, σ²).
    sigma, h = math.sqrt(schedule.betas[0]), 1.0 / 255.0
    interior = -np.log(scipy.stats.norm.cdf(h / sigma) - scipy.stats.norm.cdf(-h / sigma))
    edge = -np.log(scipy.stats.norm.cdf(h / sigma))
    nll = np.where((bins == 0) | (bins == 255), edge, interior) / math.log(2)
    np.testing.assert_allclose(float(loss), schedule.T * nll.mean(), rtol=2e-3)


def test_hybrid_gradient_on_eps_is_the_simple_gradient():
    schedule = schedules.cosine(T=200)
    x0 = tf.clip_by_value(gaussian_data(batch=32, dim=4), -1.0, 1.0)
    eps_var = tf.Variable(tf.random.stateless_normal([32, 4], seed=[7, 7]))
    v_var = tf.Variable(tf.random.stateless_uniform([32, 4], seed=[8, 8], minval=-1, maxval=1))
    t = tf.constant(np.arange(32) * 6, tf.int32)  # includes t = 0
    noise = tf.random.stateless_normal([32, 4], seed=[9, 9])

    with tf.GradientTape(persistent=True) as tape:
        hybrid = losses.hybrid(
            lambda x, t: [eps_var * 1.0, v_var * 1.0], x0, schedule, t=t, noise=noise
        )
        simple = losses.simple(lambda x, t: eps_var * 1.0, x0, schedule, t=t, noise=noise)
    g_hybrid = tape.gradient(hybrid, eps_var)
    g_simple = tape.gradient(simple, eps_var)
    np.testing.assert_allclose(g_hybrid.numpy(), g_simple.numpy(), rtol=1e-6, atol=1e-9)
    g_v = tape.gradient(hybrid, v_var)
    assert np.all(np.isfinite(g_v.numpy())) and float(tf.reduce_max(tf.abs(g_v))) > 0
    assert float(hybrid) > float(simple)


def test_hybrid_without_vlb_is_simple_and_accepts_a_concatenated_output():
    schedule = schedules.linear(T=100)
    x0 = tf.clip_by_value(gaussian_data(batch=64, dim=3), -1.0, 1.0)
    eps_fn = exact_eps_fn(schedule)
    simple = losses.simple(eps_fn, x0, schedule, seed=11)
    as_list = losses.hybrid(
        lambda x, t: [eps_fn(x, t), tf.zeros_like(x)], x0, schedule, lambda_vlb=0.0, seed=11
    )
    np.testing.assert_allclose(float(as_list), float(simple), rtol=1e-6)
    v = lambda x: tf.tanh(x)  # noqa: E731
    list_loss = losses.hybrid(lambda x, t: (eps_fn(x, t), v(x)), x0, schedule, seed=12)
    concat_loss = losses.hybrid(
        lambda x, t: tf.concat([eps_fn(x, t), v(x)], axis=-1), x0, schedule, seed=12
    )
    np.testing.assert_allclose(float(list_loss), float(concat_loss), rtol=1e-6)
    # The VLB term is a KL or a negative log-probability, so it only adds.
    simple_12 = losses.simple(eps_fn, x0, schedule, seed=12)
    assert np.isfinite(float(list_loss)) and float(list_loss) > float(simple_12)


# ------------------------------------------------------------------------------- dsm

SIGMAS = schedules.geometric_sigmas(1.0, 0.01, 10)


def perturbed_score(mu=MU, s=S):
    def score_fn(x, sigma):
        return -(x - mu) / (s**2 + tf.reshape(sigma, [-1, 1]) ** 2)

    return score_fn


@pytest.mark.parametrize("label", [0, 4, 9])
def test_dsm_at_the_optimum(label):
    x0 = gaussian_data()
    labels = tf.fill([BATCH], label)
    sigma = SIGMAS[label]
    exact = losses.dsm(perturbed_score(), x0, SIGMAS, labels=labels, seed=1)
    np.testing.assert_allclose(float(exact), 0.5 * DIM * S**2 / (S**2 + sigma**2), rtol=0.05)
    # Twice the exact score: ½σ²E‖s − s*‖² more, which brings the loss to ½D exactly.
    doubled = losses.dsm(
        lambda x, sg: 2.0 * perturbed_score()(x, sg), x0, SIGMAS, labels=labels, seed=1
    )
    np.testing.assert_allclose(float(doubled), 0.5 * DIM, rtol=0.05)
    assert float(doubled) > float(exact)


def test_dsm_with_uniform_labels_averages_the_levels():
    seen = []

    def score_fn(x, sigma):
        seen.append(sigma)
        return perturbed_score()(x, sigma)

    loss = losses.dsm(score_fn, gaussian_data(), SIGMAS, seed=4)
    sigma = seen[0].numpy()
    assert seen[0].dtype == tf.float32 and sigma.shape == (BATCH,)
    assert set(np.round(sigma, 6)) == set(np.round(SIGMAS, 6).astype(np.float32))
    expected = np.mean(0.5 * DIM * S**2 / (S**2 + SIGMAS**2))
    np.testing.assert_allclose(float(loss), expected, rtol=0.05)


# --------------------------------------------------------------- sliced score matching


def test_sliced_score_matching_at_the_optimum_and_off_it():
    x0 = gaussian_data(batch=4000, dim=8)

    def scaled(c):
        return lambda x, sigma: -c * (x - MU) / S**2

    # J(c) = E[vᵀ∇s v + ½‖s‖²] = D/s² (c²/2 − c): −D/(2s²) at c = 1, its minimum.
    values = {}
    for c in (0.5, 1.0, 2.0):
        values[c] = float(losses.sliced_score_matching(scaled(c), x0, n_projections=2, seed=3))
        expected = 8 / S**2 * (c**2 / 2 - c)
        np.testing.assert_allclose(values[c], expected, atol=0.05 * 8 / (2 * S**2))
    assert values[1.0] < values[0.5] and values[1.0] < values[2.0]


def test_sliced_score_matching_with_a_noise_level():
    sigma = 0.4
    x0 = gaussian_data(batch=4000, dim=8)
    loss = losses.sliced_score_matching(perturbed_score(), x0, sigmas=[sigma], seed=5)
    expected = sigma**2 * (-8 / (2 * (S**2 + sigma**2)))
    np.testing.assert_allclose(float(loss), expected, rtol=0.05)


def test_sliced_score_matching_gradients_reach_the_model():
    x0 = gaussian_data(batch=4000, dim=8)
    a = tf.Variable(1.0)
    # s = −a(x − μ): J(a) = −aD + ½a²Ds², dJ/da = D(a s² − 1); without the second-order
    # path through the inner tape it would be D a s² instead.
    with tf.GradientTape() as tape:
        loss = losses.sliced_score_matching(lambda x, sg: -a * (x - MU), x0, seed=6)
    grad = tape.gradient(loss, a)
    np.testing.assert_allclose(float(grad), 8 * (S**2 - 1.0), rtol=0.05)


def test_sliced_score_matching_trains_a_keras_model_in_tf_function():
    import keras

    dense = keras.layers.Dense(4)
    dense.build((None, 4))
    x0 = gaussian_data(batch=32, dim=4)

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = losses.sliced_score_matching(
                lambda y, sg: tf.tanh(dense(y)), x, sigmas=SIGMAS, n_projections=3, seed=7
            )
        return loss, tape.gradient(loss, dense.trainable_variables)

    loss, g = grads(x0)
    assert np.isfinite(float(loss))
    assert all(v is not None and np.all(np.isfinite(v.numpy())) for v in g)
    assert float(tf.reduce_max(tf.abs(g[0]))) > 0


# --------------------------------------------------------------------------- sde_dsm


@pytest.mark.parametrize(
    "sde", [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0)]
)
@pytest.mark.parametrize("time", [0.05, 0.3])
def test_sde_dsm_at_the_optimum(sde, time):
    x0 = gaussian_data()
    t = tf.fill([BATCH], time)
    mean, std = sde.marginal_prob(tf.ones([1, 1]), tf.constant([time]))
    m, std = float(mean[0, 0]), float(std[0])
    variance = m**2 * S**2 + std**2

    def score_fn(x, t):
        return -(x - m * MU) / variance

    loss = losses.sde_dsm(score_fn, x0, sde, t=t, seed=2)
    np.testing.assert_allclose(float(loss), 0.5 * DIM * m**2 * S**2 / variance, rtol=0.05)

    weighted = losses.sde_dsm(score_fn, x0, sde, t=t, likelihood_weighting=True, seed=2)
    g = float(sde.sde(tf.zeros([1, 1]), tf.constant([time]))[1][0])
    np.testing.assert_allclose(float(weighted), float(loss) * g**2 / std**2, rtol=1e-4)


def test_sde_dsm_draws_times_in_eps_to_one():
    seen = []

    def score_fn(x, t):
        seen.append(t)
        return tf.zeros_like(x)

    loss = losses.sde_dsm(score_fn, gaussian_data(), sde_lib.VPSDE(), eps=0.1, seed=3)
    t = seen[0].numpy()
    assert t.shape == (BATCH,) and t.min() >= 0.1 and t.max() <= 1.0
    np.testing.assert_allclose(t.mean(), 0.55, atol=0.03)
    # A zero score pays ½‖z‖² per example: ½D on average.
    np.testing.assert_allclose(float(loss), 0.5 * DIM, rtol=0.05)


# ------------------------------------------------------------- seeds and tf.function

SCHEDULE = schedules.linear(T=50)
SMALL = gaussian_data(batch=8, dim=4)


def _all_losses(x, seed):
    eps_fn = exact_eps_fn(SCHEDULE)
    return [
        losses.simple(eps_fn, x, SCHEDULE, seed=seed),
        losses.hybrid(lambda y, t: [eps_fn(y, t), tf.tanh(y)], x, SCHEDULE, seed=seed),
        losses.dsm(perturbed_score(), x, SIGMAS, seed=seed),
        losses.sliced_score_matching(perturbed_score(), x, sigmas=SIGMAS, seed=seed),
        losses.sde_dsm(lambda y, t: -y, x, sde_lib.VESDE(), seed=seed),
    ]


def test_same_seed_same_loss_and_different_seed_different_loss():
    first = [float(v) for v in _all_losses(SMALL, 21)]
    again = [float(v) for v in _all_losses(SMALL, 21)]
    other = [float(v) for v in _all_losses(SMALL, 22)]
    pair = [float(v) for v in _all_losses(SMALL, tf.constant([21, 0], tf.int32))]
    assert first == again == pair
    assert all(a != b for a, b in zip(first, other))
    unseeded = [_all_losses(SMALL, None) for _ in range(2)]
    assert all(np.isfinite(float(v)) for run in unseeded for v in run)
    assert any(float(a) != float(b) for a, b in zip(*unseeded))


def test_losses_inside_tf_function_match_eager_with_an_unknown_batch():
    compiled = tf.function(
        lambda x: _all_losses(x, 5), input_signature=[tf.TensorSpec([None, 4], tf.float32)]
    )
    got = compiled(SMALL)
    eager = _all_losses(SMALL, 5)
    for a, b in zip(got, eager):
        assert a.shape == [] and a.dtype == tf.float32
        np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


# ----------------------------------------------------------------------- bad inputs


def _zeros(x, t):
    return tf.zeros_like(x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: losses.simple(_zeros, tf.zeros([4, 3], tf.int32), SCHEDULE), "x0"),
        (lambda: losses.simple(_zeros, tf.zeros([4]), SCHEDULE), "x0.*rank|rank"),
        (lambda: losses.simple(_zeros, SMALL, "linear"), "schedule=.linear"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, t=tf.zeros([3], tf.int32)), "`t`"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, t=tf.zeros([8, 1], tf.int32)), "`t`"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, t=tf.zeros([8])), "`t`.*integer"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, t=tf.fill([8], 50)), "`t` in"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, noise=tf.zeros([8, 5])), "noise"),
        (lambda: losses.hybrid(_zeros, SMALL, SCHEDULE, lambda_vlb=-1.0), "lambda_vlb"),
        (lambda: losses.hybrid(_zeros, SMALL, SCHEDULE), "2×4"),
        (lambda: losses.dsm(_zeros, SMALL, [0.1, 1.0]), "sigmas"),
        (lambda: losses.dsm(_zeros, SMALL, SIGMAS, labels=tf.fill([8], 10)), "labels"),
        (lambda: losses.sliced_score_matching(_zeros, SMALL, n_projections=0), "n_projections"),
        (lambda: losses.sliced_score_matching(_zeros, SMALL, labels=[0] * 8), "labels"),
        (lambda: losses.sde_dsm(_zeros, SMALL, SCHEDULE), "sde=Schedule"),
        (lambda: losses.sde_dsm(_zeros, SMALL, sde_lib.VPSDE(), eps=0.0), "eps"),
        (lambda: losses.sde_dsm(_zeros, SMALL, sde_lib.VPSDE(), t=tf.zeros([2])), "`t`"),
        (lambda: losses.simple(_zeros, SMALL, SCHEDULE, seed=-1), "seed"),
    ],
)
def test_bad_inputs_raise_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "Expected" in str(info.value) and "Received" in str(info.value)
