"""Tests of kdiff.sde: the VP, sub-VP and VE SDEs of Song et al. (2021).

Every SDE here is linear, dx = −½β(t) x dt + g(t) dw (β = 0 for VE), so its perturbation
kernel is Gaussian with mean m(t) x0 and variance v(t) solving m' = −½β m and
v' = −β v + g². The marginals are checked against Euler–Maruyama simulation of the
forward SDE, against these moment ODEs, and against DDPM's discrete chain.
"""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from kdiff import sde as sde_lib

SDES = {
    "vp": lambda: sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": lambda: sde_lib.SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "ve": lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
}
T_GRID = np.array([1e-3, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


def _marginal(sde, t, x0=1.0, dtype=tf.float64):
    """(mean coefficient·x0, std) at the times ``t`` as numpy arrays."""
    t = tf.constant(np.atleast_1d(t), dtype)
    x = tf.fill([t.shape[0], 1], tf.constant(x0, dtype))
    mean, std = sde.marginal_prob(x, t)
    return mean.numpy()[:, 0], std.numpy()


def _beta(sde, t):
    """β(t) of the linear drift −½β(t)x, read off ``sde.sde`` (0 for VE)."""
    x = tf.ones([len(t), 1], tf.float64)
    drift, _ = sde.sde(x, tf.constant(t, tf.float64))
    return -2.0 * drift.numpy()[:, 0]


def _g(sde, t):
    _, g = sde.sde(tf.ones([len(t), 1], tf.float64), tf.constant(t, tf.float64))
    return g.numpy()


# ----------------------------------------------------------------------------- EM simulation


def _simulate_em(sde, x0, stops, steps_per_unit=2000, seed=0):
    """Euler–Maruyama of the forward SDE from x(0) = x0; returns x at each time in ``stops``."""
    dt = 1.0 / steps_per_unit
    batch = x0.shape[0]

    @tf.function
    def advance(x, k_start, k_end):
        def body(k, x):
            t = tf.fill([batch], tf.cast(k, tf.float32) * dt)
            drift, diffusion = sde.sde(x, t)
            z = tf.random.stateless_normal(tf.shape(x), seed=tf.stack([seed, k]))
            return k + 1, x + drift * dt + tf.reshape(diffusion, [-1, 1]) * math.sqrt(dt) * z

        _, x = tf.while_loop(lambda k, x: k < k_end, body, (k_start, x))
        return x

    x, k, out = tf.constant(x0, tf.float32), 0, []
    for stop in stops:
        k_end = int(round(stop * steps_per_unit))
        x = advance(x, tf.constant(k, tf.int32), tf.constant(k_end, tf.int32))
        k = k_end
        out.append(x.numpy()[:, 0].astype(np.float64))
    return out


@pytest.mark.parametrize("name, x0", [("vp", 10.0), ("subvp", 10.0), ("ve", 1.0)])
def test_marginal_prob_matches_euler_maruyama(name, x0):
    sde = SDES[name]()
    n, stops = 20_000, (0.5, 1.0)
    samples = _simulate_em(sde, np.full((n, 1), x0, np.float32), stops)
    mean, std = _marginal(sde, np.array(stops), x0=x0)
    for i, t in enumerate(stops):
        # mean within 5 standard errors, std within 3 % (its standard error is ≈ 0.5 %)
        error = abs(samples[i].mean() - mean[i])
        assert error < 5 * std[i] / math.sqrt(n), (t, samples[i].mean(), mean[i])
        assert samples[i].std() == pytest.approx(std[i], rel=0.03), (t, samples[i].std(), std[i])


# ----------------------------------------------------------------------------- moment ODEs


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_solves_the_moment_odes(name):
    """m' = −½β m and (std²)' = −β std² + g².

    For VE the kernel variance is σ(t)²; σ(t)² − σ_min² solves the ODE from 0, same derivative.
    """
    sde = SDES[name]()
    t, h = T_GRID[(T_GRID > 0.005) & (T_GRID < 1)], 1e-6
    m_plus, s_plus = _marginal(sde, t + h)
    m_minus, s_minus = _marginal(sde, t - h)
    m, s = _marginal(sde, t)
    beta, g = _beta(sde, t), _g(sde, t)
    dm = (m_plus - m_minus) / (2 * h)
    dv = (s_plus**2 - s_minus**2) / (2 * h)
    np.testing.assert_allclose(dm, -0.5 * beta * m, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dv, -beta * s**2 + g**2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_vp_kernels_start_at_the_data(name):
    m, s = _marginal(SDES[name](), np.array([0.0]), x0=3.0)
    assert m[0] == 3.0 and s[0] == 0.0


# ----------------------------------------------------------------------------- VP ↔ DDPM


def test_vpsde_marginal_equals_ddpm_chain():
    """√ᾱ_i of DDPM's β_i = β(i/(N−1))/N approaches the VP mean coefficient at t = (i+1)/N."""
    errors = {}
    for N in (1000, 10_000):
        sde = sde_lib.VPSDE(N=N)
        sqrt_abar = np.sqrt(np.cumprod(1.0 - sde.discrete_betas))
        t = (np.arange(N) + 1) / N
        coeff, _ = _marginal(sde, t)
        rel = np.abs(sqrt_abar / coeff - 1.0)
        errors[N] = rel.max()
        if N == 1000:
            assert np.all(rel[t <= 0.5] < 0.01)
            # the gap is the second-order term of −log(1−β) = β + β²/2 + …: remove it
            # and the log coefficients agree to 0.2 % (what is left: the Riemann sum)
            correction = 0.5 * np.cumsum(np.log1p(-sde.discrete_betas) + sde.discrete_betas)
            np.testing.assert_allclose(np.log(sqrt_abar) - correction, np.log(coeff), atol=2e-3)
    # first-order convergence to the SDE as N → ∞
    assert errors[10_000] < 0.15 * errors[1000]
    assert errors[10_000] < 0.005


def test_vpsde_discretize_is_the_exact_ddpm_transition():
    """G² = β_i with 1 − β_i = (m(t)/m(t−dt))²: the exact VP transition over one step."""
    sde = sde_lib.VPSDE(N=1000)
    dt = 1.0 / sde.N
    t = np.array([dt, 2 * dt, 0.3, 0.5, 0.999, 1.0])
    x = tf.constant(np.random.default_rng(0).standard_normal((len(t), 3)), tf.float64)
    f, G = sde.discretize(x, tf.constant(t, tf.float64))
    m_t, _ = _marginal(sde, t)
    m_prev, _ = _marginal(sde, t - dt)
    one_minus_beta = (m_t / m_prev) ** 2
    np.testing.assert_allclose(1.0 - G.numpy() ** 2, one_minus_beta, rtol=1e-12)
    np.testing.assert_allclose(
        f.numpy(), (np.sqrt(one_minus_beta)[:, None] - 1) * x.numpy(), rtol=1e-10
    )

    # chaining the N steps of t_k = k/N is DDPM's chain and lands exactly on the marginal
    grid = np.arange(1, sde.N + 1) / sde.N
    _, G = sde.discretize(tf.ones([sde.N, 1], tf.float64), tf.constant(grid, tf.float64))
    m_1, _ = _marginal(sde, np.array([1.0]))
    assert np.prod(1.0 - G.numpy() ** 2) == pytest.approx(m_1[0] ** 2, rel=1e-9)

    # to first order these are score_sde's discrete_betas β(i/(N−1))/N (|Δ| = O(dt²))
    i = np.arange(1, sde.N)
    t_i = tf.constant(i / (sde.N - 1), tf.float64)
    _, G = sde.discretize(tf.ones([len(i), 1], tf.float64), t_i)
    np.testing.assert_allclose(G.numpy() ** 2, sde.discrete_betas[i], atol=3e-4)

    # a large step stays a valid DDPM step, β in (0, 1)
    _, G = sde.discretize(tf.ones([1, 1], tf.float64), tf.constant([1.0], tf.float64), dt=0.5)
    assert 0.0 < G.numpy()[0] ** 2 < 1.0
    m_half, _ = _marginal(sde, np.array([0.5]))
    assert 1.0 - G.numpy()[0] ** 2 == pytest.approx((m_1[0] / m_half[0]) ** 2, rel=1e-10)

    # score_sde's Langevin α_i = 1 − discrete_betas[i], and the index map of t
    j = np.array([0, 1, 500, 999])
    tj = tf.constant(j / 999, tf.float32)
    np.testing.assert_allclose(
        sde.langevin_alpha(tj).numpy(), 1.0 - sde.discrete_betas[j], rtol=1e-6
    )
    np.testing.assert_array_equal(sde.timestep_index(tj).numpy(), j)


# ----------------------------------------------------------------------------- sub-VP


def test_subvp_std_below_vp_with_same_mean():
    vp, subvp = SDES["vp"](), SDES["subvp"]()
    t = np.linspace(1e-3, 1.0, 200)
    m_vp, s_vp = _marginal(vp, t, x0=2.0)
    m_sub, s_sub = _marginal(subvp, t, x0=2.0)
    np.testing.assert_allclose(m_sub, m_vp, rtol=1e-12)
    assert np.all(s_sub <= s_vp)
    assert np.all(s_sub < s_vp)  # strictly, for t > 0
    # closed form: sub-VP's std is VP's variance, 1 − e^{−∫β}
    np.testing.assert_allclose(s_sub, s_vp**2, rtol=1e-10)
    # same drift, smaller diffusion
    np.testing.assert_allclose(_beta(subvp, t), _beta(vp, t), rtol=1e-12)
    assert np.all(_g(subvp, t) < _g(vp, t))


# ----------------------------------------------------------------------------- VE


def test_vesde_marginal_and_discretization():
    sde = SDES["ve"]()
    t = T_GRID
    mean, std = _marginal(sde, t, x0=0.3)
    np.testing.assert_allclose(mean, 0.3)
    np.testing.assert_allclose(std, 0.01 * (50.0 / 0.01) ** t, rtol=1e-12)
    assert std[-1] == pytest.approx(50.0, rel=1e-12)

    dt = 1.0 / sde.N
    x = tf.ones([len(t), 2], tf.float64)
    f, G = sde.discretize(x, tf.constant(t, tf.float64))
    np.testing.assert_array_equal(f.numpy(), 0.0)
    sigma = lambda s: 0.01 * (50.0 / 0.01) ** s  # noqa: E731
    below = np.where(t - dt < 0, 0.0, sigma(np.maximum(t - dt, 0)))
    expected = sigma(t) ** 2 - below**2
    np.testing.assert_allclose(G.numpy() ** 2, expected, rtol=1e-8)
    # at t = 0 the level below is σ = 0
    _, G0 = sde.discretize(tf.ones([1, 1]), tf.constant([0.0]))
    assert G0.numpy()[0] == pytest.approx(0.01, rel=1e-6)
    # discrete_sigmas: NCSN's geometric ladder σ_min … σ_max
    np.testing.assert_allclose(sde.discrete_sigmas, np.geomspace(0.01, 50.0, 1000), rtol=1e-10)


# ----------------------------------------------------------------------------- prior


@pytest.mark.parametrize("name, scale", [("vp", 1.0), ("subvp", 1.0), ("ve", 50.0)])
def test_prior_sampling(name, scale):
    sde = SDES[name]()
    shape = (500, 8, 8, 1)
    a = sde.prior_sampling(shape, seed=3)
    b = sde.prior_sampling(shape, seed=3)
    c = sde.prior_sampling(shape, seed=4)
    assert a.shape == shape and a.dtype == tf.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    values = a.numpy().ravel().astype(np.float64)  # 32k draws
    assert values.std() == pytest.approx(scale, rel=0.02)
    assert abs(values.mean()) < 5 * scale / math.sqrt(values.size)
    unseeded = sde.prior_sampling((4, 3))
    assert unseeded.shape == (4, 3)


@pytest.mark.parametrize("name, scale", [("vp", 1.0), ("subvp", 1.0), ("ve", 50.0)])
def test_prior_logp_is_summed_normal_logpdf(name, scale):
    sde = SDES[name]()
    z = np.random.default_rng(5).standard_normal((6, 4, 3, 2)) * scale * 1.3
    expected = scipy.stats.norm.logpdf(z, scale=scale).reshape(6, -1).sum(axis=1)
    logp = sde.prior_logp(tf.constant(z, tf.float64))
    assert logp.shape == (6,)
    np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-10)
    logp32 = sde.prior_logp(tf.constant(z, tf.float32))
    np.testing.assert_allclose(logp32.numpy(), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- reverse


@pytest.mark.parametrize("name", list(SDES))
def test_reverse_drift_and_diffusion(name):
    sde = SDES[name]()
    score_fn = lambda x, t: -x  # noqa: E731
    x = tf.constant(np.random.default_rng(6).standard_normal((5, 4, 2)), tf.float64)
    t = tf.constant([0.01, 0.2, 0.5, 0.8, 1.0], tf.float64)
    f, g = sde.sde(x, t)
    g2 = (g.numpy() ** 2)[:, None, None]

    drift, diffusion = sde.reverse(score_fn).sde(x, t)
    np.testing.assert_allclose(drift.numpy(), f.numpy() + g2 * x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(diffusion.numpy(), g.numpy(), rtol=1e-12)

    drift, diffusion = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    np.testing.assert_allclose(drift.numpy(), f.numpy() + 0.5 * g2 * x.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(diffusion.numpy(), 0.0)

    # the reverse discretization: (f − G² s, G), and (f − ½G² s, 0) for the ODE
    fd, G = sde.discretize(x, t)
    G2 = (G.numpy() ** 2)[:, None, None]
    rf, rG = sde.reverse(score_fn).discretize(x, t)
    np.testing.assert_allclose(rf.numpy(), fd.numpy() + G2 * x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rG.numpy(), G.numpy(), rtol=1e-12)
    rf, rG = sde.reverse(score_fn, probability_flow=True).discretize(x, t)
    np.testing.assert_allclose(rf.numpy(), fd.numpy() + 0.5 * G2 * x.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(rG.numpy(), 0.0)


@pytest.mark.parametrize("probability_flow", [True, False], ids=["ode", "sde"])
@pytest.mark.parametrize("name", list(SDES))
def test_reverse_process_keeps_gaussian_marginals(gaussian, name, probability_flow):
    """With the exact score of Gaussian data, the reverse process transports p_t exactly.

    p_t = N(M(t), V(t)), M = m μ, V = m² s² + std². The reverse drift is linear,
    r(x) = a x + b; a backward step x(t−h) = x − r h + g √h z gives M' = a M + b and
    V' = 2 a V − g² (without noise, V' = 2 a V). Both must match the derivatives of the
    marginal itself.
    """
    sde = SDES[name]()
    reverse = sde.reverse(gaussian.sde_score_fn(sde), probability_flow=probability_flow)
    t, h = T_GRID[(T_GRID > 0.005) & (T_GRID < 1)], 1e-6
    n = len(t)

    def moments(times):
        m, std = _marginal(sde, times)
        return m * gaussian.mu, m**2 * gaussian.s**2 + std**2

    tt = tf.constant(t, tf.float64)
    r0, g = reverse.sde(tf.zeros([n, 1], tf.float64), tt)
    r1, _ = reverse.sde(tf.ones([n, 1], tf.float64), tt)
    b = r0.numpy()[:, 0]
    a = r1.numpy()[:, 0] - b
    g2 = g.numpy() ** 2

    M, V = moments(t)
    M_plus, V_plus = moments(t + h)
    M_minus, V_minus = moments(t - h)
    dM, dV = (M_plus - M_minus) / (2 * h), (V_plus - V_minus) / (2 * h)
    np.testing.assert_allclose(a * M + b, dM, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(2 * a * V - g2, dV, rtol=1e-5, atol=1e-8)
    if probability_flow:
        np.testing.assert_array_equal(g2, 0.0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sde_lib.VPSDE(beta_min=-1), "`beta_min`"),
        (lambda: sde_lib.VPSDE(beta_min=0.0), "`beta_min`"),
        (lambda: sde_lib.VPSDE(beta_max=float("nan")), "`beta_max`"),
        (lambda: sde_lib.VPSDE(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: sde_lib.SubVPSDE(beta_min=-1), "`beta_min`"),
        (lambda: sde_lib.SubVPSDE(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: sde_lib.VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
        (lambda: sde_lib.VESDE(sigma_min=2.0, sigma_max=1.0), "sigma_max"),
        (lambda: sde_lib.VESDE(sigma_min=0.0), "`sigma_min`"),
        (lambda: sde_lib.VPSDE(N=0), "`N`"),
        (lambda: sde_lib.SubVPSDE(N=0), "`N`"),
        (lambda: sde_lib.VESDE(N=0), "`N`"),
        (lambda: sde_lib.VESDE(N=10.5), "`N`"),
    ],
)
def test_bad_sde_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_prior_sampling_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        sde_lib.VPSDE().prior_sampling((2, 2), seed=-1)


@pytest.mark.parametrize(
    "sde", [sde_lib.VPSDE(beta_max=10.0), sde_lib.SubVPSDE(N=100), sde_lib.VESDE(sigma_max=5.0)], ids=repr
)
def test_config_round_trip(sde):
    import json

    rebuilt = sde_lib.from_config(json.loads(json.dumps(sde.get_config())))
    assert type(rebuilt) is type(sde) and rebuilt.get_config() == sde.get_config()
    with pytest.raises(ValueError, match="name"):
        sde_lib.from_config({"name": "OU"})
