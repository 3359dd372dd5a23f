"""Samplers driven by exact models of Gaussian data recover that data; reference computations.

Data x0 ~ N(μ, s²I) has a closed-form ε-prediction and score at every noise level
(tests/conftest.py), so a correct sampler must return samples with mean μ and std s.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdiff import samplers, schedules
from kdiff import sde as sde_lib

N = 4000  # samples
DIM = 2
TOL = 0.04  # "within a few percent" of s (0.3) and μ (0.5)


def _start(seed=1, shape=(N, DIM)):
    return tf.random.stateless_normal(shape, seed=[seed, 7])


def _assert_recovers(x, gaussian, tol=TOL):
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    mean_error = abs(x.mean() - gaussian.mu) / gaussian.mu
    std_error = abs(x.std() - gaussian.s) / gaussian.s
    assert mean_error < tol and std_error < tol, (x.mean(), x.std())


@pytest.fixture(scope="session")
def linear():
    return schedules.linear()


# --------------------------------------------------------------- Gaussian recovery


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_1000_steps_recovers_gaussian(gaussian, linear, variance):
    x = samplers.ddpm(gaussian.eps_fn(linear), _start(), linear, variance=variance, seed=0)
    _assert_recovers(x, gaussian)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_500_steps_recovers_gaussian(gaussian, linear, eta):
    x = samplers.ddim(gaussian.eps_fn(linear), _start(), linear, steps=500, eta=eta, seed=0)
    _assert_recovers(x, gaussian)


def test_ddim_on_cosine_schedule_recovers_gaussian(gaussian):
    cosine = schedules.cosine()
    x = samplers.ddim(gaussian.eps_fn(cosine), _start(), cosine, steps=500, seed=0)
    _assert_recovers(x, gaussian)


def test_annealed_langevin_recovers_gaussian(gaussian):
    sigmas = schedules.geometric_sigmas(1.0, 0.01, 10)
    x0 = tf.random.stateless_uniform((N, DIM), seed=[3, 4])
    for denoise in (False, True):
        x = samplers.annealed_langevin(
            gaussian.sigma_score_fn(), x0, sigmas, 100, 2e-5, denoise=denoise, seed=0
        )
        _assert_recovers(x, gaussian)


SDES = [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()]


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_euler_maruyama_recovers_gaussian(gaussian, sde):
    x_T = sde.prior_sampling((N, DIM), seed=0)
    x = samplers.euler_maruyama(gaussian.sde_score_fn(sde), x_T, sde, 1000, seed=0)
    _assert_recovers(x, gaussian)


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("predictor", ["euler_maruyama", "reverse_diffusion"])
def test_predictor_corrector_recovers_gaussian(gaussian, sde, predictor):
    x_T = sde.prior_sampling((N, DIM), seed=0)
    x = samplers.predictor_corrector(
        gaussian.sde_score_fn(sde), x_T, sde, 500, predictor=predictor, corrector="langevin", seed=0
    )
    _assert_recovers(x, gaussian)


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("method", ["RK45", "rk4", "heun"])
def test_probability_flow_recovers_gaussian(gaussian, sde, method):
    x_T = sde.prior_sampling((N, DIM), seed=0)
    x = samplers.probability_flow(gaussian.sde_score_fn(sde), x_T, sde, method=method, steps=100)
    _assert_recovers(x, gaussian)


def test_probability_flow_is_a_bijection_of_the_prior(gaussian):
    """For Gaussian data the ODE map is affine: x_0 = μ + (x_T − m_Tμ)·s/σ_T exactly."""
    sde = sde_lib.VPSDE()
    x_T = sde.prior_sampling((256, DIM), seed=3)
    x = samplers.probability_flow(gaussian.sde_score_fn(sde), x_T, sde, eps=1e-5, rtol=1e-7, atol=1e-7)
    m, std = sde.marginal_prob(tf.ones((1, DIM)), tf.constant([1.0]))
    m = float(m[0, 0])
    total_std = np.sqrt(m**2 * gaussian.s**2 + float(std[0]) ** 2)
    expected = gaussian.mu + (x_T.numpy() - m * gaussian.mu) * gaussian.s / total_std
    np.testing.assert_allclose(x.numpy(), expected, atol=2e-3)


def test_fewer_steps_grow_the_error_as_known(gaussian, linear, record_property):
    """A known result, recorded rather than failed: with few steps, DDIM (η=0) and
    respaced DDPM (β̃) under-disperse; the std error grows as steps drop from 1000/500
    to 50 and 10."""
    errors = {}
    for steps in (500, 50, 10):
        x = samplers.ddim(gaussian.eps_fn(linear), _start(), linear, steps=steps, seed=0)
        errors[f"ddim_{steps}"] = abs(float(np.std(x)) - gaussian.s) / gaussian.s
    for steps in (1000, 50, 10):
        x = samplers.ddpm(gaussian.eps_fn(linear), _start(), linear, steps=steps, seed=0)
        errors[f"ddpm_{steps}"] = abs(float(np.std(x)) - gaussian.s) / gaussian.s
    for name, value in errors.items():
        record_property(f"std_error_{name}", round(value, 4))
    print("relative std error by sampler and steps:", {k: round(v, 4) for k, v in errors.items()})
    assert errors["ddim_10"] > errors["ddim_50"] > errors["ddim_500"]
    assert errors["ddpm_10"] > errors["ddpm_50"] > errors["ddpm_1000"]
    assert errors["ddim_500"] < TOL and errors["ddpm_1000"] < TOL


# ----------------------------------------------------------------- DDIM inversion


def test_ddim_inversion_reconstructs_with_error_falling_in_steps(gaussian, linear):
    x0 = tf.constant(gaussian.sample((500, 8), seed=5))
    errors = []
    for steps in (10, 100, 1000):
        x_T = samplers.ddim_invert(gaussian.eps_fn(linear), x0, linear, steps=steps)
        x_rec = samplers.ddim(gaussian.eps_fn(linear), x_T, linear, steps=steps)
        errors.append(float(tf.norm(x_rec - x0) / tf.norm(x0)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01, errors


def test_ddim_inversion_reaches_the_prior(gaussian, linear):
    x0 = tf.constant(gaussian.sample((4000, 2), seed=6))
    x_T = samplers.ddim_invert(gaussian.eps_fn(linear), x0, linear, steps=1000).numpy()
    assert abs(x_T.std() - 1.0) < 0.03 and abs(x_T.mean()) < 0.03


# ------------------------------------------------------------------ NCSN's toy (Fig. 25)

WEIGHTS = np.array([0.2, 0.8])
MODES = np.array([[-5.0, -5.0], [5.0, 5.0]])


def _mixture_score(x, sigma):
    """Exact score of 1/5·N((−5,−5), I) + 4/5·N((5,5), I) perturbed by N(0, σ²I)."""
    x = tf.cast(x, tf.float64)
    var = 1.0 + tf.cast(sigma, tf.float64)[:, None] ** 2
    diff = x[:, None, :] - MODES[None]
    log_p = np.log(WEIGHTS)[None] - tf.reduce_sum(diff**2, -1) / (2 * var)
    resp = tf.nn.softmax(log_p, axis=1)
    return tf.cast(tf.reduce_sum(resp[..., None] * (-diff / var[..., None]), 1), tf.float32)


def test_annealed_langevin_recovers_mixture_weights_and_plain_langevin_does_not():
    x0 = tf.random.stateless_uniform((4000, 2), seed=[0, 1], minval=-8, maxval=8)
    sigmas = schedules.geometric_sigmas(10.0, 0.1, 10)
    annealed = samplers.annealed_langevin(_mixture_score, x0, sigmas, 300, 3e-3, seed=0).numpy()
    plain = samplers.langevin(_mixture_score, x0, 0.1, 1000, seed=0).numpy()
    share_annealed = float(np.mean(annealed[:, 0] > 0))
    share_plain = float(np.mean(plain[:, 0] > 0))
    assert abs(share_annealed - 0.8) < 0.05, share_annealed
    assert abs(share_plain - 0.8) > 0.2, share_plain
    # Within the mode, the samples have the mode's unit variance.
    big = annealed[annealed[:, 0] > 0]
    np.testing.assert_allclose(big.mean(0), [5.0, 5.0], atol=0.15)
    np.testing.assert_allclose(big.std(0), [1.0, 1.0], atol=0.1)


# ----------------------------------------------------- reference computations, noise


class _Recorder:
    """A noise_fn that returns pre-drawn noise and records each call's shape."""

    def __init__(self, shape, count, seed=0):
        self.noise = np.random.default_rng(seed).standard_normal((count,) + tuple(shape)).astype(np.float32)
        self.calls = []

    def __call__(self, shape):
        self.calls.append(tuple(shape))
        return self.noise[len(self.calls) - 1]


def test_ddpm_matches_algorithm_2_with_injected_noise(gaussian):
    """Ho et al.'s Algorithm 2, written out in numpy, with the same noise."""
    schedule = schedules.linear(T=20, beta_start=1e-3, beta_end=0.2)
    x_T = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)
    recorder = _Recorder(x_T.shape, schedule.T)
    out = samplers.ddpm(gaussian.eps_fn(schedule), x_T, schedule, variance="beta", noise_fn=recorder)
    assert len(recorder.calls) == schedule.T - 1  # no noise at the last step
    x = x_T.astype(np.float64)
    eps_fn = gaussian.eps_fn(schedule)
    b, a, abar = schedule.betas, schedule.alphas, schedule.alphas_cumprod
    for k, t in enumerate(range(schedule.T - 1, -1, -1)):
        eps = eps_fn(tf.constant(x), tf.fill([len(x)], t)).numpy()
        z = recorder.noise[k] if t > 0 else 0.0
        x = (x - b[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(a[t]) + np.sqrt(b[t]) * z
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-4, atol=1e-4)


def test_ddim_matches_eq_31_with_injected_noise(gaussian, linear):
    steps, eta = 25, 0.5
    x_T = np.random.default_rng(2).standard_normal((64, 3)).astype(np.float32)
    recorder = _Recorder(x_T.shape, steps)
    out = samplers.ddim(gaussian.eps_fn(linear), x_T, linear, steps=steps, eta=eta, noise_fn=recorder)
    assert len(recorder.calls) == steps - 1  # σ = 0 at the last step (ᾱ_prev = 1)
    abar = linear.alphas_cumprod
    ts = list(range(0, 1000, 1000 // steps))[::-1]
    x = x_T.astype(np.float64)
    eps_fn = gaussian.eps_fn(linear)
    for k, t in enumerate(ts):
        prev = abar[ts[k + 1]] if k + 1 < len(ts) else 1.0
        eps = eps_fn(tf.constant(x), tf.fill([len(x)], t)).numpy()
        x0 = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
        sigma = eta * np.sqrt((1 - prev) / (1 - abar[t]) * (1 - abar[t] / prev))
        z = recorder.noise[k] if sigma > 0 else 0.0
        x = np.sqrt(prev) * x0 + np.sqrt(1 - prev - sigma**2) * eps + sigma * z
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-4, atol=1e-4)


def test_ddim_timesteps_are_the_reference_uniform_spacing():
    np.testing.assert_array_equal(samplers.ddim_timesteps(1000, 50), np.arange(0, 1000, 20))
    np.testing.assert_array_equal(samplers.ddim_timesteps(1000, 3), [0, 333, 666])


class _Levels:
    """An ε-function recording the timesteps it is called at."""

    def __init__(self):
        self.levels = []

    def __call__(self, x, t):
        self.levels.append(int(t[0]))
        return 0.1 * x


@pytest.mark.parametrize("options, expected", [
    ({}, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ({"spacing": "leading", "steps_offset": 1}, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
    ({"spacing": "trailing", "steps_offset": 1}, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),  # no offset
    ({"spacing": "linspace"}, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
])
def test_ddim_walks_diffusers_timestep_spacings(linear, options, expected):
    """DDIMScheduler.set_timesteps(10) of T = 1000 with each timestep_spacing (diffusers 0.42.1)."""
    eps_fn = _Levels()
    samplers.ddim(eps_fn, np.zeros((2, 2), np.float32), linear, steps=10, compiled=False, **options)
    assert eps_fn.levels == expected


def test_ddim_steps_to_t_minus_T_over_steps_and_the_final_alpha(linear):
    """Trailing over 7 steps (999, 856, …, 142: DDIMScheduler.set_timesteps(7)) steps from each t to
    t − 1000 // 7 — from 142 to ᾱ_0, not to the final ᾱ; final_alpha_one=False ends a leading walk
    at ᾱ_0 instead of 1."""
    x = np.ones((1, 1), np.float32)
    eps = lambda x, t: tf.zeros_like(x)  # noqa: E731  x̂₀ = x/√ᾱ_t, each step scales x by √(ᾱ_prev/ᾱ_t)
    abar = linear.alphas_cumprod
    trailing = samplers.ddim(eps, x, linear, steps=7, spacing="trailing", compiled=False).numpy()
    timesteps = np.array([999, 856, 713, 570, 428, 285, 142])
    np.testing.assert_allclose(trailing, np.prod(np.sqrt(abar[timesteps - 142] / abar[timesteps])), rtol=1e-5)
    leading = samplers.ddim(eps, x, linear, steps=10, final_alpha_one=False, compiled=False).numpy()
    np.testing.assert_allclose(leading, np.sqrt(abar[0] / abar[900]), rtol=1e-5)


@pytest.mark.parametrize("options, expected", [
    ({"spacing": "trailing"}, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ({"spacing": "linspace"}, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),  # = "even"
    ({"spacing": "leading", "steps_offset": 1}, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
])
def test_ddpm_walks_diffusers_timestep_spacings(linear, options, expected):
    eps_fn = _Levels()
    samplers.ddpm(eps_fn, np.zeros((2, 2), np.float32), linear, steps=10, seed=0, compiled=False, **options)
    assert eps_fn.levels == expected


@pytest.mark.parametrize("options, expected", [
    ({}, [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]),
    ({"spacing": "trailing"}, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ({"spacing": "leading", "steps_offset": 1}, [901, 811, 721, 631, 541, 451, 361, 271, 181, 91]),
])
def test_dpm_solver_walks_diffusers_timestep_spacings(linear, options, expected):
    """DPMSolverMultistepScheduler.set_timesteps(10) of T = 1000 with each timestep_spacing."""
    eps_fn = _Levels()
    samplers.dpm_solver(eps_fn, np.zeros((2, 2), np.float32), linear, steps=10, compiled=False, **options)
    assert eps_fn.levels == expected


def test_noise_fn_is_called_once_per_draw_in_order_for_pc(gaussian):
    sde = sde_lib.VESDE()
    x_T = sde.prior_sampling((32, 2), seed=0)
    recorder = _Recorder((32, 2), 100)
    samplers.predictor_corrector(
        gaussian.sde_score_fn(sde), x_T, sde, 10, n_corrector=2, noise_fn=recorder
    )
    # 2 corrector draws + 1 predictor draw per step, minus the last predictor (denoise).
    assert len(recorder.calls) == 10 * 3 - 1
    assert set(recorder.calls) == {(32, 2)}


def test_learned_variance_endpoints_equal_fixed_variances(gaussian, linear):
    eps_fn = gaussian.eps_fn(linear)
    x_T = _start(shape=(64, 2))
    for v, fixed in ((1.0, "beta"), (-1.0, "beta_tilde")):
        learned = samplers.ddpm(
            lambda x, t: [eps_fn(x, t), tf.fill(tf.shape(x), v)], x_T, linear,
            variance="learned", steps=50, seed=4,
        )
        reference = samplers.ddpm(eps_fn, x_T, linear, variance=fixed, steps=50, seed=4)
        np.testing.assert_allclose(learned.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
    # A single tensor of 2×C channels is accepted too.
    stacked = samplers.ddpm(
        lambda x, t: tf.concat([eps_fn(x, t), tf.ones_like(x)], -1), x_T, linear,
        variance="learned", steps=50, seed=4,
    )
    reference = samplers.ddpm(eps_fn, x_T, linear, variance="beta", steps=50, seed=4)
    np.testing.assert_allclose(stacked.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_clip_x0_bounds_the_prediction(linear):
    wild = lambda x, t: 1e4 * tf.ones_like(x)  # noqa: E731 — predicts x0 far outside [−1, 1]
    x_T = _start(shape=(16, 2))
    last = samplers.ddim(wild, x_T, linear, steps=1, clip_x0=1.0)  # one step: x = x̂0
    assert float(tf.reduce_max(tf.abs(last))) <= 1.0 + 1e-6
    free = samplers.ddim(wild, x_T, linear, steps=1)
    assert float(tf.reduce_max(tf.abs(free))) > 10


# ------------------------------------------------------------- seeds and execution modes


def test_same_seed_same_samples_and_eager_equals_compiled(gaussian, linear):
    eps_fn = gaussian.eps_fn(linear)
    x_T = _start(shape=(64, 2))
    a = samplers.ddpm(eps_fn, x_T, linear, steps=20, seed=11)
    b = samplers.ddpm(eps_fn, x_T, linear, steps=20, seed=11)
    eager = samplers.ddpm(eps_fn, x_T, linear, steps=20, seed=11, compiled=False)
    other = samplers.ddpm(eps_fn, x_T, linear, steps=20, seed=12)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.numpy(), other.numpy())


def test_trajectory_lists_every_state(gaussian, linear):
    x_T = _start(shape=(8, 2))
    x, trajectory = samplers.ddim(gaussian.eps_fn(linear), x_T, linear, steps=10, return_trajectory=True)
    assert len(trajectory) == 11
    np.testing.assert_array_equal(trajectory[0].numpy(), x_T.numpy())
    np.testing.assert_array_equal(trajectory[-1].numpy(), x.numpy())
    x_eager, eager = samplers.ddim(
        gaussian.eps_fn(linear), x_T, linear, steps=10, return_trajectory=True, compiled=False
    )
    assert len(eager) == 11
    np.testing.assert_allclose(eager[5].numpy(), trajectory[5].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [True, False])
def test_nan_mid_sampling_raises_with_the_step(linear, compiled):
    def broken(x, t):  # diverges below t = 300
        return tf.where(t[:, None] < 300, np.nan, 0.0) * tf.ones_like(x)

    with pytest.raises(samplers.NonFiniteSampleError, match=r"step 35 of 50 \(t=280\)") as info:
        samplers.ddim(broken, _start(shape=(4, 2)), linear, steps=50, compiled=compiled)
    assert info.value.step == 35


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, steps=1001), "steps"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, steps=0), "steps"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, eta=-0.1), "eta"),
        (lambda f, s: samplers.ddpm(f, np.zeros((4, 2), np.float32), s, steps=2000), "steps"),
        (lambda f, s: samplers.ddpm(f, np.zeros((4, 2), np.float32), s, variance="big"), "variance"),
        (lambda f, s: samplers.ddpm(f, np.zeros((4, 2), np.float32), s, clip_x0=-1), "clip_x0"),
        (lambda f, s: samplers.ddpm(f, np.zeros((4, 2), np.float32), s, spacing="uneven"), "spacing"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, spacing="even"), "spacing"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, steps_offset=-1), "steps_offset"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, steps=10, steps_offset=100),
         r"steps_offset \+ \(steps - 1\) \* \(T // steps\) < T=1000"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), s, final_alpha_one="yes"), "final_alpha_one"),
        (lambda f, s: samplers.dpm_solver(f, np.zeros((4, 2), np.float32), s, spacing="even"), "spacing"),
        (lambda f, s: samplers.dpm_solver(f, np.zeros((4, 2), np.float32), s, steps=10, spacing="leading",
                                          steps_offset=200), r"steps_offset \+ steps \* \(T // \(steps \+ 1\)\) < T=1000"),
        (lambda f, s: samplers.ddim(f, np.zeros((4,), np.float32), s), "x_T"),
        (lambda f, s: samplers.ddim(f, np.array([["a"]]), s), "x_T"),
        (lambda f, s: samplers.ddim(f, np.zeros((4, 2), np.float32), "linear"), "schedule"),
        (lambda f, s: samplers.ddim(lambda x, t: x[:, :1], np.zeros((4, 2), np.float32), s), "eps_fn"),
    ],
)
def test_bad_input_names_the_argument(gaussian, linear, call, match):
    with pytest.raises(ValueError, match=match) as info:
        call(gaussian.eps_fn(linear), linear)
    assert "Received" in str(info.value)


def test_bad_score_sampler_input(gaussian):
    score = gaussian.sigma_score_fn()
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="sigmas"):
        samplers.annealed_langevin(score, x, [0.01, 0.1, 1.0])
    with pytest.raises(ValueError, match="n_steps_each"):
        samplers.annealed_langevin(score, x, [1.0, 0.1], n_steps_each=0)
    with pytest.raises(ValueError, match="step_size"):
        samplers.langevin(score, x, step_size=-1.0, n_steps=3)
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="predictor"):
        samplers.predictor_corrector(score, x, sde, 10, predictor="heun")
    with pytest.raises(ValueError, match="corrector"):
        samplers.predictor_corrector(score, x, sde, 10, corrector="ald")
    with pytest.raises(ValueError, match="sde"):
        samplers.euler_maruyama(score, x, "vp", 10)
    with pytest.raises(ValueError, match="method"):
        samplers.probability_flow(score, x, sde, method="midpoint-ish")
    with pytest.raises(ValueError, match="noise_fn"):
        samplers.langevin(score, x, 0.1, 2, noise_fn=lambda shape: np.zeros((1, 1)))


@pytest.mark.parametrize("compiled", [True, False])
def test_callback_is_called_after_every_step(gaussian, compiled):
    schedule = schedules.linear(T=100)
    x = tf.random.stateless_normal([3, 4], seed=[1, 2])
    calls = []
    out = samplers.ddpm(gaussian.eps_fn(schedule), x, schedule, steps=6, seed=0, compiled=compiled,
                        callback=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 6) for i in range(6)]
    np.testing.assert_allclose(out, samplers.ddpm(gaussian.eps_fn(schedule), x, schedule, steps=6, seed=0),
                               atol=1e-5)
