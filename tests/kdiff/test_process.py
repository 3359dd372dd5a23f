"""The process interface (``kdiff.process.Process``) and processes rebuilt from their
configs (``kdiff.process.from_config``): what every schedule, σ ladder and SDE answers alike (kind, family,
network level, data range, default sampler, prior), the conversions between a network level
and σ (``marginal``, ``sigma_range``, ``at_sigma``), and ``from_config`` /
``from_model_config``, ``as_process``, ``family_class``."""

import numpy as np
import pytest
import tensorflow as tf

from kdiff import grids, schedules
from kdiff import process as process_lib
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
    rebuilt = process_lib.from_config(kind, process.get_config())
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
    assert process_lib.from_model_config({"sigmas": list(levels)}).get_config()["sigmas"] == list(levels)
    with pytest.raises(ValueError, match="descending"):
        schedules.Sigmas([0.1, 1.0])
    with pytest.raises(ValueError, match="exactly one process"):
        process_lib.from_model_config({"schedule": {"name": "linear"}, "sde": {"name": "VPSDE"}})


def test_as_process_and_family_class():
    linear = schedules.linear(T=10)
    assert process_lib.as_process(linear) is linear
    ladder = process_lib.as_process([1.0, 0.5, 0.1])
    assert isinstance(ladder, schedules.Sigmas) and ladder.sigmas.tolist() == [1.0, 0.5, 0.1]
    with pytest.raises(ValueError, match=r"Expected `model` to be a kdiff process .* Received: model='linear'"):
        process_lib.as_process("linear", "model")
    assert [process_lib.family_class(f) for f in ("ddpm", "ncsn", "sde")] == [
        schedules.Schedule, schedules.Sigmas, sde_lib.SDE]
    with pytest.raises(ValueError, match=r"Expected a diffusion family in \['ddpm', 'ncsn', 'sde'\]"):
        process_lib.family_class("ddim")
    with pytest.raises(ValueError, match=r"Expected a process kind in \['schedule', 'sde', 'sigmas'\]"):
        process_lib.from_config("ladder", {})


def test_a_process_class_defined_later_is_rebuilt_from_its_config():
    """from_config finds the classes through Process's subclasses: a kind defined outside
    kdiff round-trips too, and two classes claiming one kind are refused."""

    class Constant(schedules.Sigmas):
        kind = "constant_test"

        @classmethod
        def from_config(cls, config):
            return cls(config["sigmas"])

    try:
        rebuilt = process_lib.from_model_config({"constant_test": {"sigmas": [2.0, 1.0]}})
        assert type(rebuilt) is Constant and rebuilt.sigmas.tolist() == [2.0, 1.0]

        class Twin(schedules.Sigmas):
            kind = "constant_test"

        with pytest.raises(TypeError, match="one Process class per kind.*Constant and .*Twin"):
            process_lib.from_config("constant_test", {"sigmas": [1.0]})
    finally:
        Constant.kind = None  # the class lives on until collected: it must not claim the kind
        if "Twin" in locals():
            Twin.kind = None
