"""DPM-Solver++ and Karras et al.'s samplers: closed forms on the Gaussian oracle, diffusers'
``DPMSolverMultistepScheduler`` to float32 round-off, k-diffusion's algorithms by hand.

Data x0 ~ N(μ, s²I) (tests/conftest.py) has an exact ε and score at every level, and its
probability-flow ODE an exact solution: in the σ parametrization x_σ = x_t/α,
x_σ − μ ∝ √(s² + σ²), so a deterministic sampler that starts at level σ₀ must end at
μ + (x_σ₀ − μ)·s/√(s² + σ₀²). The distance to that end point is its discretization error.
"""

import json
import os

import numpy as np
import paths
import pytest
import tensorflow as tf
from conftest import GaussianData
from test_samplers import DIM, N, _assert_recovers, _start  # the oracle's sample size and checks
from tiny_network import TinyNet

import kdiff
from kdiff import samplers, schedules
from kdiff.samplers import registry
from kdiff import sde as sde_lib

FIXTURES = os.path.join(paths.FIXTURES, "dpm_solver")


@pytest.fixture(scope="session")
def linear():
    return schedules.linear()


def _sigma(schedule, t):
    abar = schedule.alphas_cumprod[t]
    return float(np.sqrt((1.0 - abar) / abar))


def _flow_error(x, x_T, sigma_0, gaussian):
    """RMS distance / s of the samples from the exact ODE end point, from x_T at level σ₀ (VP)."""
    x_sigma = np.asarray(x_T, np.float64) * np.sqrt(1.0 + sigma_0**2)
    exact = gaussian.mu + (x_sigma - gaussian.mu) * gaussian.s / np.sqrt(gaussian.s**2 + sigma_0**2)
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - exact) ** 2)) / gaussian.s)


# --------------------------------------------------------------- Gaussian recovery


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_500_steps_recovers_gaussian(gaussian, linear, order):
    x = samplers.dpm_solver(gaussian.eps_fn(linear), _start(), linear, steps=500, order=order)
    _assert_recovers(x, gaussian)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_sde_dpm_solver_recovers_gaussian(gaussian, linear, order):
    """First order (an SDE's ancestral step) needs more steps. Order 3 is k-diffusion's
    third-order SDE step: diffusers' keeps a bias that does not fall with the steps (std
    0.326 for s = 0.3 at 50 and at 200 steps, measured)."""
    x = samplers.dpm_solver(gaussian.eps_fn(linear), _start(), linear, steps=500 if order == 1 else 200, order=order,
                           algorithm="sde-dpmsolver++", seed=0)
    _assert_recovers(x, gaussian)


@pytest.mark.parametrize("sampler", [samplers.heun, samplers.euler, samplers.euler_ancestral], ids=lambda f: f.__name__)
def test_karras_samplers_500_steps_recover_gaussian(gaussian, linear, sampler):
    x = sampler(gaussian.eps_fn(linear), _start(), linear, steps=500, seed=0)
    _assert_recovers(x, gaussian)


SDES = [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()]


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("sampler", [samplers.dpm_solver, samplers.heun, samplers.euler_ancestral],
                         ids=lambda f: f.__name__)
def test_score_models_through_the_sde(gaussian, sde, sampler):
    """The ε ↔ score conversion of the SDE's marginal (ε = −std·score)."""
    x_T = sde.prior_sampling((N, DIM), seed=0)
    x = sampler(gaussian.sde_score_fn(sde), x_T, sde, steps=200, seed=0)
    _assert_recovers(x, gaussian, tol=0.05)


@pytest.mark.parametrize("sampler", [samplers.heun, samplers.euler, samplers.euler_ancestral], ids=lambda f: f.__name__)
def test_karras_samplers_on_a_sigma_ladder_start_from_ncsn_uniform_noise(gaussian, sampler):
    """A σ ladder's prior (uniform over the data range) is taken to σ_max by adding σ_max·z."""
    ladder = schedules.Sigmas(schedules.geometric_sigmas(50.0, 0.01, 10))
    x0 = tf.random.stateless_uniform((N, DIM), seed=[3, 4])
    x = sampler(gaussian.sigma_score_fn(), x0, ladder, steps=200, seed=0)
    _assert_recovers(x, gaussian)


def test_dpm_solver_500_steps_is_the_exact_flow(gaussian, linear):
    x_T = _start()
    errors = {
        "ddim": _flow_error(samplers.ddim(gaussian.eps_fn(linear), x_T, linear, steps=500), x_T,
                            _sigma(linear, 998), gaussian),
        "dpm_solver": _flow_error(samplers.dpm_solver(gaussian.eps_fn(linear), x_T, linear, steps=500), x_T,
                                  _sigma(linear, 999), gaussian),
        "heun": _flow_error(samplers.heun(gaussian.eps_fn(linear), x_T, linear, steps=250), x_T,
                            _sigma(linear, 999), gaussian),
    }
    assert errors["heun"] < errors["dpm_solver"] < errors["ddim"] < 0.02, errors
    assert errors["heun"] < 1e-3, errors


# ------------------------------------------------------- error at equal network evaluations


def _nfe_errors(gaussian, schedule, x_T, nfe):
    """End-point errors of each sampler with at most ``nfe`` network evaluations."""
    eps_fn = gaussian.eps_fn(schedule)
    top = _sigma(schedule, schedule.T - 1)
    heun_steps = (nfe + 1) // 2  # 2·steps − 1 evaluations
    return {
        "ddim": _flow_error(samplers.ddim(eps_fn, x_T, schedule, steps=nfe), x_T,
                            _sigma(schedule, (nfe - 1) * (schedule.T // nfe)), gaussian),
        **{f"dpm_solver_{order}": _flow_error(samplers.dpm_solver(eps_fn, x_T, schedule, steps=nfe, order=order),
                                              x_T, top, gaussian) for order in (2, 3)},
        "euler": _flow_error(samplers.euler(eps_fn, x_T, schedule, steps=nfe), x_T, top, gaussian),
        f"heun_{2 * heun_steps - 1}": _flow_error(samplers.heun(eps_fn, x_T, schedule, steps=heun_steps), x_T,
                                                   top, gaussian),
    }


@pytest.mark.parametrize("s", [0.3, 1.0])
def test_dpm_solver_beats_ddim_at_10_and_20_evaluations(linear, s, record_property):
    gaussian = GaussianData(0.5, s)
    x_T = _start(shape=(1000, DIM))
    for nfe in (10, 20):
        errors = _nfe_errors(gaussian, linear, x_T, nfe)
        for name, value in errors.items():
            record_property(f"flow_error_s{s}_nfe{nfe}_{name}", round(value, 5))
        print(f"s={s}, NFE={nfe}: end-point error / s", {k: f"{v:.3g}" for k, v in errors.items()})
        assert errors["dpm_solver_2"] < errors["ddim"] and errors["dpm_solver_3"] < errors["ddim"], errors


def test_heun_beats_ddim_from_50_evaluations_and_converges_at_second_order(gaussian, linear, record_property):
    """Recorded, not failed: at 10 and 20 evaluations (5 and 10 Heun steps) Karras' ρ = 7
    ladder over the DDPM's σ ∈ [0.01, 157] takes one step across σ ≈ s where the slope of the
    flow turns, and Heun's corrector overshoots there: it is then worse than DDIM (see
    /tmp/notes/readme_fast_samplers.md). From 50 evaluations it is better, and its error
    falls as h²."""
    x_T = _start(shape=(1000, DIM))
    heun = {}
    for nfe in (10, 20, 50, 100):
        errors = _nfe_errors(gaussian, linear, x_T, nfe)
        heun[nfe] = errors[f"heun_{2 * ((nfe + 1) // 2) - 1}"]
        for name, value in errors.items():
            record_property(f"flow_error_nfe{nfe}_{name}", round(value, 5))
        if nfe >= 50:
            assert heun[nfe] < errors["ddim"], errors
    assert heun[50] / heun[100] > 3.0, heun  # second order: ×4 for twice the steps (×2 for DDIM)


# ---------------------------------------------------------------- diffusers' scheduler


def _fixture_cases():
    with open(os.path.join(FIXTURES, "runs.json"), encoding="utf-8") as f:
        return json.load(f)["cases"]


def _kdiff_options(options):
    names = {"solver_order": "order", "solver_type": "solver_type", "lower_order_final": "lower_order_final",
             "algorithm_type": "algorithm"}
    kdiff_options = {names[k]: v for k, v in options.items() if k in names}
    if options.get("final_sigmas_type") == "sigma_min":
        kdiff_options["final_sigma_zero"] = False
    return kdiff_options


@pytest.mark.parametrize("case", sorted(_fixture_cases()))
def test_dpm_solver_equals_diffusers_multistep_scheduler(gaussian, linear, case):
    """The default case names diffusers' defaults; every step's sample is compared, to
    1e-4 of the output's scale (float32; diffusers keeps ᾱ in float32, kdiff in float64)."""
    spec = _fixture_cases()[case]
    with np.load(os.path.join(FIXTURES, "runs.npz")) as ref:
        x_T, want, timesteps = ref["x_T"], ref[f"{case}/trajectory"], ref[f"{case}/timesteps"]
        noise = ref[f"{case}/noise"] if f"{case}/noise" in ref else None
    np.testing.assert_array_equal(samplers.dpm_timesteps(linear.T, spec["steps"]), timesteps)
    draws = iter(() if noise is None else noise)
    x, trajectory = samplers.dpm_solver(
        gaussian.eps_fn(linear), tf.constant(x_T), linear, steps=spec["steps"], return_trajectory=True,
        noise_fn=None if noise is None else (lambda shape: tf.constant(next(draws))),
        **_kdiff_options(spec["options"]),
    )
    got = np.stack([np.asarray(state) for state in trajectory])
    assert got.shape == want.shape
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * np.abs(w).max(), err_msg=f"state {i}")
    np.testing.assert_array_equal(np.asarray(x), got[-1])


def test_dpm_solver_defaults_are_diffusers_defaults():
    options = registry.get("dpm_solver").options()
    assert {k: options[k] for k in ("order", "algorithm", "solver_type", "lower_order_final", "final_sigma_zero")} == {
        "order": 2, "algorithm": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
        "final_sigma_zero": True,
    }
    assert "order2_steps10" in _fixture_cases() and _fixture_cases()["order2_steps20"]["options"] == {}


# ------------------------------------------------------------- Karras σ's and k-diffusion


def test_karras_sigmas():
    sigmas = schedules.karras_sigmas(10, 0.002, 80.0)
    assert sigmas.shape == (11,) and sigmas[-1] == 0.0
    assert (sigmas[0], sigmas[-2]) == (80.0, 0.002)
    assert np.all(np.diff(sigmas) < 0)
    np.testing.assert_allclose(schedules.karras_sigmas(5, 1.0, 5.0, rho=1.0), [5.0, 4.0, 3.0, 2.0, 1.0, 0.0], rtol=1e-12)
    # eq. 5 at ρ = 7, i = 1 of 3
    middle = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(schedules.karras_sigmas(3, 0.002, 80.0)[1], middle, rtol=1e-12)
    np.testing.assert_array_equal(schedules.karras_sigmas(1, 0.1, 2.0), [2.0, 0.0])
    tensor = tf.function(lambda n: schedules.karras_sigmas(n, 0.002, 80.0))(tf.constant(10))
    np.testing.assert_allclose(tensor.numpy(), sigmas, rtol=1e-12)
    for call, match in [
        (lambda: schedules.karras_sigmas(0, 0.1, 1.0), "`n`"),
        (lambda: schedules.karras_sigmas(3, 1.0, 0.1), "sigma_min <= sigma_max"),
        (lambda: schedules.karras_sigmas(3, 0.1, 1.0, rho=0.0), "`rho`"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


def _ve_by_hand(method, gaussian, x, sigmas, noises=None, eta=1.0):
    """k-diffusion's sample_euler / sample_heun / sample_euler_ancestral in numpy, with the
    exact denoiser of N(μ, s²) data under VE noise: D(x, σ) = μ + (x − μ)s²/(s² + σ²)."""
    def denoise(x, sigma):
        return gaussian.mu + (x - gaussian.mu) * gaussian.s**2 / (gaussian.s**2 + sigma**2)

    for i in range(len(sigmas) - 1):
        sigma, following = sigmas[i], sigmas[i + 1]
        d = (x - denoise(x, sigma)) / sigma
        if method == "euler_ancestral":
            up = min(following, eta * np.sqrt(following**2 * (sigma**2 - following**2) / sigma**2))
            down = np.sqrt(following**2 - up**2)
            x = x + d * (down - sigma)
            if following > 0:
                x = x + noises[i] * up
            continue
        x_next = x + d * (following - sigma)
        if method == "heun" and following > 0:
            d_next = (x_next - denoise(x_next, following)) / following
            x_next = x + (d + d_next) / 2 * (following - sigma)
        x = x_next
    return x


@pytest.mark.parametrize("method", ["euler", "heun", "euler_ancestral"])
def test_karras_samplers_are_k_diffusions_algorithms(gaussian, method):
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=20.0)
    x_T = sde.prior_sampling((64, DIM), seed=2)
    rng = np.random.default_rng(0)
    noises = rng.standard_normal((6, 64, DIM)).astype(np.float32)
    draws = iter(noises)
    x = getattr(samplers, method)(gaussian.sde_score_fn(sde), x_T, sde, steps=6, eps=1e-3,
                                 noise_fn=lambda shape: tf.constant(next(draws)))
    sigmas = schedules.karras_sigmas(6, float(sde.sigma(1e-3)), 20.0)
    want = _ve_by_hand(method, gaussian, x_T.numpy().astype(np.float64), sigmas, noises)
    np.testing.assert_allclose(x.numpy(), want, rtol=2e-5, atol=2e-5)


def test_euler_on_a_schedule_scales_x_T_and_evaluates_the_nearest_timestep(linear):
    """DiscreteEpsDDPMDenoiser: the model sees x_σ/√(1 + σ²) and the timestep nearest σ in log σ."""
    seen = []

    def eps_fn(x, t):
        seen.append((x.numpy(), t.numpy()))
        return tf.zeros_like(x)

    x_T = _start(shape=(3, DIM))
    x = samplers.euler(eps_fn, x_T, linear, steps=4, compiled=False)
    sigmas = schedules.karras_sigmas(4, _sigma(linear, 0), _sigma(linear, 999))
    log_sigmas = np.log(np.sqrt((1 - linear.alphas_cumprod) / linear.alphas_cumprod))
    assert [int(t[0]) for _, t in seen] == [int(np.argmin(np.abs(np.log(s) - log_sigmas))) for s in sigmas[:-1]]
    np.testing.assert_allclose(seen[0][0], x_T.numpy(), rtol=1e-5)  # x_T·√(1+σ²)/√(1+σ²)
    # ε = 0: D = x_σ, the state never moves: x_0 = x_T·√(1 + σ_max²)
    np.testing.assert_allclose(x.numpy(), x_T.numpy() * np.sqrt(1 + sigmas[0] ** 2), rtol=1e-5)


# --------------------------------------------------------------------- the registry


@pytest.fixture(scope="session")
def ddpm():
    return kdiff.DDPM(TinyNet(), schedules.linear(T=20), seed=0)


@pytest.mark.parametrize("name", ["dpm_solver", "heun", "euler", "euler_ancestral"])
def test_registered_samplers_run_through_kdiff_sample(ddpm, name):
    entry = registry.get(name)
    assert entry.default_steps == 20 and entry.clips_x0 and entry.runs_in_graph(entry.options())
    assert "schedule" in entry.processes
    images = kdiff.sample(ddpm, 3, sampler=name, steps=10, seed=1)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(ddpm.generate(3, sampler=name, steps=10, seed=1), images)


def test_processes_of_the_entries():
    assert registry.get("dpm_solver").processes == ("schedule", "sde")
    for name in ("heun", "euler", "euler_ancestral"):
        assert registry.get(name).processes == ("schedule", "sigmas", "sde")
    with pytest.raises(ValueError, match="schedule or sde"):
        samplers.dpm_solver(lambda x, s: -x, _start(shape=(2, DIM)), [1.0, 0.5])


@pytest.mark.parametrize(
    "name, run",
    [
        ("dpm_solver", lambda f, x, p, s: samplers.dpm_solver(f, x, p, steps=s, order=3)),
        ("sde_dpm_solver", lambda f, x, p, s: samplers.dpm_solver(f, x, p, steps=s, algorithm="sde-dpmsolver++", seed=3)),
        ("heun", lambda f, x, p, s: samplers.heun(f, x, p, steps=s, s_churn=1.0, seed=3)),
        ("euler", lambda f, x, p, s: samplers.euler(f, x, p, steps=s)),
        ("euler_ancestral", lambda f, x, p, s: samplers.euler_ancestral(f, x, p, steps=s, seed=3)),
    ],
)
def test_runtime_steps_give_the_samples_of_python_steps(name, run):
    """An export's generate traces the sampler once with a tensor `steps`."""
    schedule = schedules.linear(T=50)
    eps_fn = lambda x, t: 0.1 * x + tf.cast(t, x.dtype)[:, None] / 100.0  # noqa: E731
    x_T = tf.random.stateless_normal((3, 4), [1, 2])
    traced = tf.function(lambda steps: run(eps_fn, x_T, schedule, steps))
    for steps in (1, 2, 7):
        np.testing.assert_allclose(traced(tf.constant(steps)).numpy(), run(eps_fn, x_T, schedule, steps).numpy(),
                                   rtol=2e-5, atol=2e-6, err_msg=f"{name}, steps={steps}")


def test_same_seed_same_samples_and_eager_equals_compiled(gaussian, linear):
    x_T = _start(shape=(16, DIM))
    run = lambda seed, compiled=True: samplers.euler_ancestral(  # noqa: E731
        gaussian.eps_fn(linear), x_T, linear, steps=10, seed=seed, compiled=compiled).numpy()
    np.testing.assert_array_equal(run(5), run(5))
    np.testing.assert_allclose(run(5, compiled=False), run(5), rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(5), run(6))
    sde = lambda seed: samplers.dpm_solver(  # noqa: E731
        gaussian.eps_fn(linear), x_T, linear, steps=10, algorithm="sde-dpmsolver++", seed=seed).numpy()
    np.testing.assert_array_equal(sde(5), sde(5))
    assert not np.allclose(sde(5), sde(6))


def test_trajectory_holds_the_process_states(gaussian, linear):
    x_T = _start(shape=(8, DIM))
    x, trajectory = samplers.heun(gaussian.eps_fn(linear), x_T, linear, steps=5, return_trajectory=True)
    assert len(trajectory) == 6
    np.testing.assert_allclose(trajectory[0].numpy(), x_T.numpy(), rtol=1e-5)  # x_t = α x_σ
    np.testing.assert_array_equal(trajectory[-1].numpy(), x.numpy())
    x, trajectory = samplers.dpm_solver(gaussian.eps_fn(linear), x_T, linear, steps=5, order=3, return_trajectory=True)
    assert len(trajectory) == 6 and trajectory[0].shape == x_T.shape
    np.testing.assert_array_equal(trajectory[0].numpy(), x_T.numpy())


def test_clip_x0_bounds_the_prediction(linear):
    far = lambda x, t: -100.0 * tf.ones_like(x)  # noqa: E731
    x_T = _start(shape=(4, DIM))
    for sampler in (samplers.dpm_solver, samplers.euler):
        x = sampler(far, x_T, linear, steps=4, clip_x0=(0.0, 0.5))
        assert float(tf.reduce_min(x)) >= -1e-6 and float(tf.reduce_max(x)) <= 0.5 + 1e-6, sampler.__name__


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, x, s: samplers.dpm_solver(f, x, s, order=4), r"`order` in \[1, 3\]. Received: order=4"),
        (lambda f, x, s: samplers.dpm_solver(f, x, s, order=0), r"`order` in \[1, 3\]"),
        (lambda f, x, s: samplers.dpm_solver(f, x, s, algorithm="dpmsolver"), r"`algorithm` to be one of"),
        (lambda f, x, s: samplers.dpm_solver(f, x, s, solver_type="bh2"), r"`solver_type` to be one of"),
        (lambda f, x, s: samplers.dpm_solver(f, x, s, steps=0), r"`steps` in \[1, 1000\]. Received: steps=0"),
        (lambda f, x, s: samplers.dpm_solver(f, x, s, steps=1001), r"`steps` in \[1, 1000\]"),
        (lambda f, x, s: samplers.heun(f, x, s, steps=0), r"`steps` >= 1. Received: steps=0"),
        (lambda f, x, s: samplers.euler(f, x, s, s_churn=-1.0), r"`s_churn` >= 0"),
        (lambda f, x, s: samplers.euler_ancestral(f, x, s, eta=-0.5), r"`eta` >= 0"),
        (lambda f, x, s: samplers.euler(f, x, s, rho=0.0), r"`rho` > 0"),
        (lambda f, x, s: samplers.heun(f, x, s, sigma_min=2.0, sigma_max=1.0), r"sigma_min <= sigma_max"),
        (lambda f, x, s: samplers.euler(f, x, s, s_tmax="big"), r"`s_tmax`"),
        (lambda f, x, s: samplers.heun(f, x, sde_lib.VESDE(), eps=2.0), r"0 < eps < 1.0"),
    ],
)
def test_bad_input_names_the_argument(gaussian, linear, call, match):
    with pytest.raises(ValueError, match=match):
        call(gaussian.eps_fn(linear), _start(shape=(2, DIM)), linear)


def test_registry_options_are_checked_by_kdiff_sample(ddpm):
    with pytest.raises(ValueError, match="did you mean 'order'"):
        kdiff.sample(ddpm, 2, sampler="dpm_solver", steps=3, ordre=2)
    with pytest.raises(ValueError, match=r"`order` in \[1, 3\]"):
        kdiff.sample(ddpm, 2, sampler="dpm_solver", steps=3, order=5)
