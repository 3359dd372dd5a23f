"""The process interface (``kdiff.process.Process``) and processes from their configs
(``kdiff.processes``): what every schedule, σ ladder and SDE answers alike (kind, family,
network level, data range, default sampler, prior), the conversions between a network level
and σ (``marginal``, ``sigma_range``, ``at_sigma``), and ``from_config`` /
``from_model_config``."""

import numpy as np
import pytest
import tensorflow as tf

from kdiff import grids, processes, schedules
from kdiff.samplers import registry
from kdiff import sde as sde_lib


@pytest.mark.parametrize(
    "process, kind, family, level_dtype, data_range, sampler, num_steps",
    [
        (schedules.linear(T=10), "schedule", "ddpm", tf.int32, (-1.0, 1.0), "ddim", 10),
        (schedules.Sigmas(schedules.geometric_sigmas(1.0, 0.1, 4)), "sigmas", "ncsn", tf.float32, (0.0, 1.0),
         "annealed_langevin", 4),
        (sde_lib.VPSDE(N=12), "sde", "sde", tf.float32, (-1.0, 1.0), "predictor_corrector", 12),
        (sde_lib.VESDE(N=14), "sde", "sde", tf.float32, (-1.0, 1.0), "predictor_corrector", 14),
    ],
)
def test_processes_share_one_interface(process, kind, family, level_dtype, data_range, sampler, num_steps):
    assert (process.kind, process.family, process.level_dtype) == (kind, family, level_dtype)
    assert process.default_data_range == data_range and process.default_sampler == sampler
    assert process.num_steps == num_steps
    rebuilt = processes.from_config(kind, process.get_config())
    assert type(rebuilt) is type(process) and rebuilt.get_config() == process.get_config()
    x = process.prior_sample([2000, 3], seed=4, data_range=data_range)
    assert x.shape == (2000, 3)
    if kind == "sigmas":  # NCSN starts from uniform noise over the data range
        assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
    elif isinstance(process, sde_lib.VESDE):
        np.testing.assert_allclose(float(tf.math.reduce_std(x)), process.sigma_max, rtol=0.05)
    else:
        np.testing.assert_allclose(float(tf.math.reduce_std(x)), 1.0, rtol=0.05)
    assert sampler in registry.names(process)


PROCESSES = {
    "linear": schedules.linear(T=1000),
    "cosine": schedules.cosine(T=1000),
    "ladder": schedules.Sigmas(grids.geometric(1.0, 0.01, 10)),
    "vp": sde_lib.VPSDE(),
    "subvp": sde_lib.SubVPSDE(),
    "ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_at_sigma_inverts_the_marginal(name):
    process = PROCESSES[name]
    eps = 1e-3 if process.continuous_time else None
    if process.kind == "schedule":
        levels = tf.constant([0, 1, 250, 999])
    elif process.kind == "sigmas":
        levels = tf.constant(process.sigmas[[0, 4, 9]], tf.float64)
    else:
        levels = tf.constant([1e-3, 0.1, 0.5, 1.0], tf.float64)
    alpha, std = process.marginal(levels)
    if process.kind == "schedule":
        abar = process.alphas_cumprod[levels.numpy()]
        np.testing.assert_allclose(alpha, np.sqrt(abar)), np.testing.assert_allclose(std, np.sqrt(1 - abar))
    level, alpha_back = process.at_sigma(std / alpha, eps)
    if process.kind == "schedule":
        np.testing.assert_array_equal(level, levels)  # the nearest timestep is its own
    else:
        np.testing.assert_allclose(level, levels, rtol=1e-4)
    np.testing.assert_allclose(alpha_back, alpha, rtol=1e-4)
    low, high = process.sigma_range(eps)
    assert 0 < low < high
    zero_level, zero_alpha = process.at_sigma(tf.constant([0.0], tf.float64), eps)
    assert float(zero_alpha[0]) == 1.0  # σ = 0 is the data


def test_sigmas_behave_as_the_array_of_levels_and_old_configs_load():
    levels = schedules.geometric_sigmas(1.0, 0.01, 5)
    sigmas = schedules.Sigmas(levels)
    np.testing.assert_array_equal(np.asarray(sigmas), levels)
    assert len(sigmas) == 5 and sigmas[0] == 1.0 and list(sigmas) == list(levels)
    assert processes.from_model_config({"sigmas": list(levels)}).get_config()["sigmas"] == list(levels)
    with pytest.raises(ValueError, match="descending"):
        schedules.Sigmas([0.1, 1.0])
    with pytest.raises(ValueError, match="exactly one process"):
        processes.from_model_config({"schedule": {"name": "linear"}, "sde": {"name": "VPSDE"}})
