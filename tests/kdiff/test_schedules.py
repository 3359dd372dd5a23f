"""Tests of kdiff.schedules against the survey's closed forms and reference computations.

Equations (the survey of Cerizza et al., "Diffusion Models", 2023): eq. 5 q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I);
eq. 6 x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε; eqs. 8–10 the posterior q(x_{t−1} | x_t, x_0);
eq. 18 the cosine schedule. Timesteps are 0-based: ``alphas_cumprod[t]`` is ᾱ after
t+1 noising steps.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kdiff import schedules

T = 1000
TIMESTEPS = [0, 1, 10, 250, 500, 999]


def _as_batch(t, batch):
    return tf.fill([batch], tf.constant(t, tf.int32))


# ----------------------------------------------------------------------------- linear


def test_linear_betas_are_ddpm_linspace():
    schedule = schedules.linear()
    expected = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    assert schedule.T == 1000
    assert schedule.betas.dtype == np.float64
    np.testing.assert_array_equal(schedule.betas, expected)
    np.testing.assert_array_equal(schedule.alphas, 1.0 - expected)
    np.testing.assert_allclose(schedule.alphas_cumprod, np.cumprod(1.0 - expected), rtol=1e-14)
    np.testing.assert_allclose(
        schedule.alphas_cumprod_prev, np.append(1.0, np.cumprod(1.0 - expected)[:-1]), rtol=1e-14
    )


def test_linear_custom_arguments():
    schedule = schedules.linear(T=10, beta_start=0.1, beta_end=0.5)
    assert schedule.T == 10
    np.testing.assert_array_equal(schedule.betas, np.linspace(0.1, 0.5, 10))
    # ᾱ after all steps, by hand: ∏ (1 − β_i)
    assert schedule.alphas_cumprod[-1] == pytest.approx(np.prod(1 - np.linspace(0.1, 0.5, 10)))


# ----------------------------------------------------------------------------- q_sample


@pytest.mark.parametrize("t", [0, 50, 300, 700, 999])
def test_q_sample_empirical_moments_match_eq5(t):
    schedule = schedules.linear()
    n, c = 50_000, 1.5  # constant x0 = c
    rng = np.random.default_rng(t)
    x0 = np.full((n, 1), c, np.float32)
    noise = rng.standard_normal((n, 1)).astype(np.float32)
    xt = schedule.q_sample(x0, _as_batch(t, n), noise).numpy()[:, 0].astype(np.float64)

    abar = schedule.alphas_cumprod[t]
    mean, var = math.sqrt(abar) * c, 1.0 - abar
    # mean: within 5 standard errors; variance: within 3 % (its standard error is √(2/n) ≈ 0.6 %)
    assert abs(xt.mean() - mean) < 5 * math.sqrt(var / n) + 1e-6
    assert xt.var() == pytest.approx(var, rel=0.03)


def test_q_sample_equals_eq6_by_hand():
    schedule = schedules.linear()
    rng = np.random.default_rng(0)
    t = np.array(TIMESTEPS, np.int32)
    x0 = rng.standard_normal((len(t), 4, 4, 3)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    expected = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * noise

    out = schedule.q_sample(x0, tf.constant(t), tf.constant(noise))
    assert out.dtype == tf.float32
    assert out.shape == x0.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)

    # float64 input stays float64 and is exact to double precision
    out64 = schedule.q_sample(x0.astype(np.float64), t, noise.astype(np.float64))
    assert out64.dtype == tf.float64
    np.testing.assert_allclose(out64.numpy(), expected, rtol=1e-12, atol=1e-13)


def test_q_mean_variance_is_eq5():
    schedule = schedules.cosine()
    t = np.array(TIMESTEPS, np.int32)
    x0 = np.random.default_rng(1).standard_normal((len(t), 3)).astype(np.float64)
    mean, var, log_var = schedule.q_mean_variance(x0, t)
    abar = schedule.alphas_cumprod[t][:, None]
    np.testing.assert_allclose(mean.numpy(), np.sqrt(abar) * x0, rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), 1.0 - abar, rtol=1e-12)
    np.testing.assert_allclose(log_var.numpy(), np.log(1.0 - abar), rtol=1e-12)


# ----------------------------------------------------------------------------- posterior


def _posterior_by_hand(betas, t):
    """Eqs. 9–10 straight from the β's, for one 0-based t."""
    alphas = 1.0 - betas
    abar = np.prod(alphas[: t + 1])
    abar_prev = np.prod(alphas[:t])  # 1 for t = 0
    coef_x0 = math.sqrt(abar_prev) * betas[t] / (1.0 - abar)
    coef_xt = math.sqrt(alphas[t]) * (1.0 - abar_prev) / (1.0 - abar)
    variance = (1.0 - abar_prev) / (1.0 - abar) * betas[t]
    return coef_x0, coef_xt, variance


@pytest.mark.parametrize("make", [schedules.linear, schedules.cosine], ids=["linear", "cosine"])
def test_q_posterior_matches_eqs_9_10(make):
    schedule = make()
    t = np.array(TIMESTEPS, np.int32)
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((len(t), 5)).astype(np.float32)
    xt = rng.standard_normal((len(t), 5)).astype(np.float32)

    mean, var, log_var = schedule.q_posterior(x0, xt, tf.constant(t))
    assert mean.shape == (len(t), 5) and var.shape == (len(t), 1) and log_var.shape == (len(t), 1)
    _, _, variance_1 = _posterior_by_hand(schedule.betas, 1)
    for row, step in enumerate(t):
        c0, ct, v = _posterior_by_hand(schedule.betas, int(step))
        np.testing.assert_allclose(
            mean.numpy()[row], c0 * x0[row] + ct * xt[row], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(var.numpy()[row, 0], v, rtol=1e-5, atol=1e-12)
        # log_variance_clipped: log β̃_t, with t = 0 (where β̃_0 = 0) using the t = 1 value
        expected_log = math.log(variance_1) if step == 0 else math.log(v)
        np.testing.assert_allclose(log_var.numpy()[row, 0], expected_log, rtol=1e-5)

    assert schedule.posterior_variance[0] == 0.0
    assert schedule.posterior_log_variance_clipped[0] == schedule.posterior_log_variance_clipped[1]


@pytest.mark.parametrize("t", [0, 1, 5, 100, 500, 999])
def test_q_posterior_is_gaussian_conditioning_of_the_joint(t):
    """μ̃ and β̃ equal E and Var of x_{t−1} | (x_t, x_0) from the joint Gaussian.

    Given x_0: x_{t−1} = √ᾱ_{t−1} x_0 + √(1−ᾱ_{t−1}) ε, x_t = √α_t x_{t−1} + √β_t z, so
    (x_{t−1}, x_t) is jointly Gaussian; condition on x_t with the standard formulas.
    """
    schedule = schedules.linear()
    betas = schedule.betas
    alpha_t = 1.0 - betas[t]
    abar_prev = np.prod(1.0 - betas[:t])
    x0 = 0.7

    # Joint of (x_{t-1}, x_t) | x_0, built from the two forward steps as a linear map of (ε, z).
    A = np.array([[math.sqrt(1 - abar_prev), 0.0],
                  [math.sqrt(alpha_t) * math.sqrt(1 - abar_prev), math.sqrt(betas[t])]])
    m = np.array([math.sqrt(abar_prev) * x0, math.sqrt(alpha_t * abar_prev) * x0])
    cov = A @ A.T
    xt_values = np.array([-1.3, 0.0, 0.4, 2.2])
    cond_mean = m[0] + cov[0, 1] / cov[1, 1] * (xt_values - m[1])
    cond_var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]

    n = len(xt_values)
    x0_batch = np.full((n, 1), x0, np.float64)
    mean, var, _ = schedule.q_posterior(x0_batch, xt_values.reshape(n, 1), _as_batch(t, n))
    np.testing.assert_allclose(mean.numpy()[:, 0], cond_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var.numpy()[:, 0], cond_var, rtol=1e-10, atol=1e-15)


def test_q_posterior_agrees_with_simulated_regression():
    """Monte Carlo: simulate x_{t−1} ~ q(·|x_0), then one forward step; regress x_{t−1} on x_t.

    For a jointly Gaussian pair the regression is the conditional mean and the residual
    variance is the conditional variance — i.e. μ̃ and β̃ of eqs. 9–10.
    """
    schedule = schedules.linear()
    t, n, x0 = 200, 100_000, 0.7
    rng = np.random.default_rng(3)
    x0_batch = np.full((n, 1), x0, np.float32)
    x_prev = schedule.q_sample(x0_batch, _as_batch(t - 1, n), rng.standard_normal((n, 1))).numpy()
    x_prev = x_prev[:, 0].astype(np.float64)
    beta = schedule.betas[t]
    xt = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * rng.standard_normal(n)

    slope, intercept = np.polyfit(xt, x_prev, 1)
    resid_var = np.var(x_prev - (slope * xt + intercept))
    # the model's posterior mean is linear in x_t: read off its slope and intercept
    mean, var, _ = schedule.q_posterior(
        np.full((2, 1), x0), np.array([[0.0], [1.0]]), _as_batch(t, 2)
    )
    model_intercept = mean.numpy()[0, 0]
    model_slope = mean.numpy()[1, 0] - model_intercept
    assert slope == pytest.approx(model_slope, rel=0.01)
    assert intercept == pytest.approx(model_intercept, abs=0.01)
    assert resid_var == pytest.approx(var.numpy()[0, 0], rel=0.03)


# ----------------------------------------------------------------------------- cosine


def _f(step, T, s=0.008):
    return math.cos((step / T + s) / (1 + s) * math.pi / 2) ** 2


def test_cosine_matches_eq18():
    schedule = schedules.cosine(T=T)
    expected = np.array([_f(t + 1, T) / _f(0, T) for t in range(T)])
    clipped = schedule.betas >= 0.999
    # only the last step hits the clip for T = 1000 (1 − f(T)/f(T−1) = 1, f(T) = 0)
    assert clipped.tolist() == [False] * (T - 1) + [True]
    np.testing.assert_allclose(schedule.alphas_cumprod[~clipped], expected[~clipped], rtol=1e-12)
    assert np.all(schedule.betas <= 0.999)
    assert schedule.betas[-1] == 0.999
    assert np.all(np.diff(schedule.alphas_cumprod) < 0)
    assert schedule.alphas_cumprod[0] < 1.0
    # ᾱ_{T−1} = ᾱ_{T−2} (1 − 0.999): the clip leaves a small but non-zero final ᾱ
    assert schedule.alphas_cumprod[-1] == pytest.approx(expected[-2] * 1e-3, rel=1e-9)


def test_cosine_max_beta_clips_every_large_beta():
    schedule = schedules.cosine(T=100, max_beta=0.2)
    raw = np.array([1 - _f(t + 1, 100) / _f(t, 100) for t in range(100)])
    np.testing.assert_allclose(schedule.betas, np.minimum(raw, 0.2), rtol=1e-12)
    assert np.any(raw > 0.2)  # the clip did something
    assert schedule.betas.max() == 0.2


def test_cosine_offset_s_raises_first_beta():
    # s keeps β_0 from being too small (Improved DDPM §3.2): β_0 grows with s
    b0 = [schedules.cosine(s=s).betas[0] for s in (0.0, 0.008, 0.05)]
    assert b0[0] < b0[1] < b0[2]
    assert b0[0] == pytest.approx(1 - _f(1, 1000, s=0.0) / _f(0, 1000, s=0.0), rel=1e-12)


# ----------------------------------------------------------------------------- respacing


def test_spaced_timesteps_50_of_1000():
    steps = schedules.spaced_timesteps(1000, 50)
    assert len(steps) == 50
    assert np.issubdtype(steps.dtype, np.integer)
    assert steps[0] == 0 and steps[-1] == 999
    gaps = np.diff(steps)
    assert np.all(gaps > 0)
    stride = 999 / 49
    assert set(gaps.tolist()) <= {math.floor(stride), math.ceil(stride)}  # evenly spaced


def _improved_ddpm_space_timesteps(num_timesteps, count):
    """Improved DDPM's ``space_timesteps`` for a single section (reference code)."""
    frac_stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur))
        cur += frac_stride
    return taken


@pytest.mark.parametrize("T_, steps", [(1000, 50), (1000, 100), (1000, 250), (4000, 25), (10, 10)])
def test_spaced_timesteps_matches_improved_ddpm(T_, steps):
    np.testing.assert_array_equal(
        schedules.spaced_timesteps(T_, steps), _improved_ddpm_space_timesteps(T_, steps)
    )


def test_spaced_timesteps_edge_counts():
    np.testing.assert_array_equal(schedules.spaced_timesteps(1000, 1000), np.arange(1000))
    np.testing.assert_array_equal(schedules.spaced_timesteps(1000, 1), [999])
    with pytest.raises(ValueError, match="steps"):
        schedules.spaced_timesteps(1000, 1001)
    with pytest.raises(ValueError, match="steps"):
        schedules.spaced_timesteps(1000, 0)


@pytest.mark.parametrize("make", [schedules.linear, schedules.cosine], ids=["linear", "cosine"])
def test_respace_keeps_alphas_cumprod(make):
    schedule = make()
    steps = schedules.spaced_timesteps(1000, 50)
    spaced = schedule.respace(steps)
    assert spaced.T == 50
    np.testing.assert_allclose(spaced.alphas_cumprod, schedule.alphas_cumprod[steps], rtol=1e-10)
    # full respacing is the identity
    np.testing.assert_allclose(schedule.respace(np.arange(1000)).betas, schedule.betas, rtol=1e-9)


def test_respace_rejects_bad_timesteps():
    schedule = schedules.linear()
    with pytest.raises(ValueError, match="timesteps"):
        schedule.respace([0, 5, 5, 10])
    with pytest.raises(ValueError, match="timesteps"):
        schedule.respace([0, 500, 1000])


# ----------------------------------------------------------------------------- predict_x0


@pytest.mark.parametrize("make", [schedules.linear, schedules.cosine], ids=["linear", "cosine"])
def test_predict_x0_inverts_q_sample(make):
    schedule = make()
    rng = np.random.default_rng(4)
    t = np.array(TIMESTEPS, np.int32)
    x0 = rng.standard_normal((len(t), 8, 8, 1))
    eps = rng.standard_normal(x0.shape)
    # float64: exact
    xt = schedule.q_sample(x0, t, eps)
    np.testing.assert_allclose(schedule.predict_x0(xt, t, eps).numpy(), x0, rtol=1e-9, atol=1e-9)
    # float32: exact up to float32 round-off amplified by 1/√ᾱ_t (≤ ~1/√ᾱ_{T−1})
    xt32 = schedule.q_sample(x0.astype(np.float32), t, eps.astype(np.float32))
    x0_hat = schedule.predict_x0(xt32, t, tf.constant(eps, tf.float32)).numpy()
    tol = 1e-6 / np.sqrt(schedule.alphas_cumprod[t]).reshape(-1, 1, 1, 1) * 10
    assert np.all(np.abs(x0_hat - x0) <= tol)


# ----------------------------------------------------------------------------- NCSN sigmas


def test_geometric_sigmas():
    sigmas = schedules.geometric_sigmas(sigma_max=50.0, sigma_min=0.01, num=232)
    assert sigmas.dtype == np.float64
    assert len(sigmas) == 232
    assert sigmas[0] == pytest.approx(50.0, rel=1e-12)
    assert sigmas[-1] == pytest.approx(0.01, rel=1e-12)
    assert np.all(np.diff(sigmas) < 0)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, (0.01 / 50.0) ** (1 / 231), rtol=1e-10)


def test_geometric_sigmas_defaults_and_single_level():
    sigmas = schedules.geometric_sigmas()
    np.testing.assert_allclose(sigmas, np.geomspace(1.0, 0.01, 10), rtol=1e-12)
    np.testing.assert_allclose(schedules.geometric_sigmas(2.0, 0.5, num=1), [2.0])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: schedules.linear(T=0), "`T`"),
        (lambda: schedules.linear(T=2.5), "`T`"),
        (lambda: schedules.linear(beta_end=2), "`beta_end`"),
        (lambda: schedules.linear(beta_start=0.0), "`beta_start`"),
        (lambda: schedules.cosine(T=0), "`T`"),
        (lambda: schedules.cosine(s=-1), "`s`"),
        (lambda: schedules.cosine(max_beta=1.5), "`max_beta`"),
        (lambda: schedules.geometric_sigmas(sigma_max=0.1, sigma_min=1.0), "sigma_min"),
        (lambda: schedules.geometric_sigmas(sigma_max=1.0, sigma_min=0.0), "sigma_min"),
        (lambda: schedules.geometric_sigmas(num=0), "`num`"),
        (lambda: schedules.Schedule([0.1, 0.0, 0.2]), "beta"),
        (lambda: schedules.Schedule([]), "`betas`"),
    ],
)
def test_bad_schedule_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_q_sample_bad_input():
    schedule = schedules.linear()
    x0 = np.zeros((2, 3), np.float32)
    noise = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"`t` in \[0, 999\]"):
        schedule.q_sample(x0, tf.constant([0, 1000]), noise)
    with pytest.raises(ValueError, match=r"`t` in \[0, 999\]"):
        schedule.q_sample(x0, tf.constant([-1, 3]), noise)
    with pytest.raises(ValueError, match="`noise`"):
        schedule.q_sample(x0, tf.constant([0, 1]), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="`x0`"):
        schedule.q_sample(np.array([["a", "b"], ["c", "d"]]), tf.constant([0, 1]), noise)
    with pytest.raises(ValueError, match="`x0`"):
        schedule.q_sample(tf.constant([[1, 2, 3], [4, 5, 6]]), tf.constant([0, 1]), noise)
    with pytest.raises(ValueError, match="`x0`"):  # no batch axis
        schedule.q_sample(np.zeros(3, np.float32), tf.constant([0]), np.zeros(3, np.float32))


def test_q_posterior_bad_input():
    schedule = schedules.linear(T=10)
    x0 = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"`t` in \[0, 9\]"):
        schedule.q_posterior(x0, x0, tf.constant([0, 10]))
    with pytest.raises(ValueError, match="`x_t`"):
        schedule.q_posterior(x0, np.zeros((2, 2), np.float32), tf.constant([0, 1]))


@pytest.mark.parametrize(
    "schedule",
    [schedules.linear(), schedules.cosine(T=50, s=0.01), schedules.Schedule([0.1, 0.2, 0.3])],
    ids=["linear", "cosine", "custom"],
)
def test_config_round_trip(schedule):
    import json

    config = json.loads(json.dumps(schedule.get_config()))
    np.testing.assert_array_equal(schedules.from_config(config).betas, schedule.betas)
    with pytest.raises(ValueError, match="name"):
        schedules.from_config({"name": "quadratic"})
