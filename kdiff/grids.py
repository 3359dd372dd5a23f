"""Timestep and noise-level grids: pure functions, written once, that any sampler can walk.

Timestep grids of a discrete schedule (diffusers' ``timestep_spacing`` names):
``leading`` (DDIM's i·(T // steps)), ``trailing``, ``linspace`` (DPM-Solver++'s) and
``spaced`` (Improved DDPM's respacing, both ends kept). Noise-level grids: ``karras``
(Karras et al.'s σ's) and ``geometric`` (NCSN's). Time grids of an SDE: ``sde_uniform``
(Euler–Maruyama's, the probability flow's) and ``sde_linspace`` (score_sde's
predictor–corrector grid). Each works with an int number of steps (numpy out) and with an
int tensor inside a graph (tensors out: an export's runtime number of steps).

A grid of σ's drives any process through ``Process.at_sigma`` (the level and α at each σ):
``kdiff.samplers.heun(model_fn, x, process, grid=grids.karras(20, 0.002, 80.0))``, or DDIM
over a schedule's timesteps nearest Karras' σ's with ``ddim(..., grid=grids.karras(...))``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kdiff import checks, _steps

__all__ = ["leading", "trailing", "linspace", "spaced", "karras", "geometric", "sde_uniform", "sde_linspace"]


# ------------------------------------------------------------------ timesteps of a schedule


def leading(T, steps):
    """diffusers' ``timestep_spacing="leading"`` (DDIM's): t_i = i·(T // steps), i = 0 … steps−1, ascending.

    Args:
        T: the schedule's number of steps.
        steps: the number of sampling steps, 1 ≤ steps ≤ T (an int, or an int tensor
            inside a graph).

    Returns:
        An int64 array of length ``steps`` (a tensor for a tensor ``steps``).
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.int64)
        return tf.range(n) * (T // n)

    return _steps.plan(build, steps)


def trailing(T, steps):
    """diffusers' ``timestep_spacing="trailing"`` (Lin et al. 2024): round(T − i·T/steps) − 1,
    i = 0 … steps−1, so that the walk starts at t = T − 1.

    Args:
        T: the schedule's number of steps.
        steps: 1 ≤ steps ≤ T (an int, or an int tensor inside a graph).

    Returns:
        An ascending int64 array of ``steps`` values ending at T − 1 (a tensor for a tensor ``steps``).
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.float64)
        descending = tf.round(T - tf.range(n, dtype=tf.float64) * (T / n)) - 1.0
        return tf.reverse(tf.cast(descending, tf.int64), [0])

    return _steps.plan(build, steps)


def linspace(T, steps):
    """diffusers' ``timestep_spacing="linspace"`` (``dpm_solver``'s on a schedule):
    round(linspace(0, T − 1, steps + 1)), descending, without the 0.

    Args:
        T: the schedule's number of steps.
        steps: 1 ≤ steps ≤ T (an int, or an int tensor inside a graph).

    Returns:
        An int64 array of ``steps`` values from T − 1 down (a tensor for a tensor ``steps``).
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.int32)
        # numpy's linspace: i · ((T − 1)/n), its last point set to T − 1 exactly
        grid = tf.range(n + 1, dtype=tf.float64) * (tf.constant(T - 1, tf.float64) / tf.cast(n, tf.float64))
        grid = tf.concat([grid[:-1], [float(T - 1)]], 0)
        return tf.reverse(tf.cast(tf.round(grid), tf.int64), [0])[:-1]  # tf.round: half to even, as numpy

    return _steps.plan(build, steps)


def spaced(T, steps):
    """Evenly spaced timesteps, both ends kept (Improved DDPM's ``space_timesteps``; DDPM's respacing).

    Args:
        T: the original number of steps.
        steps: how many to keep, 1 ≤ steps ≤ T (an int, or an int tensor inside a graph).

    Returns:
        An increasing int64 array of ``steps`` values from 0 to T−1 (both ends kept): a
        numpy array for an int ``steps``, a tensor for a tensor.
    """
    steps = _steps.check(steps, "steps", 1, T)

    def build():
        n = tf.cast(steps, tf.int64)
        stride = tf.cast(T - 1, tf.float64) / tf.cast(tf.maximum(n - 1, 1), tf.float64)
        spaced = tf.cast(tf.round(tf.cast(tf.range(n), tf.float64) * stride), tf.int64)
        return tf.where(tf.equal(n, 1), tf.fill([n], tf.constant(T - 1, tf.int64)), spaced)

    return _steps.plan(build, steps)


# ------------------------------------------------------------------------------ noise levels


def geometric(sigma_max=1.0, sigma_min=0.01, num=10):
    """NCSN's noise levels: a geometric sequence from ``sigma_max`` down to ``sigma_min``.

    Args:
        sigma_max: σ_1, the largest level.
        sigma_min: σ_L, the smallest level.
        num: L, the number of levels.

    Returns:
        A descending float64 array of length ``num``.
    """
    num = checks.positive_int(num, "num")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(
            "Expected 0 < sigma_min <= sigma_max. "
            f"Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num))


def karras(n, sigma_min, sigma_max, rho=7.0):
    """Karras et al.'s noise levels (2022, eq. 5), with a final 0 (k-diffusion's ``get_sigmas_karras``).

    σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ for i = 0 … n−1 (σ_max
    alone for n = 1), then σ_n = 0: the levels of an n-step sampler that ends on the data.
    The ends are σ_max and σ_min exactly.

    Args:
        n: the number of steps, an int ≥ 1 (or an int tensor inside a graph).
        sigma_min: σ_{n−1}, the smallest positive level.
        sigma_max: σ_0, the largest level (≥ ``sigma_min``).
        rho: ρ > 0; 7 is Karras et al.'s choice, 1 spaces the levels linearly, large ρ
            approaches geometric spacing.

    Returns:
        A descending float64 array of n + 1 values, the last 0 (a tensor for a tensor ``n``).

    Raises:
        ValueError: when ``n`` < 1, ``rho`` ≤ 0, or not 0 < sigma_min ≤ sigma_max.
    """
    n = _steps.check(n, "n", 1)
    rho = checks.positive(rho, "rho")
    low, high = checks.positive(sigma_min, "sigma_min"), checks.positive(sigma_max, "sigma_max")
    if low > high:
        raise ValueError(
            f"Expected 0 < sigma_min <= sigma_max. Received: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )

    def build():
        count = tf.cast(n, tf.float64)
        ramp = tf.range(count, dtype=tf.float64) / tf.maximum(count - 1.0, 1.0)
        sigmas = (high ** (1.0 / rho) + ramp * (low ** (1.0 / rho) - high ** (1.0 / rho))) ** rho
        # the ends exactly (the power of a root is off by an ulp)
        sigmas = tf.where(tf.equal(ramp, 1.0), tf.constant(low, tf.float64), sigmas)
        sigmas = tf.where(tf.equal(ramp, 0.0), tf.constant(high, tf.float64), sigmas)
        return tf.concat([sigmas, tf.zeros([1], tf.float64)], 0)

    return _steps.plan(build, n)


# ------------------------------------------------------------------------- times of an SDE


def _check_eps(T, eps):
    """An SDE's last time, checked to lie in (0, T)."""
    eps = checks.positive(eps, "eps")
    if eps >= T:
        raise ValueError(f"Expected 0 < eps < {T}. Received: eps={eps!r}")
    return eps


def sde_uniform(T, steps, eps):
    """Start times t_i = T − i·h, i = 0 … steps−1, with h = (T − eps)/steps.

    Returns:
        ``(times, h)``: numpy float64 for an int ``steps``, float64 tensors for a tensor.
    """
    steps = _steps.check(steps, "steps", 1)
    eps = _check_eps(T, eps)

    def build():
        n = tf.cast(steps, tf.float64)
        h = (T - eps) / n
        return T - h * tf.range(n, dtype=tf.float64), h

    return _steps.plan(build, steps)


def sde_linspace(T, steps, eps):
    """score_sde's grid: times t_i = linspace(T, eps, steps) (both ends), and the levels of
    the ``steps``-level discretization that the reverse-diffusion predictor steps between.

    Step i's predictor goes from level k_i = ⌊t_i (steps − 1) / T⌋ (time k_i·T/(steps − 1))
    to the level below it (none below level 0): the VE levels are score_sde's /
    diffusers' ``discrete_sigmas`` of ``steps`` values. The model is evaluated at t_i.

    Returns:
        ``(times, level_times, level_dt)``: numpy float64 for an int ``steps``, float64
        tensors for a tensor.
    """
    steps = _steps.check(steps, "steps", 1)
    eps = _check_eps(T, eps)

    def build():
        gaps = tf.maximum(tf.cast(steps, tf.float64) - 1.0, 1.0)  # one step: t = T, level 0
        index = tf.range(tf.cast(steps, tf.float64), dtype=tf.float64)
        times = T - (T - eps) * index / gaps
        ones = tf.cast(steps, tf.float64) - 1.0
        # ⌊·⌋ of a value that is an integer up to round-off (i·eps/T past it) must not drop below it.
        level = tf.floor(times * ones / T + 1e-9)
        level_dt = T / gaps
        return times, level * level_dt, level_dt

    return _steps.plan(build, steps)
