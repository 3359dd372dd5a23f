"""``kdiff.grids`` (known formulas: diffusers' timestep spacings, Karras' and NCSN's σ's) and
samplers walking an explicit grid (the processes' conversions ``marginal``, ``sigma_range``
and ``at_sigma`` that the grids rely on: test_process.py)."""

import numpy as np
import pytest
import tensorflow as tf
from test_process import PROCESSES  # the processes whose conversions test_process checks

import kdiff
from kdiff import grids, samplers, schedules

T = 1000


@pytest.mark.parametrize("steps", [1, 7, 10, 50, 1000])
def test_timestep_spacings_are_diffusers_formulas(steps):
    # diffusers' DDIMScheduler.set_timesteps, its three timestep_spacing branches (ascending here).
    leading = (np.arange(0, steps) * (T // steps)).round().astype(np.int64)
    trailing = (np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1)[::-1]
    linspace = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    np.testing.assert_array_equal(grids.leading(T, steps), leading)
    np.testing.assert_array_equal(grids.trailing(T, steps), trailing)
    np.testing.assert_array_equal(grids.linspace(T, steps), linspace)
    spaced = grids.spaced(T, steps)
    assert spaced[-1] == T - 1 and (steps == 1 or spaced[0] == 0) and np.all(np.diff(spaced) > 0)


def test_a_tensor_number_of_steps_gives_the_same_grid():
    @tf.function
    def run(n):
        return grids.trailing(T, n), grids.linspace(T, n), grids.karras(n, 0.01, 80.0)[:-1]

    for n in (3, 20):
        trailing, linspace, karras = run(tf.constant(n))
        np.testing.assert_array_equal(trailing.numpy(), grids.trailing(T, n))
        np.testing.assert_array_equal(linspace.numpy(), grids.linspace(T, n))
        np.testing.assert_allclose(karras.numpy(), grids.karras(n, 0.01, 80.0)[:-1], rtol=1e-12)


def test_noise_level_grids_keep_their_ends():
    karras = grids.karras(10, 0.002, 80.0, rho=7.0)
    assert karras[0] == 80.0 and karras[-2] == 0.002 and karras[-1] == 0.0 and np.all(np.diff(karras) < 0)
    geometric = grids.geometric(1.0, 0.01, 10)
    np.testing.assert_allclose(geometric[[0, -1]], [1.0, 0.01])
    np.testing.assert_allclose(geometric[1:] / geometric[:-1], (0.01) ** (1 / 9))
    assert schedules.karras_sigmas is grids.karras and samplers.ddim_timesteps is grids.leading


def test_sde_time_grids():
    times, h = grids.sde_uniform(1.0, 4, 1e-3)
    np.testing.assert_allclose(times, 1.0 - np.arange(4) * (1.0 - 1e-3) / 4)
    assert h == pytest.approx((1.0 - 1e-3) / 4)
    times, _, _ = grids.sde_linspace(1.0, 5, 1e-3)
    np.testing.assert_allclose(times, np.linspace(1.0, 1e-3, 5))
    with pytest.raises(ValueError, match="eps"):
        grids.sde_uniform(1.0, 4, 1.5)


def _eps(x, t):
    return 0.5 * tf.tanh(x) + 1e-4 * tf.cast(tf.reshape(t, [-1, 1, 1, 1]), x.dtype)


START = tf.constant(np.random.default_rng(0).standard_normal((2, 4, 4, 1)), tf.float32)


def test_samplers_walk_an_explicit_grid():
    linear = PROCESSES["linear"]
    np.testing.assert_array_equal(samplers.ddim(_eps, START, linear, steps=10),
                                  samplers.ddim(_eps, START, linear, grid=grids.leading(T, 10)))
    karras = grids.karras(6, *linear.sigma_range())
    mapped = np.unique(np.asarray(linear.at_sigma(tf.constant(karras[:-1]))[0]))
    np.testing.assert_array_equal(samplers.ddim(_eps, START, linear, grid=karras),
                                  samplers.ddim(_eps, START, linear, grid=mapped))
    trailing = samplers.ddim(_eps, START, linear, grid=grids.trailing(T, 10))
    assert not np.allclose(trailing, samplers.ddim(_eps, START, linear, steps=10))
    np.testing.assert_array_equal(samplers.heun(_eps, START, linear, steps=6), samplers.heun(_eps, START, linear, grid=karras))
    ve = PROCESSES["ve"]
    score = lambda x, t: -x  # noqa: E731
    np.testing.assert_array_equal(
        samplers.euler(score, START, ve, steps=5, eps=1e-3),
        samplers.euler(score, START, ve, grid=grids.karras(5, *ve.sigma_range(1e-3)), eps=1e-3),
    )
    images = kdiff.sample(_eps, 2, sampler="heun", grid=karras.tolist(), schedule=linear, image_shape=(4, 4, 1))
    assert images.shape == (2, 4, 4, 1)


@pytest.mark.parametrize("grid, match", [
    ([1.0], "at least two"), ([0.5, 1.0, 0.0], "descend"), ([1.0, -0.1], ">= 0"), ([[1.0, 0.0]], "at least two"),
])
def test_a_bad_sigma_grid_is_named(grid, match):
    with pytest.raises(ValueError, match=match):
        samplers.heun(_eps, START, PROCESSES["linear"], grid=grid)


def test_a_grid_with_a_sigma_range_or_bad_timesteps_is_refused():
    with pytest.raises(ValueError, match="sigma_min"):
        samplers.euler(_eps, START, PROCESSES["linear"], grid=[10.0, 1.0, 0.0], sigma_min=0.1)
    for grid in ([5, 3, 1], [0, 1000], [-1, 4]):
        with pytest.raises(ValueError, match=r"ascending timesteps in \[0, 1000\)"):
            samplers.ddim(_eps, START, PROCESSES["linear"], grid=grid)
