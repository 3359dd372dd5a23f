"""The sampler outputs pinned by ``tests/kdiff/samplers/test_sampler_pins.py`` (and written by
``tests/fixtures/make_sampler_pins.py``): every sampler, on closed-form model functions,
from a fixed start and seed, so that moving code around cannot change what it samples."""

import numpy as np
import tensorflow as tf

import kdiff
from kdiff import samplers, schedules, sde
from kdiff.samplers import registry

SHAPE = (3, 4, 4, 1)


def _eps_fn(x, t):
    # A smooth ε-model: depends on x and on the level, like a network's.
    return 0.5 * tf.tanh(x) + 1e-4 * tf.cast(tf.reshape(t, [-1, 1, 1, 1]), x.dtype)


def _score_fn(x, level):
    # The score of N(0.1, 1 + level²) data at each point: a closed form the samplers can walk.
    level = tf.cast(tf.reshape(level, [-1, 1, 1, 1]), x.dtype)
    return -(x - 0.1) / (1.0 + level**2)


def _processes():
    return {
        "schedule": schedules.linear(T=1000),
        "cosine": schedules.cosine(T=1000),
        "sigmas": schedules.Sigmas(schedules.geometric_sigmas(1.0, 0.01, 10)),
        "vp": sde.VPSDE(N=1000),
        "subvp": sde.SubVPSDE(N=1000),
        "ve": sde.VESDE(sigma_min=0.01, sigma_max=10.0, N=1000),
    }


# (case name, sampler, process, steps, options)
CASES = (
    ("ddpm_beta", "ddpm", "schedule", 6, {"variance": "beta"}),
    ("ddpm_beta_tilde_leading", "ddpm", "cosine", 6, {"variance": "beta_tilde", "spacing": "leading"}),
    ("ddim", "ddim", "schedule", 5, {}),
    ("ddim_eta_clipped", "ddim", "cosine", 5, {"eta": 0.5, "clip_x0": 1.0, "clipped_eps": True}),
    ("annealed_langevin", "annealed_langevin", "sigmas", 3, {"denoise": True}),
    ("euler_maruyama_vp", "euler_maruyama", "vp", 7, {}),
    ("euler_maruyama_ve", "euler_maruyama", "ve", 7, {"denoise": True}),
    ("pc_ve", "predictor_corrector", "ve", 6, {}),
    ("pc_vp_reverse_diffusion", "predictor_corrector", "vp", 6, {"predictor": "reverse_diffusion", "snr": 0.1}),
    ("pc_subvp_discrete", "predictor_corrector", "subvp", 6, {"grid": "discrete", "corrector": None}),
    ("probability_flow_heun", "probability_flow", "vp", 5, {"method": "heun"}),
    ("probability_flow_rk45", "probability_flow", "ve", None, {}),
    ("dpm_solver_2", "dpm_solver", "schedule", 8, {"order": 2}),
    ("dpm_solver_3_vp", "dpm_solver", "vp", 8, {"order": 3}),
    ("dpm_solver_sde", "dpm_solver", "cosine", 8, {"algorithm": "sde-dpmsolver++", "solver_type": "heun"}),
    ("heun_schedule", "heun", "schedule", 5, {}),
    ("heun_sigmas_churn", "heun", "sigmas", 5, {"s_churn": 1.0}),
    ("heun_ve", "heun", "ve", 5, {"rho": 5.0}),
    ("euler_vp", "euler", "vp", 5, {}),
    ("euler_ancestral_sigmas", "euler_ancestral", "sigmas", 5, {"eta": 0.7}),
    ("euler_ancestral_schedule", "euler_ancestral", "schedule", 5, {}),
)


def run_case(name):
    """One case's float64 samples (a fixed start, seed [3, 4])."""
    _, sampler, kind, steps, options = next(case for case in CASES if case[0] == name)
    process = _processes()[kind]
    entry = registry.get(sampler)
    model_fn = _eps_fn if process.kind == "schedule" else _score_fn
    start = tf.constant(np.random.default_rng(0).standard_normal(SHAPE), tf.float32)
    kwargs = dict(options)
    if steps is not None:
        kwargs[entry.steps_arg] = steps
    out = entry.resolve()(model_fn, start, process, seed=tf.constant([3, 4], tf.int32), **kwargs)
    return np.asarray(out, np.float64)


def run_extras():
    """The unregistered samplers and ``kdiff.sample``'s uint8 path."""
    processes = _processes()
    start = tf.constant(np.random.default_rng(1).standard_normal(SHAPE), tf.float32)
    out = {
        "ddim_invert": samplers.ddim_invert(_eps_fn, start, processes["schedule"], steps=5),
        "langevin": samplers.langevin(_score_fn, start, 0.01, 4, noise_level=0.3, seed=tf.constant([5, 6])),
    }
    out["sample_ddim_uint8"] = kdiff.sample(
        _eps_fn, 5, sampler="ddim", steps=4, seed=7, schedule=processes["schedule"], image_shape=(4, 4, 1)
    )
    out["sample_heun_uint8"] = kdiff.sample(
        _score_fn, 5, sampler="heun", steps=4, seed=7, sde=processes["ve"], image_shape=(4, 4, 1)
    )
    return {key: np.asarray(value, np.float64) for key, value in out.items()}
